//! A recursive-descent parser for one expression, following RWX's grammar:
//!
//! ```text
//! expr    := or ('?' expr ':' expr)?                 lowest precedence
//! or      := and ('||' and)*
//! and     := compare ('&&' compare)*
//! compare := unary (('==' | '!=' | '=~' | '!~' | '>' | '<' | '>=' | '<=') unary)?
//! unary   := '!'? (postfix | string | number | true | false | null)
//! postfix := ('(' expr ')' | name | call) link*
//! link    := ('.' | '?.') (name | call) | ('[' | '?[') expr ']'
//! call    := name '(' (expr (',' expr)*)? ')'
//! ```
//!
//! Comparisons do not chain (`a == b == c` is an error), `!` is not repeated, and a literal
//! takes no links, all as in RWX.

use super::ast::{
    Access, Base, Call, CompareOp, Expr, ExprKind, Ident, Link, LinkKind, LogicalOp, Span,
};
use super::error::ExprError;
use super::lexer::{Lexer, Tok, Token};
use super::value::Value;

/// Deeper nesting is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 64;

/// Parses the expression whose `${{` is at `opening`; returns it and the offset just past its
/// `}}`.
pub(crate) fn parse_expression(text: &str, opening: usize) -> Result<(Expr, usize), ExprError> {
    let mut lexer = Lexer::new(text, opening + 3);
    let peeked = lexer.next_token()?;
    let mut parser = Parser {
        text,
        lexer,
        peeked,
        last_end: opening + 3,
        opening,
        depth: 0,
    };
    if parser.peeked.tok == Tok::End {
        return Err(ExprError::new(
            opening,
            parser.peeked.end() - opening,
            "empty expression",
        ));
    }
    let expr = parser.expr()?;
    match parser.peeked.tok {
        Tok::End => Ok((expr, parser.peeked.end())),
        _ => Err(parser.unexpected("an operator or `}}`")),
    }
}

struct Parser<'a> {
    text: &'a str,
    lexer: Lexer<'a>,
    peeked: Token,
    /// Where the last consumed token ended (the lexer has since skipped any whitespace).
    last_end: usize,
    opening: usize,
    depth: usize,
}

