//! Tokens of the language inside `${{ … }}`, as RWX's parser defines them: no escapes in
//! strings, identifiers that may contain `-`, and `}}` ending the expression wherever it
//! appears outside a string.

use super::error::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Name(String),
    True,
    False,
    Null,
    Number(f64),
    Str(String),
    Dot,
    OptionalDot,
    LBracket,
    OptionalLBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Question,
    Colon,
    And,
    Or,
    Eq,
    NotEq,
    Match,
    NotMatch,
    Gt,
    Lt,
    GtEq,
    LtEq,
    Not,
    /// `}}`, the end of the expression.
    End,
    /// The template text ran out before `}}`.
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub offset: usize,
    pub len: usize,
}

impl Token {
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Reads tokens one at a time, so that a syntax error early in an expression is reported before
/// a lexical one further on.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str, pos: usize) -> Self {
        Lexer { text, pos }
    }

    pub fn next_token(&mut self) -> Result<Token, ExprError> {
        self.skip_whitespace();
        let start = self.pos;
        let rest = &self.text.as_bytes()[start..];
        let Some(&first) = rest.first() else {
            return Ok(self.token(Tok::Eof, 0));
        };
        let second = rest.get(1).copied();
        let tok = match (first, second) {
            (b'}', Some(b'}')) => (Tok::End, 2),
            (b'\'' | b'"', _) => return self.string(first),
            (b'0'..=b'9', _) | (b'-', Some(b'0'..=b'9')) => return Ok(self.number()),
            (b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'-', _) => return Ok(self.word()),
            (b'?', Some(b'.')) => (Tok::OptionalDot, 2),
            (b'?', Some(b'[')) => (Tok::OptionalLBracket, 2),
            (b'?', _) => (Tok::Question, 1),
            (b'.', _) => (Tok::Dot, 1),
            (b',', _) => (Tok::Comma, 1),
            (b':', _) => (Tok::Colon, 1),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'[', _) => (Tok::LBracket, 1),
            (b']', _) => (Tok::RBracket, 1),
            (b'&', Some(b'&')) => (Tok::And, 2),
            (b'|', Some(b'|')) => (Tok::Or, 2),
            (b'=', Some(b'=')) => (Tok::Eq, 2),
            (b'=', Some(b'~')) => (Tok::Match, 2),
            (b'!', Some(b'=')) => (Tok::NotEq, 2),
            (b'!', Some(b'~')) => (Tok::NotMatch, 2),
            (b'>', Some(b'=')) => (Tok::GtEq, 2),
            (b'<', Some(b'=')) => (Tok::LtEq, 2),
            (b'>', _) => (Tok::Gt, 1),
            (b'<', _) => (Tok::Lt, 1),
            (b'!', _) => (Tok::Not, 1),
            _ => return Err(self.unexpected_character()),
        };
        Ok(self.token(tok.0, tok.1))
    }

    fn token(&mut self, tok: Tok, len: usize) -> Token {
        let token = Token {
            tok,
            offset: self.pos,
            len,
        };
        self.pos += len;
        token
    }

    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
    }

    fn string(&mut self, quote: u8) -> Result<Token, ExprError> {
        let start = self.pos;
        let body = &self.text[start + 1..];
        match body.bytes().position(|b| b == quote) {
            Some(n) => {
                let value = body[..n].to_string();
                Ok(self.token(Tok::Str(value), n + 2))
            }
            None => {
                let q = quote as char;
                Err(ExprError::new(
                    start,
                    1,
                    format!("unterminated string: missing closing `{q}`"),
                ))
            }
        }
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`, the JSON number grammar RWX uses: `01` is two
    /// numbers and `1.` is a number then a dot, both rejected later by the parser.
    fn number(&mut self) -> Token {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut i = start;
        let digits = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        if bytes[i] == b'-' {
            i += 1;
        }
        i = if bytes[i] == b'0' { i + 1 } else { digits(i) };
        if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
            i = digits(i + 1);
        }
        if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
            let mut j = i + 1;
            if j < bytes.len() && matches!(bytes[j], b'+' | b'-') {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_digit() {
                i = digits(j);
            }
        }
        // The grammar admits only what `f64` parses; the fallback is never taken.
        let value = self.text[start..i].parse::<f64>().unwrap_or(f64::NAN);
        self.token(Tok::Number(value), i - start)
    }

    /// An identifier, `[a-zA-Z_-][\w-]*`, or one of the words `true`, `false`, `null`.
    ///
    /// RWX's lexer matches `true` as a prefix (so `trueish` is `true` then `ish`, an error);
    /// here a keyword must be the whole word, which accepts `init.nullable` where RWX would not.
    fn word(&mut self) -> Token {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut i = start + 1;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-'))
        {
            i += 1;
        }
        let word = &self.text[start..i];
        let tok = match word {
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            _ => Tok::Name(word.to_string()),
        };
        self.token(tok, i - start)
    }

    fn unexpected_character(&self) -> ExprError {
        let c = self.text[self.pos..].chars().next().unwrap_or('?');
        let hint = match c {
            '=' => "; use `==` to compare",
            '&' => "; use `&&` for \"and\"",
            '|' => "; use `||` for \"or\"",
            '}' => "; an expression ends with `}}`",
            _ => "",
        };
        ExprError::new(
            self.pos,
            c.len_utf8(),
            format!("unexpected character `{}`{hint}", c.escape_debug()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(text: &str) -> Result<Vec<Tok>, ExprError> {
        let mut lexer = Lexer::new(text, 0);
        let mut out = Vec::new();
        loop {
            let t = lexer.next_token()?;
            if t.tok == Tok::Eof {
                return Ok(out);
            }
            out.push(t.tok);
        }
    }

    fn name(s: &str) -> Tok {
        Tok::Name(s.to_string())
    }

    #[test]
    fn identifiers_may_contain_dashes_and_start_with_one() {
        assert_eq!(
            lex("tasks.my-task.values.x-1 -y").unwrap(),
            vec![
                name("tasks"),
                Tok::Dot,
                name("my-task"),
                Tok::Dot,
                name("values"),
                Tok::Dot,
                name("x-1"),
                name("-y"),
            ]
        );
    }

    #[test]
    fn a_dash_before_a_digit_starts_a_number() {
        assert_eq!(lex("-1.5e3").unwrap(), vec![Tok::Number(-1500.0)]);
        assert_eq!(lex("a -1").unwrap(), vec![name("a"), Tok::Number(-1.0)]);
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        assert_eq!(lex("0").unwrap(), vec![Tok::Number(0.0)]);
        assert_eq!(lex("01").unwrap(), vec![Tok::Number(0.0), Tok::Number(1.0)]);
        assert_eq!(lex("1.").unwrap(), vec![Tok::Number(1.0), Tok::Dot]);
        assert_eq!(lex("2E+2").unwrap(), vec![Tok::Number(200.0)]);
        assert_eq!(lex("1e").unwrap(), vec![Tok::Number(1.0), name("e")]);
    }

    #[test]
    fn keywords_are_whole_words() {
        assert_eq!(
            lex("true false null nullable true-ish").unwrap(),
            vec![
                Tok::True,
                Tok::False,
                Tok::Null,
                name("nullable"),
                name("true-ish")
            ]
        );
    }

    #[test]
    fn strings_have_no_escapes_and_may_hold_the_end_marker() {
        assert_eq!(
            lex(r#"'a\' "}}" 'it"s'"#).unwrap(),
            vec![
                Tok::Str("a\\".into()),
                Tok::Str("}}".into()),
                Tok::Str("it\"s".into())
            ]
        );
    }

    #[test]
    fn every_operator() {
        assert_eq!(
            lex("?. ?[ ? . , : ( ) [ ] && || == != =~ !~ >= <= > < ! }}").unwrap(),
            vec![
                Tok::OptionalDot,
                Tok::OptionalLBracket,
                Tok::Question,
                Tok::Dot,
                Tok::Comma,
                Tok::Colon,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::And,
                Tok::Or,
                Tok::Eq,
                Tok::NotEq,
                Tok::Match,
                Tok::NotMatch,
                Tok::GtEq,
                Tok::LtEq,
                Tok::Gt,
                Tok::Lt,
                Tok::Not,
                Tok::End,
            ]
        );
    }

    #[test]
    fn positions_are_byte_offsets() {
        let mut lexer = Lexer::new("é  ab", 2);
        let t = lexer.next_token().unwrap();
        assert_eq!((t.offset, t.len), (4, 2));
    }

    #[test]
    fn unterminated_string_points_at_the_quote() {
        let e = lex("a == 'main").unwrap_err();
        assert_eq!((e.offset, e.len), (5, 1));
        assert_eq!(e.message, "unterminated string: missing closing `'`");
    }

    #[test]
    fn stray_characters_are_named_with_a_hint() {
        let e = lex("a = b").unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(e.message, "unexpected character `=`; use `==` to compare");
        let e = lex("a ∧ b").unwrap_err();
        assert_eq!((e.offset, e.len), (2, 3));
        assert_eq!(e.message, "unexpected character `∧`");
    }
}
