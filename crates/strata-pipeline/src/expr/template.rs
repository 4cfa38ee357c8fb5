//! A template: text with `${{ … }}` expressions in it, split into literal parts and parsed
//! expressions as RWX's `parseTemplate`/`normalizeAst` do.
//!
//! Escapes: backslashes right before `${{` come in pairs, each pair standing for one literal
//! backslash. An odd one left over escapes the expression: `\${{ x }}` is the literal text
//! `${{ x }}` (up to the first `}}`), while `\\${{ x }}` is a backslash followed by the value
//! of `x`. Backslashes anywhere else are ordinary text.

use super::ast::{Base, Expr, ExprKind, LinkKind, Span};
use super::error::ExprError;
use super::parser::parse_expression;

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub(crate) source: String,
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    /// Text with escapes already resolved; never empty, never next to another literal.
    Literal(String),
    /// An expression, with the span of the whole `${{ … }}`.
    Expr(Expr, Span),
}

/// A name read by an expression: its leading static path (`tasks.build.values.sha`), up to the
/// first `[index]` or function call, and where that path is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub path: Vec<String>,
    pub offset: usize,
    pub len: usize,
}

/// A function call: its name and where the name is written, and how many arguments it gets, the
/// receiver of a method-style call (`x.lower()`) counting as the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionUse {
    pub name: String,
    pub offset: usize,
    pub len: usize,
    pub args: usize,
    pub method: bool,
}

/// Parses `text`, stopping at the first error, as RWX does.
pub fn parse_template(text: &str) -> Result<Template, ExprError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find("${{") {
        let opening = pos + found;
        let backslashes = text[pos..opening]
            .bytes()
            .rev()
            .take_while(|b| *b == b'\\')
            .count();
        literal.push_str(&text[pos..opening - backslashes]);
        literal.extend(std::iter::repeat_n('\\', backslashes / 2));
        if backslashes % 2 == 1 {
            pos = escaped(text, opening, &mut literal)?;
            continue;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        let (expr, end) = parse_expression(text, opening)?;
        parts.push(Part::Expr(expr, Span::new(opening, end)));
        pos = end;
    }
    literal.push_str(&text[pos..]);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(Template {
        source: text.to_string(),
        parts,
    })
}

/// Appends an escaped `${{ … }}` (whose `${{` is at `opening`) to `literal` as text; returns the
/// offset past its `}}`. Like RWX, the text inside must be non-empty and end at the first `}}`.
fn escaped(text: &str, opening: usize, literal: &mut String) -> Result<usize, ExprError> {
    let body = opening + 3;
    let escape = opening - 1;
    match text[body..].find("}}") {
        None => Err(ExprError::new(
            escape,
            4,
            "unterminated escaped expression: missing `}}`",
        )),
        Some(0) => Err(ExprError::new(
            escape,
            6,
            "empty escaped expression: RWX requires text between `\\${{` and `}}`",
        )),
        Some(n) => {
            literal.push_str("${{");
            literal.push_str(&text[body..body + n]);
            literal.push_str("}}");
            Ok(body + n + 2)
        }
    }
}

impl Template {
    /// The text this template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no expressions.
    pub fn is_literal(&self) -> bool {
        self.as_literal().is_some()
    }

    /// The text of a template without expressions, escapes resolved.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether the whole text is one `${{ … }}`, give or take surrounding whitespace: the form
    /// RWX requires where a value must be a boolean (`if:`), and the one whose evaluation keeps
    /// the value's type.
    pub fn is_single_expression(&self) -> bool {
        self.single_expression().is_some()
    }