impl Parser<'_> {
    fn bump(&mut self) -> Result<Token, ExprError> {
        let next = self.lexer.next_token()?;
        let token = std::mem::replace(&mut self.peeked, next);
        self.last_end = token.end();
        Ok(token)
    }

    fn at(&self, tok: &Tok) -> bool {
        std::mem::discriminant(&self.peeked.tok) == std::mem::discriminant(tok)
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Token, ExprError> {
        if self.at(&tok) {
            self.bump()
        } else {
            Err(self.unexpected(what))
        }
    }

    fn unexpected(&self, expected: &str) -> ExprError {
        let t = &self.peeked;
        if t.tok == Tok::Eof {
            return ExprError::new(self.opening, 3, "unterminated expression: missing `}}`");
        }
        let found = &self.text[t.offset..t.end()];
        let found = match found.char_indices().nth(24) {
            Some((cut, _)) => format!("{}…", &found[..cut]),
            None => found.to_string(),
        };
        ExprError::new(
            t.offset,
            t.len,
            format!("unexpected `{found}`; expected {expected}"),
        )
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                self.peeked.offset,
                self.peeked.len,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        let condition = self.or()?;
        let result = if self.at(&Tok::Question) {
            self.bump()?;
            let then = self.expr()?;
            self.expect(Tok::Colon, "`:` of the conditional `? :`")?;
            // The else branch is itself a conditional (`a ? b : c ? d : e`), never less.
            let otherwise = self.expr()?;
            Expr {
                span: Span::new(condition.span.offset, otherwise.span.end()),
                kind: ExprKind::Conditional {
                    condition: Box::new(condition),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                },
            }
        } else {
            condition
        };
        self.depth -= 1;
        Ok(result)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.logical(LogicalOp::Or, Tok::Or, Self::and)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        self.logical(LogicalOp::And, Tok::And, Self::compare)
    }

    fn logical(
        &mut self,
        op: LogicalOp,
        token: Tok,
        operand: impl Fn(&mut Self) -> Result<Expr, ExprError>,
    ) -> Result<Expr, ExprError> {
        let mut operands = vec![operand(self)?];
        while self.at(&token) {
            self.bump()?;
            operands.push(operand(self)?);
        }
        if operands.len() == 1 {
            return Ok(operands.remove(0));
        }
        let span = Span::new(
            operands[0].span.offset,
            operands[operands.len() - 1].span.end(),
        );
        Ok(Expr {
            kind: ExprKind::Logical { op, operands },
            span,
        })
    }

    fn compare_op(&self) -> Option<CompareOp> {
        Some(match self.peeked.tok {
            Tok::Eq => CompareOp::Eq,
            Tok::NotEq => CompareOp::NotEq,
            Tok::Match => CompareOp::Match,
            Tok::NotMatch => CompareOp::NotMatch,
            Tok::Gt => CompareOp::Gt,
            Tok::Lt => CompareOp::Lt,
            Tok::GtEq => CompareOp::GtEq,
            Tok::LtEq => CompareOp::LtEq,
            _ => return None,
        })
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.unary()?;
        let Some(op) = self.compare_op() else {
            return Ok(left);
        };
        self.bump()?;
        let right = self.unary()?;
        if let Some(second) = self.compare_op() {
            return Err(ExprError::new(
                self.peeked.offset,
                self.peeked.len,
                format!(
                    "comparisons cannot be chained: add parentheses around `{}` or `{}`",
                    op.symbol(),
                    second.symbol()
                ),
            ));
        }
        Ok(Expr {
            span: Span::new(left.span.offset, right.span.end()),
            kind: ExprKind::Compare {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
        })
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if !self.at(&Tok::Not) {
            return self.operand();
        }
        let not = self.bump()?;
        if self.at(&Tok::Not) {
            return Err(ExprError::new(
                self.peeked.offset,
                self.peeked.len,
                "`!` cannot be repeated; write `!(!x)`",
            ));
        }
        let operand = self.operand()?;
        Ok(Expr {
            span: Span::new(not.offset, operand.span.end()),
            kind: ExprKind::Not(Box::new(operand)),
        })
    }

    fn operand(&mut self) -> Result<Expr, ExprError> {
        let value = match &self.peeked.tok {
            Tok::Name(_) | Tok::LParen => return self.postfix(),
            Tok::Str(s) => Value::String(s.clone()),
            Tok::Number(n) => Value::Number(*n),
            Tok::True => Value::Bool(true),
            Tok::False => Value::Bool(false),
            Tok::Null => Value::Null,
            _ => return Err(self.unexpected("an expression")),
        };
        let token = self.bump()?;
        if matches!(
            self.peeked.tok,
            Tok::Dot | Tok::OptionalDot | Tok::LBracket | Tok::OptionalLBracket
        ) {
            return Err(ExprError::new(
                self.peeked.offset,
                self.peeked.len,
                "a literal cannot be followed by `.` or `[`; wrap it in parentheses",
            ));
        }
        Ok(Expr {
            kind: ExprKind::Literal(value),
            span: Span::new(token.offset, token.end()),
        })
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let start = self.peeked.offset;
        let base = if self.at(&Tok::LParen) {
            self.bump()?;
            let inner = self.expr()?;
            self.expect(Tok::RParen, "`)`")?;
            Base::Group(Box::new(inner))
        } else {
            let name = self.ident()?;
            if self.at(&Tok::LParen) {
                Base::Call(self.call(name)?)
            } else {
                Base::Name(name)
            }
        };
        let mut end = self.last_end;
        let mut chain = Vec::new();
        loop {
            let link_start = self.peeked.offset;
            let (optional, kind) = match self.peeked.tok {
                Tok::Dot | Tok::OptionalDot => {
                    let optional = self.bump()?.tok == Tok::OptionalDot;
                    let name = match self.peeked.tok {
                        Tok::Name(_) | Tok::True | Tok::False | Tok::Null => self.ident()?,
                        _ => return Err(self.unexpected("a name after the dot")),
                    };
                    if self.at(&Tok::LParen) {
                        (optional, LinkKind::Method(self.call(name)?))
                    } else {
                        (optional, LinkKind::Member(name))
                    }
                }
                Tok::LBracket | Tok::OptionalLBracket => {
                    let optional = self.bump()?.tok == Tok::OptionalLBracket;
                    let index = self.expr()?;
                    self.expect(Tok::RBracket, "`]`")?;
                    (optional, LinkKind::Index(Box::new(index)))
                }
                _ => break,
            };
            end = self.last_end;
            chain.push(Link {
                optional,
                kind,
                span: Span::new(link_start, end),
            });
        }
        Ok(Expr {
            kind: ExprKind::Access(Access { base, chain }),
            span: Span::new(start, end),
        })
    }

    /// A name, or after a dot one of the words `true`, `false`, `null` used as a name.
    fn ident(&mut self) -> Result<Ident, ExprError> {
        let name = match &self.peeked.tok {
            Tok::Name(n) => n.clone(),
            Tok::True => "true".to_string(),
            Tok::False => "false".to_string(),
            Tok::Null => "null".to_string(),
            _ => return Err(self.unexpected("a name")),
        };
        let token = self.bump()?;
        Ok(Ident {
            name,
            span: Span::new(token.offset, token.end()),
        })
    }

    fn call(&mut self, name: Ident) -> Result<Call, ExprError> {
        self.bump()?;
        let mut args = Vec::new();
        if !self.at(&Tok::RParen) {
            loop {
                args.push(self.expr()?);
                if !self.at(&Tok::Comma) {
                    break;
                }
                self.bump()?;
            }
        }
        let close = self.expect(
            Tok::RParen,
            &format!("`,` or `)` to close the call of `{}`", name.name),
        )?;
        Ok(Call {
            span: Span::new(name.span.offset, close.end()),
            name,
            args,
        })
    }
}
