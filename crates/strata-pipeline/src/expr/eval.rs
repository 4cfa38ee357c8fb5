//! Evaluation of templates against a [`Scope`].
//!
//! Secrecy is carried with every intermediate value: a value read from the scope is secret when
//! its path is, and any result computed from a secret (an operator, a function, an index, a
//! choice between branches) is secret too.

use std::borrow::Cow;

use regex::Regex;

use super::ast::{Call, CompareOp, Expr, ExprKind, LogicalOp, Span};
use super::error::EvalError;
use super::functions;
use super::scope::Scope;
use super::template::{Part, Template};
use super::value::{Rendered, Val, Value};

/// What a missing member reads as, borrowed like a present one.
pub(super) static NULL: Value = Value::Null;

impl Template {
    /// The template's text with every expression replaced by its value's rendering (see
    /// [`Value::render`]); secret when any expression's value is.
    pub fn render(&self, scope: &Scope) -> Result<Rendered, EvalError> {
        let evaluator = Evaluator {
            scope,
            source: &self.source,
        };
        let mut rendered = Rendered {
            text: String::new(),
            secret: false,
        };
        for part in &self.parts {
            match part {
                Part::Literal(text) => rendered.text.push_str(text),
                Part::Expr(expr, _) => {
                    let val = evaluator.eval(expr)?;
                    rendered.secret |= val.secret;
                    rendered.text.push_str(&val.value.render());
                }
            }
        }
        Ok(rendered)
    }

    /// The value of a single-expression template (`if:`, `cache:`), its type kept. Any other
    /// template evaluates to its rendering as a string, so `if: true` written without `${{ }}`
    /// is the string `"true"`, and still truthy.
    pub fn evaluate(&self, scope: &Scope) -> Result<Val, EvalError> {
        match self.single_expression() {
            Some(expr) => Evaluator {
                scope,
                source: &self.source,
            }
            .eval(expr),
            None => {
                let rendered = self.render(scope)?;
                Ok(Val {
                    value: Value::String(rendered.text),
                    secret: rendered.secret,
                })
            }
        }
    }
}

pub(super) struct Evaluator<'s> {
    pub scope: &'s Scope,
    pub source: &'s str,
}

impl<'s> Evaluator<'s> {
    pub fn eval(&self, expr: &Expr) -> Result<Val, EvalError> {
        match &expr.kind {
            ExprKind::Literal(value) => Ok(Val::public(value.clone())),
            ExprKind::Not(inner) => {
                let v = self.eval(inner)?;
                Ok(Val {
                    value: Value::Bool(!v.truthy()),
                    secret: v.secret,
                })
            }
            ExprKind::Logical { op, operands } => {
                // Like JavaScript, the result is the operand that decided, not a boolean:
                // `init.name || 'default'`.
                let mut secret = false;
                let mut last = Value::Null;
                for operand in operands {
                    let v = self.eval(operand)?;
                    secret |= v.secret;
                    let decided = match op {
                        LogicalOp::Or => v.truthy(),
                        LogicalOp::And => !v.truthy(),
                    };
                    last = v.value;
                    if decided {
                        break;
                    }
                }
                Ok(Val {
                    value: last,
                    secret,
                })
            }
            ExprKind::Compare { op, left, right } => {
                let l = self.eval(left)?;
                let r = self.eval(right)?;
                let result = self.compare(*op, &l, &r, expr.span, right.span)?;
                Ok(Val {
                    value: Value::Bool(result),
                    secret: l.secret || r.secret,
                })
            }
            ExprKind::Conditional {
                condition,
                then,
                otherwise,
            } => {
                let c = self.eval(condition)?;
                let mut v = if c.truthy() {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                };
                v.secret |= c.secret;
                Ok(v)
            }
            ExprKind::Access(access) => self.access(access, expr.span),
        }
    }

    fn compare(
        &self,
        op: CompareOp,
        l: &Val,
        r: &Val,
        span: Span,
        pattern_span: Span,
    ) -> Result<bool, EvalError> {
        use std::cmp::Ordering::{Greater, Less};
        Ok(match op {
            CompareOp::Eq => l.value.loosely_equals(&r.value),
            CompareOp::NotEq => !l.value.loosely_equals(&r.value),
            CompareOp::Match => self.matches(op, l, r, span, pattern_span)?,
            CompareOp::NotMatch => !self.matches(op, l, r, span, pattern_span)?,
            CompareOp::Gt | CompareOp::Lt | CompareOp::GtEq | CompareOp::LtEq => {
                match l.value.order(&r.value) {
                    Ok(None) => false,
                    Ok(Some(o)) => match op {
                        CompareOp::Gt => o == Greater,
                        CompareOp::Lt => o == Less,
                        CompareOp::GtEq => o != Less,
                        _ => o != Greater,
                    },
                    Err(why) => {
                        return Err(EvalError::new(
                            span.offset,
                            span.len,
                            format!("{why} in `{}`", self.quote(span)),
                        ));
                    }
                }
            }
        })
    }

