//! The syntax tree of one expression. Every node keeps its byte span in the template text, so
//! checks and evaluation errors can point at the exact spot.

use super::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn new(offset: usize, end: usize) -> Self {
        Span {
            offset,
            len: end.saturating_sub(offset),
        }
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind {
    Literal(Value),
    Access(Access),
    Not(Box<Expr>),
    /// `a || b || c` or `a && b && c`: a flat list, so a long chain cannot nest deeply.
    Logical {
        op: LogicalOp,
        operands: Vec<Expr>,
    },
    /// At most one comparison per level: RWX's grammar makes them non-associative.
    Compare {
        op: CompareOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Conditional {
        condition: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicalOp {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    Eq,
    NotEq,
    Match,
    NotMatch,
    Gt,
    Lt,
    GtEq,
    LtEq,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::NotEq => "!=",
            CompareOp::Match => "=~",
            CompareOp::NotMatch => "!~",
            CompareOp::Gt => ">",
            CompareOp::Lt => "<",
            CompareOp::GtEq => ">=",
            CompareOp::LtEq => "<=",
        }
    }
}

/// A name, call or parenthesised expression followed by a chain of `.name`, `[index]` and
/// `.function(args)` links, any of them optional (`?.`, `?[`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Access {
    pub base: Base,
    pub chain: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Base {
    Name(Ident),
    Call(Call),
    Group(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub optional: bool,
    pub kind: LinkKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LinkKind {
    Member(Ident),
    Index(Box<Expr>),
    /// `receiver.name(args)`: the receiver is passed as the first argument.
    Method(Call),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub name: Ident,
    pub args: Vec<Expr>,
    pub span: Span,
}

impl Expr {
    /// Calls `f` on this expression and every expression inside it, parents before children.
    pub fn for_each<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Literal(_) => {}
            ExprKind::Not(e) => e.for_each(f),
            ExprKind::Logical { operands, .. } => operands.iter().for_each(|e| e.for_each(f)),
            ExprKind::Compare { left, right, .. } => {
                left.for_each(f);
                right.for_each(f);
            }
            ExprKind::Conditional {
                condition,
                then,
                otherwise,
            } => {
                condition.for_each(f);
                then.for_each(f);
                otherwise.for_each(f);
            }
            ExprKind::Access(access) => {
                match &access.base {
                    Base::Name(_) => {}
                    Base::Call(call) => call.args.iter().for_each(|e| e.for_each(f)),
                    Base::Group(e) => e.for_each(f),
                }
                for link in &access.chain {
                    match &link.kind {
                        LinkKind::Member(_) => {}
                        LinkKind::Index(e) => e.for_each(f),
                        LinkKind::Method(call) => call.args.iter().for_each(|e| e.for_each(f)),
                    }
                }
            }
        }
    }
}
