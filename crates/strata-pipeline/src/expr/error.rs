/// A problem in the text of a template: a syntax error, an unknown function, a wrong number of
/// arguments. `offset` and `len` are byte positions in the template text, so a caller that knows
/// where the text sits in the pipeline file can underline the exact spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            len,
            message: message.into(),
        }
    }
}

/// A problem found while evaluating a template against a scope: a name that is not defined, a
/// property read from null, an invalid regular expression. Positions are byte offsets into the
/// template text. Messages never quote a value, only the template's own text, so an error can
/// never reveal a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    pub offset: usize,
    pub len: usize,
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        EvalError {
            offset,
            len,
            message: message.into(),
        }
    }
}