    pub(crate) fn single_expression(&self) -> Option<&Expr> {
        let mut found = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) if text.trim().is_empty() => {}
                Part::Literal(_) => return None,
                Part::Expr(_, _) if found.is_some() => return None,
                Part::Expr(expr, _) => found = Some(expr),
            }
        }
        found
    }

    fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e, _) => Some(e),
            Part::Literal(_) => None,
        })
    }

    /// Every access rooted at a name, in source order, so a checker can validate namespaces,
    /// task keys and value names. `(a.b).c` yields `a.b` only: what the group produces is not a
    /// name.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for expr in self.expressions() {
            expr.for_each(&mut |e| {
                let ExprKind::Access(access) = &e.kind else {
                    return;
                };
                let Base::Name(head) = &access.base else {
                    return;
                };
                let mut path = vec![head.name.clone()];
                let mut end = head.span.end();
                for link in &access.chain {
                    let LinkKind::Member(name) = &link.kind else {
                        break;
                    };
                    path.push(name.name.clone());
                    end = name.span.end();
                }
                out.push(Reference {
                    path,
                    offset: head.span.offset,
                    len: end - head.span.offset,
                });
            });
        }
        out.sort_by_key(|r| r.offset);
        out
    }

    /// Every function call, in source order.
    pub fn functions(&self) -> Vec<FunctionUse> {
        let mut out = Vec::new();
        for expr in self.expressions() {
            expr.for_each(&mut |e| {
                let ExprKind::Access(access) = &e.kind else {
                    return;
                };
                if let Base::Call(call) = &access.base {
                    out.push(FunctionUse {
                        name: call.name.name.clone(),
                        offset: call.name.span.offset,
                        len: call.name.span.len,
                        args: call.args.len(),
                        method: false,
                    });
                }
                for link in &access.chain {
                    if let LinkKind::Method(call) = &link.kind {
                        out.push(FunctionUse {
                            name: call.name.name.clone(),
                            offset: call.name.span.offset,
                            len: call.name.span.len,
                            args: call.args.len() + 1,
                            method: true,
                        });
                    }
                }
            });
        }
        out.sort_by_key(|f| f.offset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::ast::{CompareOp, LogicalOp};
    use crate::expr::value::Value;

    fn parse(text: &str) -> Template {
        match parse_template(text) {
            Ok(t) => t,
            Err(e) => panic!("{text:?} should parse, got {e:?}"),
        }
    }

    fn error(text: &str) -> ExprError {
        match parse_template(text) {
            Ok(t) => panic!("{text:?} should not parse, got {t:?}"),
            Err(e) => e,
        }
    }

    /// The one expression of a single-expression template.
    fn expr(text: &str) -> Expr {
        parse(&format!("${{{{ {text} }}}}"))
            .single_expression()
            .cloned()
            .expect("one expression")
    }

    /// The expression as a fully parenthesised string, to check precedence and grouping.
    fn shape(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Literal(v) => match v {
                Value::String(s) => format!("'{s}'"),
                other => other.to_json(),
            },
            ExprKind::Not(inner) => format!("!{}", shape(inner)),
            ExprKind::Logical { op, operands } => {
                let sep = if *op == LogicalOp::And {
                    " && "
                } else {
                    " || "
                };
                let inner: Vec<_> = operands.iter().map(shape).collect();
                format!("({})", inner.join(sep))
            }
            ExprKind::Compare { op, left, right } => {
                format!("({} {} {})", shape(left), op.symbol(), shape(right))
            }
            ExprKind::Conditional {
                condition,
                then,
                otherwise,
            } => format!(
                "({} ? {} : {})",
                shape(condition),
                shape(then),
                shape(otherwise)
            ),
            ExprKind::Access(access) => {
                let mut s = match &access.base {
                    Base::Name(n) => n.name.clone(),
                    Base::Call(c) => {
                        let args: Vec<_> = c.args.iter().map(shape).collect();
                        format!("{}({})", c.name.name, args.join(", "))
                    }
                    Base::Group(g) => format!("<{}>", shape(g)),
                };
                for link in &access.chain {
                    let q = if link.optional { "?" } else { "" };
                    match &link.kind {
                        LinkKind::Member(n) => s.push_str(&format!("{q}.{}", n.name)),
                        LinkKind::Index(i) => s.push_str(&format!("{q}[{}]", shape(i))),
                        LinkKind::Method(c) => {
                            let args: Vec<_> = c.args.iter().map(shape).collect();
                            s.push_str(&format!("{q}.{}({})", c.name.name, args.join(", ")));
                        }
                    }
                }
                s
            }
        }
    }

    fn shape_of(text: &str) -> String {
        shape(&expr(text))
    }

    #[test]
    fn literal_text_stays_as_it_is() {
        let t = parse("echo hello } }} $ {{ \\n");
        assert!(t.is_literal());
        assert_eq!(t.as_literal(), Some("echo hello } }} $ {{ \\n"));
        assert!(!t.is_single_expression());
        assert_eq!(parse("").as_literal(), Some(""));
        assert!(!parse("").is_single_expression());
    }

    #[test]
    fn an_escaped_expression_is_literal_text() {
        let t = parse(r"run \${{ init.x }} now");
        assert_eq!(t.as_literal(), Some("run ${{ init.x }} now"));
        assert!(t.references().is_empty());
        // Escaped text ends at the first `}}`, even inside what looks like a string.
        assert_eq!(parse(r"\${{ '}}' }}").as_literal(), Some("${{ '}}' }}"));
    }

    #[test]
    fn backslash_pairs_are_halved_and_an_odd_one_escapes() {
        let t = parse(r"\\${{ x }}");
        assert!(!t.is_literal());
        assert!(!t.is_single_expression());
        assert!(matches!(&t.parts[0], Part::Literal(s) if s == "\\"));
        assert!(matches!(&t.parts[1], Part::Expr(..)));
        assert_eq!(parse(r"\\\${{ x }}").as_literal(), Some(r"\${{ x }}"));
        assert_eq!(parse(r"\\\\\${{ x }}").as_literal(), Some(r"\\${{ x }}"));
        let t = parse(r"a\\\\${{ x }}b");
        assert!(matches!(&t.parts[0], Part::Literal(s) if s == r"a\\"));
        // Backslashes not before `${{` are text.
        assert_eq!(parse(r"a\\b\$c").as_literal(), Some(r"a\\b\$c"));
    }

    #[test]
    fn escaped_expressions_need_text_and_an_end() {
        let e = error(r"a \${{ x");
        assert_eq!((e.offset, e.len), (2, 4));
        assert_eq!(e.message, "unterminated escaped expression: missing `}}`");
        let e = error(r"\${{}}");
        assert_eq!((e.offset, e.len), (0, 6));
        assert!(e.message.starts_with("empty escaped expression"));
    }

    #[test]
    fn single_expression_allows_surrounding_whitespace_only() {
        assert!(parse("${{ true }}").is_single_expression());
        assert!(parse("  ${{ a == 'b' }}\n").is_single_expression());
        assert!(!parse("x${{ a }}").is_single_expression());
        assert!(!parse("${{ a }}${{ b }}").is_single_expression());
        assert!(!parse("${{ a }} ${{ b }}").is_single_expression());
    }

    #[test]
    fn literal_parts_around_expressions() {
        let t = parse("a-${{ x }}-b${{ y }}");
        assert_eq!(t.parts.len(), 4);
        assert!(matches!(&t.parts[0], Part::Literal(s) if s == "a-"));
        assert!(matches!(&t.parts[2], Part::Literal(s) if s == "-b"));
        assert!(matches!(&t.parts[3], Part::Expr(_, span) if *span == Span::new(12, 20)));
        assert_eq!(t.source(), "a-${{ x }}-b${{ y }}");
        // A `$` before `${{` is text.
        let t = parse("$${{ x }}");
        assert!(matches!(&t.parts[0], Part::Literal(s) if s == "$"));
    }

    #[test]
    fn precedence_from_ternary_down_to_unary() {
        assert_eq!(shape_of("a || b && c"), "(a || (b && c))");
        assert_eq!(shape_of("a && b || c"), "((a && b) || c)");
        assert_eq!(shape_of("a == b && c != d"), "((a == b) && (c != d))");
        assert_eq!(shape_of("!a == b"), "(!a == b)");
        assert_eq!(shape_of("!(a == b)"), "!<(a == b)>");
        assert_eq!(shape_of("a || b ? c : d"), "((a || b) ? c : d)");
        assert_eq!(shape_of("a ? b : c ? d : e"), "(a ? b : (c ? d : e))");
        assert_eq!(shape_of("a ? b ? c : d : e"), "(a ? (b ? c : d) : e)");
        assert_eq!(shape_of("a || b || c"), "(a || b || c)");
        assert_eq!(shape_of("(a || b) && c"), "(<(a || b)> && c)");
    }

    #[test]
    fn every_comparison_operator() {
        for op in [
            CompareOp::Eq,
            CompareOp::NotEq,
            CompareOp::Match,
            CompareOp::NotMatch,
            CompareOp::Gt,
            CompareOp::Lt,
            CompareOp::GtEq,
            CompareOp::LtEq,
        ] {
            let sym = op.symbol();
            assert_eq!(shape_of(&format!("a {sym} 1")), format!("(a {sym} 1)"));
        }
    }

    #[test]
    fn literals() {
        assert_eq!(
            shape_of(r#"f('single', "double", 1.5e2, -3, true, false, null)"#),
            "f('single', 'double', 150, -3, true, false, null)"
        );
    }

    #[test]
    fn accesses_calls_and_methods() {
        assert_eq!(shape_of("tasks.my-task.values.x"), "tasks.my-task.values.x");
        assert_eq!(shape_of("a?.b?['c'][0].true"), "a?.b?['c'][0].true");
        assert_eq!(
            shape_of("init.ref.starts-with('v').x"),
            "init.ref.starts-with('v').x"
        );
        assert_eq!(shape_of("a?.lower()"), "a?.lower()");
        assert_eq!(shape_of("date('%Y')"), "date('%Y')");
        assert_eq!(shape_of("(a).b[c.d]"), "<a>.b[c.d]");
        assert_eq!(shape_of("f ( a , b )"), "f(a, b)");
    }

    #[test]
    fn references_are_leading_static_paths() {
        let t = parse(
            "${{ tasks.build.values.sha }} ${{ event.x[init.i].y }} \
             ${{ init.ref.starts-with(secrets.A) }} ${{ (run.a).b }} ${{ date(params.f).z }}",
        );
        let refs = t.references();
        let paths: Vec<Vec<&str>> = refs
            .iter()
            .map(|r| r.path.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            paths,
            vec![
                vec!["tasks", "build", "values", "sha"],
                vec!["event", "x"],
                vec!["init", "i"],
                vec!["init", "ref"],
                vec!["secrets", "A"],
                vec!["run", "a"],
                vec!["params", "f"],
            ]
        );
        assert_eq!((refs[0].offset, refs[0].len), (4, 22));
        assert_eq!(&t.source()[refs[1].offset..][..refs[1].len], "event.x");
        assert_eq!(&t.source()[refs[3].offset..][..refs[3].len], "init.ref");
    }

    #[test]
    fn references_span_optional_links_and_whitespace() {
        let t = parse("${{ a ?. b . c }}");
        let r = &t.references()[0];
        assert_eq!(r.path, vec!["a", "b", "c"]);
        assert_eq!(&t.source()[r.offset..][..r.len], "a ?. b . c");
    }

    #[test]
    fn functions_count_the_receiver() {
        let t = parse("${{ a.lower() == upper(b) && c.d.starts-with(e, f) }}");
        let uses = t.functions();
        let summary: Vec<_> = uses
            .iter()
            .map(|f| (f.name.as_str(), f.args, f.method))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("lower", 1, true),
                ("upper", 1, false),
                ("starts-with", 3, true)
            ]
        );
        assert_eq!(&t.source()[uses[1].offset..][..uses[1].len], "upper");
    }

    #[test]
    fn nested_calls_are_found_in_order() {
        let t = parse("${{ f(g(x).h(), i) }}");
        let names: Vec<_> = t.functions().into_iter().map(|f| f.name).collect();
        assert_eq!(names, vec!["f", "g", "h"]);
    }

    fn assert_error(text: &str, offset: usize, len: usize, message: &str) {
        let e = error(text);
        assert_eq!(
            (e.offset, e.len, e.message.as_str()),
            (offset, len, message),
            "for {text:?}"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        assert_error(
            "a ${{ init.x",
            2,
            3,
            "unterminated expression: missing `}}`",
        );
        assert_error("${{ a.", 0, 3, "unterminated expression: missing `}}`");
        assert_error("${{ }}", 0, 6, "empty expression");
        assert_error(
            "${{ f(a)) }}",
            8,
            1,
            "unexpected `)`; expected an operator or `}}`",
        );
        assert_error("${{ (a }}", 7, 2, "unexpected `}}`; expected `)`");
        assert_error(
            "${{ a b }}",
            6,
            1,
            "unexpected `b`; expected an operator or `}}`",
        );
        assert_error(
            "${{ == a }}",
            4,
            2,
            "unexpected `==`; expected an expression",
        );
        assert_error(
            "${{ a == b == c }}",
            11,
            2,
            "comparisons cannot be chained: add parentheses around `==` or `==`",
        );
        assert_error("${{ !!a }}", 5, 1, "`!` cannot be repeated; write `!(!x)`");
        assert_error(
            "${{ 'a'.length }}",
            7,
            1,
            "a literal cannot be followed by `.` or `[`; wrap it in parentheses",
        );
        assert_error(
            "${{ a. }}",
            7,
            2,
            "unexpected `}}`; expected a name after the dot",
        );
        assert_error("${{ a[1 }}", 8, 2, "unexpected `}}`; expected `]`");
        assert_error(
            "${{ f(a,) }}",
            8,
            1,
            "unexpected `)`; expected an expression",
        );
        assert_error(
            "${{ f(a b) }}",
            8,
            1,
            "unexpected `b`; expected `,` or `)` to close the call of `f`",
        );
        assert_error(
            "${{ a ? b }}",
            10,
            2,
            "unexpected `}}`; expected `:` of the conditional `? :`",
        );
        assert_error(
            "x ${{ a = b }}",
            8,
            1,
            "unexpected character `=`; use `==` to compare",
        );
        assert_error(
            "${{ 'abc }}",
            4,
            1,
            "unterminated string: missing closing `'`",
        );
        assert_error(
            "${{ a }} ${{ 01 }}",
            14,
            1,
            "unexpected `1`; expected an operator or `}}`",
        );
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let e = error("${{ a 'abcdefghijklmnopqrstuvwxyz0123456789' }}");
        assert_eq!(
            e.message,
            "unexpected `'abcdefghijklmnopqrstuvw…`; expected an operator or `}}`"
        );
        assert_eq!(e.len, 38);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("${{{{ {}a{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert!(
            error(&deep)
                .message
                .starts_with("expression nested too deeply")
        );
        let chain = format!("${{{{ {} }}}}", vec!["a ? b :"; 500].join(" ") + " c");
        assert!(
            error(&chain)
                .message
                .starts_with("expression nested too deeply")
        );
        let fine = format!("${{{{ {}a{} }}}}", "(".repeat(30), ")".repeat(30));
        assert!(parse_template(&fine).is_ok());
        // Long flat chains are not nesting.
        let flat = format!("${{{{ {} }}}}", vec!["a"; 5000].join(" || "));
        assert!(parse_template(&flat).is_ok());
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn on_arbitrary_text(text in any::<String>()) {
                if let Err(e) = parse_template(&text) {
                    prop_assert!(text.get(e.offset..e.offset + e.len).is_some());
                }
            }

            /// Text made mostly of the language's own pieces reaches far deeper into the parser
            /// than random characters do.
            #[test]
            fn on_near_expressions(pieces in proptest::collection::vec(prop_oneof![
                Just("${{"), Just("}}"), Just("\\"), Just(" "), Just("a"), Just("b-c"),
                Just("."), Just("?."), Just("?["), Just("["), Just("]"), Just("("),
                Just(")"), Just(","), Just("?"), Just(":"), Just("&&"), Just("||"),
                Just("=="), Just("!="), Just("=~"), Just("!~"), Just(">"), Just("<="),
                Just("!"), Just("'s'"), Just("\""), Just("'"), Just("1"), Just("-2.5e3"),
                Just("true"), Just("null"), Just("f("), Just("é"),
            ], 0..40)) {
                let text: String = pieces.concat();
                match parse_template(&text) {
                    Ok(t) => {
                        for r in t.references() {
                            prop_assert!(text.get(r.offset..r.offset + r.len).is_some());
                        }
                        for e in crate::expr::check_functions(&t) {
                            prop_assert!(text.get(e.offset..e.offset + e.len).is_some());
                        }
                    }
                    // The span lies within the text, on character boundaries.
                    Err(e) => prop_assert!(text.get(e.offset..e.offset + e.len).is_some()),
                }
            }
        }
    }
}
