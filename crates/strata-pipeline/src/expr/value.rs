//! Values of the expression language, with the JavaScript-like rules RWX's documentation implies
//! and the decisions made where it is silent (each stated on the function that makes it).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A value: what a name refers to (init parameters, event payloads, task values, secrets) and
/// what an expression produces. Shaped like JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// How an error names a value's type: "a string", "an array". Never the value itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// Whether `if:` runs and `&&`, `||`, `!` and `? :` take the value as true. JavaScript's
    /// rule (null, false, 0, NaN and "" are false; arrays and objects are true) with one
    /// addition: the string `"false"` is false too. RWX turns every init parameter into a
    /// string, and its documentation shows `deploy: false` in `init` switching off a task with
    /// `if: ${{ init.deploy }}`, which only works if `"false"` is false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty() && s != "false",
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// The text a value becomes inside a template: a string as it is, null as nothing (like an
    /// unset shell variable), numbers and booleans as JavaScript prints them, arrays and objects
    /// as compact JSON.
    pub fn render(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) | Value::Object(_) => self.to_json(),
        }
    }

    /// Compact JSON, keys in sorted order; numbers that JSON cannot hold (NaN, infinities)
    /// become `null`, as `JSON.stringify` makes them.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }

    /// `==`: values of one type compare by content (strings case-sensitively, as the
    /// documentation's `lower("HELLO") == "hello"` implies); a string compared with a number
    /// compares as a number when it is one (`"1" == 1`, since task values and init parameters
    /// are strings); a string compared with a boolean compares with `"true"` or `"false"`.
    /// Anything else, null included, equals only itself.
    pub fn loosely_equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
                parse_number(s) == Some(*n)
            }
            (Value::Bool(b), Value::String(s)) | (Value::String(s), Value::Bool(b)) => {
                s == if *b { "true" } else { "false" }
            }
            _ => self == other,
        }
    }

    /// `<`, `>`, `<=`, `>=`: numbers numerically, strings by code point (as JavaScript), and a
    /// number with a string numerically when the string is a number. `Ok(None)` when a NaN is
    /// involved (every comparison is then false); `Err` names the types that cannot be ordered.
    pub fn order(&self, other: &Value) -> Result<Option<Ordering>, String> {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => Ok(a.partial_cmp(b)),
            (Value::String(a), Value::String(b)) => Ok(Some(a.cmp(b))),
            (Value::Number(a), Value::String(s)) => match parse_number(s) {
                Some(b) => Ok(a.partial_cmp(&b)),
                None => Err("cannot order a number and a string that is not a number".into()),
            },
            (Value::String(s), Value::Number(b)) => match parse_number(s) {
                Some(a) => Ok(a.partial_cmp(b)),
                None => Err("cannot order a string that is not a number and a number".into()),
            },
            (a, b) => Err(format!("cannot order {} and {}", a.kind(), b.kind())),
        }
    }
}

/// A number written in a string, as `==` and ordering read it: what Rust's `f64` parser takes
/// (so `"1e3"`, `"-0.5"`, `"+1"`), but nothing infinite or NaN, and no surrounding spaces.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Numbers as JavaScript's `String(n)`: integers without a fraction, exponents past 1e21 and
/// below 1e-6.
pub(crate) fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = n.abs();
    if abs >= 1e21 || (abs < 1e-6 && abs != 0.0) {
        let s = format!("{n:e}");
        return match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        };
    }
    if n.fract() == 0.0 {
        // Exact: |n| < 1e21 fits an i128, and -0 becomes 0.
        return format!("{}", n as i128);
    }
    format!("{n}")
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_finite() => out.push_str(&format_number(*n)),
        Value::Number(_) => out.push_str("null"),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::Array(items)
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(map: BTreeMap<String, Value>) -> Self {
        Value::Object(map)
    }
}

/// A value with whether it was derived from a secret. Every operation whose inputs include a
/// secret yields a secret, so a caller only has to look at the result. `Debug` hides a secret's
/// content, so a stray `{:?}` in a log cannot leak it.
#[derive(Clone, PartialEq)]
pub struct Val {
    pub value: Value,
    pub secret: bool,
}

impl Val {
    pub fn public(value: impl Into<Value>) -> Self {
        Val {
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(value: impl Into<Value>) -> Self {
        Val {
            value: value.into(),
            secret: true,
        }
    }

    pub fn truthy(&self) -> bool {
        self.value.truthy()
    }

    pub fn render(&self) -> Rendered {
        Rendered {
            text: self.value.render(),
            secret: self.secret,
        }
    }
}

impl fmt::Debug for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("Val(<secret>)")
        } else {
            f.debug_tuple("Val").field(&self.value).finish()
        }
    }
}