    /// `=~`: whether the regular expression on the right matches anywhere in the text on the
    /// left, as JavaScript's `RegExp.test` does. The left side is taken as text the way
    /// function arguments are (null as empty).
    fn matches(
        &self,
        op: CompareOp,
        subject: &Val,
        pattern: &Val,
        span: Span,
        pattern_span: Span,
    ) -> Result<bool, EvalError> {
        let sym = op.symbol();
        let text: Cow<'_, str> = match &subject.value {
            Value::String(s) => Cow::Borrowed(s),
            Value::Null | Value::Bool(_) | Value::Number(_) => Cow::Owned(subject.value.render()),
            other => {
                return Err(EvalError::new(
                    span.offset,
                    span.len,
                    format!("`{sym}` needs text on its left, found {}", other.kind()),
                ));
            }
        };
        let Value::String(source) = &pattern.value else {
            return Err(EvalError::new(
                pattern_span.offset,
                pattern_span.len,
                format!(
                    "the right side of `{sym}` must be a string holding a regular expression, \
                     found {}",
                    pattern.value.kind()
                ),
            ));
        };
        let regex = Regex::new(source).map_err(|e| {
            let message = if pattern.secret {
                // The parser's explanation quotes the pattern.
                "invalid regular expression (from a secret, so not shown)".to_string()
            } else {
                format!("invalid regular expression: {}", regex_problem(&e))
            };
            EvalError::new(pattern_span.offset, pattern_span.len, message)
        })?;
        Ok(regex.is_match(&text))
    }

    pub fn call(&self, call: &Call, receiver: Option<Val>) -> Result<Val, EvalError> {
        let name = &call.name;
        let Some(function) = functions::lookup(&name.name) else {
            return Err(EvalError::new(
                name.span.offset,
                name.span.len,
                format!("unknown function `{}`", name.name),
            ));
        };
        let mut args = Vec::with_capacity(call.args.len() + 1);
        args.extend(receiver);
        for arg in &call.args {
            args.push(self.eval(arg)?);
        }
        function.call(&args, self.scope).map_err(|message| {
            EvalError::new(
                call.span.offset,
                call.span.len,
                format!("`{}`: {message}", function.signature()),
            )
        })
    }

    /// The template's own text at `span`, shortened: safe in a message, unlike a value.
    pub fn quote(&self, span: Span) -> String {
        let text = self
            .source
            .get(span.offset..span.end())
            .unwrap_or("")
            .trim();
        match text.char_indices().nth(40) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        }
    }
}