/// `truthy` for a bare value; see [`Value::truthy`].
pub fn truthy(value: &Value) -> bool {
    value.truthy()
}

/// A template rendered to text, secret when any expression in it was. `Debug` hides secret
/// text.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub secret: bool,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("Rendered(<secret>)")
        } else {
            f.debug_tuple("Rendered").field(&self.text).finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn truthiness_follows_javascript_plus_the_string_false() {
        for falsy in [
            Value::Null,
            Value::Bool(false),
            Value::Number(0.0),
            Value::Number(-0.0),
            Value::Number(f64::NAN),
            "".into(),
            "false".into(),
        ] {
            assert!(!falsy.truthy(), "{falsy:?} should be false");
        }
        for truthy in [
            Value::Bool(true),
            Value::Number(-1.0),
            "0".into(),
            "False".into(),
            " ".into(),
            Value::Array(vec![]),
            obj(&[]),
        ] {
            assert!(truthy.truthy(), "{truthy:?} should be true");
        }
        assert!(super::truthy(&"yes".into()));
    }

    #[test]
    fn numbers_render_as_javascript_prints_them() {
        for (n, text) in [
            (1.0, "1"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(format_number(n), text);
        }
    }

    #[test]
    fn rendering_inside_text() {
        assert_eq!(Value::Null.render(), "");
        assert_eq!(Value::Bool(true).render(), "true");
        assert_eq!(Value::from("a b").render(), "a b");
        assert_eq!(
            Value::Array(vec![1.0.into(), "x".into(), Value::Null]).render(),
            r#"[1,"x",null]"#
        );
        assert_eq!(
            obj(&[("b", Value::Bool(false)), ("a", "q\"\n\u{1}".into())]).render(),
            r#"{"a":"q\"\n\u0001","b":false}"#
        );
        assert_eq!(Value::Array(vec![f64::NAN.into()]).to_json(), "[null]");
    }

    #[test]
    fn equality_is_case_sensitive_and_reads_numbers_in_strings() {
        let s = |x: &str| Value::from(x);
        assert!(s("main").loosely_equals(&s("main")));
        assert!(!s("Main").loosely_equals(&s("main")));
        assert!(s("1").loosely_equals(&1.0.into()));
        assert!(Value::from(1.0).loosely_equals(&s("1.0")));
        assert!(!s("one").loosely_equals(&1.0.into()));
        assert!(!s(" 1").loosely_equals(&1.0.into()));
        assert!(s("true").loosely_equals(&true.into()));
        assert!(Value::from(false).loosely_equals(&s("false")));
        assert!(!s("1").loosely_equals(&true.into()));
        assert!(Value::Null.loosely_equals(&Value::Null));
        assert!(!Value::Null.loosely_equals(&s("")));
        assert!(!Value::Null.loosely_equals(&Value::Bool(false)));
        assert!(!Value::from(f64::NAN).loosely_equals(&f64::NAN.into()));
        assert!(Value::Array(vec![s("a")]).loosely_equals(&Value::Array(vec![s("a")])));
        assert!(obj(&[("k", 1.0.into())]).loosely_equals(&obj(&[("k", 1.0.into())])));
        assert!(!obj(&[("k", 1.0.into())]).loosely_equals(&obj(&[("k", "1".into())])));
    }

    #[test]
    fn ordering() {
        let s = |x: &str| Value::from(x);
        assert_eq!(
            Value::from(2.0).order(&1.0.into()),
            Ok(Some(Ordering::Greater))
        );
        assert_eq!(s("10").order(&s("9")), Ok(Some(Ordering::Less)));
        assert_eq!(s("10").order(&9.0.into()), Ok(Some(Ordering::Greater)));
        assert_eq!(Value::from(9.0).order(&s("10")), Ok(Some(Ordering::Less)));
        assert_eq!(Value::from(f64::NAN).order(&1.0.into()), Ok(None));
        assert!(s("x").order(&1.0.into()).is_err());
        assert_eq!(
            Value::Null.order(&1.0.into()),
            Err("cannot order null and a number".to_string())
        );
        assert!(Value::Bool(true).order(&Value::Bool(false)).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let v = Val::secret("hunter2");
        assert_eq!(format!("{v:?}"), "Val(<secret>)");
        assert_eq!(format!("{:?}", v.render()), "Rendered(<secret>)");
        let p = Val::public("open");
        assert!(format!("{p:?}").contains("open"));
        assert!(format!("{:?}", p.render()).contains("open"));
        assert!(!v.render().text.is_empty());
    }
}