/// The last line of the regex crate's explanation (`error: unclosed group`): the lines above it
/// repeat the pattern.
fn regex_problem(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("syntax error")
            .to_string(),
        regex::Error::CompiledTooBig(_) => "the pattern is too large".into(),
        _ => "the pattern cannot be compiled".into(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::expr::template::parse_template;
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) const TOKEN: &str = "hunter2";

    fn json_object(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    pub(crate) fn scope() -> Scope {
        let mut s = Scope::new();
        s.set_now(UNIX_EPOCH + Duration::from_secs(1_772_807_445));
        s.insert(&["init", "branch"], "main".into());
        s.insert(&["init", "ref"], "refs/tags/v1.2".into());
        s.insert(&["init", "deploy"], "false".into());
        s.insert(&["init", "count"], "10".into());
        s.insert(&["init", "empty"], "".into());
        s.insert(&["init", "key"], "b".into());
        s.insert(&["tasks", "my-task", "values", "sha"], "abc123".into());
        s.insert(
            &["event", "list"],
            Value::Array(vec!["x".into(), "y".into(), Value::Null]),
        );
        s.insert(
            &["event", "map"],
            json_object(&[("a", 1.0.into()), ("b", 2.0.into()), ("1", "one".into())]),
        );
        s.insert(&["event", "number"], 2.5.into());
        s.insert(&["event", "flag"], true.into());
        s.insert(&["event", "nothing"], Value::Null);
        s.insert(&["run", "id"], "r1".into());
        s.insert(&["secrets"], json_object(&[]));
        s.insert_secret(&["secrets", "TOKEN"], TOKEN.into());
        s.insert_secret(&["secrets", "KEY"], "a".into());
        s.insert_secret(&["secrets", "PATTERN"], "(".into());
        s.insert_secret(&["vaults", "v", "secrets", "PASSWORD"], "pw".into());
        s.insert(&["vaults", "v", "name"], "v".into());
        s
    }

    pub(crate) fn eval(text: &str) -> Val {
        let t = parse_template(&format!("${{{{ {text} }}}}"))
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e:?}"));
        t.evaluate(&scope())
            .unwrap_or_else(|e| panic!("{text:?} should evaluate: {e:?}"))
    }

    pub(crate) fn value(text: &str) -> Value {
        eval(text).value
    }

    pub(crate) fn eval_error(text: &str) -> EvalError {
        let source = format!("${{{{ {text} }}}}");
        let t = parse_template(&source).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        match t.evaluate(&scope()) {
            Ok(v) => panic!("{text:?} should fail, got {v:?}"),
            Err(e) => {
                assert!(!e.message.contains(TOKEN), "{e:?} reveals a secret");
                assert!(source.get(e.offset..e.offset + e.len).is_some());
                e
            }
        }
    }

    fn render(text: &str) -> Rendered {
        parse_template(text).unwrap().render(&scope()).unwrap()
    }

    #[test]
    fn rendering_mixes_text_and_values() {
        let r = render("build ${{ init.branch }} at ${{ tasks.my-task.values.sha }}!");
        assert_eq!(r.text, "build main at abc123!");
        assert!(!r.secret);
        assert_eq!(
            render("[${{ event.nothing }}] ${{ event.number }} ${{ event.flag }}").text,
            "[] 2.5 true"
        );
        assert_eq!(render("${{ event.list }}").text, r#"["x","y",null]"#);
        assert_eq!(
            render(r"\${{ init.branch }} \\${{ init.branch }}").text,
            r"${{ init.branch }} \main"
        );
        assert_eq!(render("plain").text, "plain");
    }

    #[test]
    fn evaluate_keeps_the_type_of_a_single_expression() {
        assert_eq!(value("event.number"), Value::Number(2.5));
        assert_eq!(value("event.flag"), Value::Bool(true));
        let t = parse_template("  ${{ event.map }}\n").unwrap();
        assert!(matches!(
            t.evaluate(&scope()).unwrap().value,
            Value::Object(_)
        ));
        let t = parse_template("v${{ event.number }}").unwrap();
        assert_eq!(t.evaluate(&scope()).unwrap().value, Value::from("v2.5"));
        let t = parse_template("true").unwrap();
        assert!(t.evaluate(&scope()).unwrap().truthy());
    }

    #[test]
    fn an_init_parameter_false_is_false() {
        assert!(!eval("init.deploy").truthy());
        assert_eq!(value("!init.deploy"), Value::Bool(true));
        assert_eq!(value("init.deploy == false"), Value::Bool(true));
        assert_eq!(value("init.deploy == true"), Value::Bool(false));
    }

    #[test]
    fn equality_operators() {
        assert_eq!(value("init.branch == 'main'"), Value::Bool(true));
        assert_eq!(value("init.branch == \"Main\""), Value::Bool(false));
        assert_eq!(value("init.branch != 'main'"), Value::Bool(false));
        assert_eq!(value("init.count == 10"), Value::Bool(true));
        assert_eq!(value("event.nothing == null"), Value::Bool(true));
        assert_eq!(value("init.missing == null"), Value::Bool(true));
        assert_eq!(value("init.empty == null"), Value::Bool(false));
    }

    #[test]
    fn ordering_operators() {
        assert_eq!(value("init.count > 9"), Value::Bool(true));
        assert_eq!(value("init.count < 9"), Value::Bool(false));
        assert_eq!(value("init.count >= 10"), Value::Bool(true));
        assert_eq!(value("init.count <= 9.5"), Value::Bool(false));
        assert_eq!(value("'10' < '9'"), Value::Bool(true));
        assert_eq!(value("event.number >= 2.5"), Value::Bool(true));
        let e = eval_error("init.branch > 1");
        assert_eq!(
            e.message,
            "cannot order a string that is not a number and a number in `init.branch > 1`"
        );
        assert_eq!((e.offset, e.len), (4, 15));
        assert_eq!(
            eval_error("event.flag < 1").message,
            "cannot order a boolean and a number in `event.flag < 1`"
        );
    }

    #[test]
    fn regex_operators() {
        assert_eq!(value("init.ref =~ '^refs/tags/v.+$'"), Value::Bool(true));
        assert_eq!(value("init.branch =~ 'ai'"), Value::Bool(true));
        assert_eq!(value("init.branch =~ '^ai'"), Value::Bool(false));
        assert_eq!(value("init.branch !~ '^rel'"), Value::Bool(true));
        assert_eq!(value("init.branch !~ 'main'"), Value::Bool(false));
        assert_eq!(value("event.number =~ '^2\\.5$'"), Value::Bool(true));
        assert_eq!(value("init.missing =~ '^$'"), Value::Bool(true));
        let e = eval_error("init.branch =~ '('");
        assert_eq!(e.message, "invalid regular expression: unclosed group");
        assert_eq!((e.offset, e.len), (19, 3));
        assert_eq!(
            eval_error("init.branch =~ 1").message,
            "the right side of `=~` must be a string holding a regular expression, found a number"
        );
        assert_eq!(
            eval_error("event.list !~ 'x'").message,
            "`!~` needs text on its left, found an array"
        );
    }

    #[test]
    fn logical_operators_return_the_deciding_operand() {
        assert_eq!(value("init.missing || 'default'"), Value::from("default"));
        assert_eq!(value("init.branch || 'default'"), Value::from("main"));
        assert_eq!(value("init.branch && init.count"), Value::from("10"));
        assert_eq!(value("init.empty && init.count"), Value::from(""));
        assert_eq!(value("false || null || 0"), Value::Number(0.0));
        assert_eq!(value("true && 1 && 'x'"), Value::from("x"));
        assert_eq!(value("!init.branch"), Value::Bool(false));
        assert_eq!(value("!event.nothing"), Value::Bool(true));
    }

    #[test]
    fn logical_operators_short_circuit() {
        assert_eq!(value("true || undefined.x"), Value::Bool(true));
        assert_eq!(value("false && undefined.x"), Value::Bool(false));
        assert_eq!(value("true ? 'yes' : undefined.x"), Value::from("yes"));
        assert_eq!(
            value("event.nothing ? undefined.x : 'no'"),
            Value::from("no")
        );
        eval_error("false || undefined.x");
    }

    #[test]
    fn conditional() {
        assert_eq!(
            value("init.branch == 'main' ? 'prod' : 'dev'"),
            Value::from("prod")
        );
        assert_eq!(
            value("init.deploy ? 1 : init.empty ? 2 : 3"),
            Value::Number(3.0)
        );
    }

    #[test]
    fn precedence_at_evaluation() {
        // `!` binds tighter than `==`: `(!'main') == false`.
        assert_eq!(value("!init.branch == false"), Value::Bool(true));
        assert_eq!(value("true || false && false"), Value::Bool(true));
        assert_eq!(value("(true || false) && false"), Value::Bool(false));
        assert_eq!(value("false ? 1 : 2 == 2"), Value::Bool(true));
    }

    #[test]
    fn documented_function_examples() {
        assert_eq!(value(r#"ends-with("hello", "lo")"#), Value::Bool(true));
        assert_eq!(value(r#"starts-with("hello", "he")"#), Value::Bool(true));
        assert_eq!(value(r#"contains("hello", "el")"#), Value::Bool(true));
        assert_eq!(value(r#"lower("HELLO") == "hello""#), Value::Bool(true));
        assert_eq!(value(r#"upper("hello") == "HELLO""#), Value::Bool(true));
        assert_eq!(
            render("${{ date('%Y-%m-%dT%H:%M:%SZ') }}").text,
            "2026-03-06T14:30:45Z"
        );
        assert_eq!(
            value("starts-with(init.ref, 'refs/tags/v')"),
            Value::Bool(true)
        );
    }

    #[test]
    fn function_errors_name_the_signature() {
        let e = eval_error("lower(event.list)");
        assert_eq!(
            e.message,
            "`lower(str)`: `str` must be a string, found an array"
        );
        assert_eq!((e.offset, e.len), (4, 17));
        assert_eq!(
            eval_error("init.branch.lower(1)").message,
            "`lower(str)`: takes 1 argument, found 2"
        );
        let e = eval_error("frobnicate(1)");
        assert_eq!(e.message, "unknown function `frobnicate`");
        assert_eq!((e.offset, e.len), (4, 10));
        assert_eq!(
            eval_error("date('%Q')").message,
            "`date(format)`: unknown date format `%Q`"
        );
    }

    #[test]
    fn secrets_are_secret_and_so_is_what_derives_from_them() {
        for text in [
            "secrets.TOKEN",
            "secrets['TOKEN']",
            "secrets",
            "vaults",
            "vaults.v",
            "vaults.v.secrets.PASSWORD",
            "(secrets).TOKEN",
            "secrets.TOKEN == 'x'",
            "secrets.TOKEN =~ '^h'",
            "init.branch =~ secrets.KEY",
            "secrets.TOKEN > 'a'",
            "!secrets.TOKEN",
            "secrets.TOKEN && 'x'",
            "init.missing || secrets.TOKEN",
            "secrets.TOKEN ? 'a' : 'b'",
            "true ? secrets.TOKEN : 'b'",
            "starts-with(secrets.TOKEN, 'h')",
            "secrets.TOKEN.upper()",
            "lower(secrets.TOKEN).upper()",
            "event.map[secrets.KEY]",
            "event[secrets.KEY == 'a' ? 'map' : 'list'].a",
            "date(secrets.TOKEN)",
        ] {
            assert!(eval(text).secret, "{text} should be secret");
        }
    }

    #[test]
    fn what_never_touched_a_secret_is_public() {
        for text in [
            "init.branch",
            "vaults.v.name",
            "init.branch || secrets.TOKEN",
            "false && secrets.TOKEN",
            "false ? secrets.TOKEN : 'b'",
            "event.map[init.key]",
            "secrets.MISSING_BUT_NOT_MARKED == null && 'x'",
        ] {
            assert!(!eval(text).secret, "{text} should be public");
        }
    }

    #[test]
    fn a_secret_makes_the_whole_rendering_secret() {
        let r = render("curl -H 'Authorization: ${{ secrets.TOKEN }}' ${{ run.id }}");
        assert!(r.secret);
        assert_eq!(r.text, "curl -H 'Authorization: hunter2' r1");
        assert!(!format!("{r:?}").contains(TOKEN));
    }

    #[test]
    fn errors_never_show_secret_values() {
        let e = eval_error("init.branch =~ secrets.PATTERN");
        assert_eq!(
            e.message,
            "invalid regular expression (from a secret, so not shown)"
        );
        eval_error("secrets.TOKEN > 1");
        eval_error("secrets.TOKEN.x");
        eval_error("secrets.TOKEN[0]");
        eval_error("lower(secrets)");
    }

    #[test]
    fn the_deepest_expressions_the_parser_allows_evaluate() {
        let parens = format!("{}init.branch{}", "(".repeat(60), ")".repeat(60));
        assert_eq!(value(&parens), Value::from("main"));
        let calls = format!("{}init.branch{}", "upper(".repeat(60), ")".repeat(60));
        assert_eq!(value(&calls), Value::from("MAIN"));
        let ternaries = format!("{} 'deep'", "false ? 1 :".repeat(60));
        assert_eq!(value(&ternaries), Value::from("deep"));
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Whatever parses evaluates to a value or an error, never a panic.
            #[test]
            fn on_near_expressions(pieces in proptest::collection::vec(prop_oneof![
                Just("init"), Just("event"), Just("secrets"), Just("tasks"), Just(".branch"),
                Just(".list"), Just(".map"), Just(".nothing"), Just(".TOKEN"), Just("?."),
                Just("?["), Just("["), Just("]"), Just("("), Just(")"), Just(","), Just(" ? "),
                Just(" : "), Just(" && "), Just(" || "), Just(" == "), Just(" != "),
                Just(" =~ "), Just(" !~ "), Just(" > "), Just(" <= "), Just("!"), Just("'a'"),
                Just("'('"), Just("0"), Just("-1.5"), Just("1e400"), Just("true"), Just("null"),
                Just("lower("), Just(".upper("), Just("date("), Just("'%s'"), Just("contains("),
            ], 0..24)) {
                let text = format!("${{{{ {} }}}}", pieces.concat());
                if let Ok(t) = parse_template(&text) {
                    match t.render(&scope()) {
                        Ok(r) => prop_assert!(!r.text.contains(TOKEN) || r.secret),
                        Err(e) => prop_assert!(!e.message.contains(TOKEN)),
                    }
                }
            }
        }
    }
}
