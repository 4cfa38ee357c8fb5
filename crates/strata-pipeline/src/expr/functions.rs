//! The functions an expression can call, their checks and their implementations.
//!
//! The list is RWX's documented one: `starts-with`, `ends-with`, `contains`, `lower`, `upper`
//! (Mint's expressions page) and `date` (RWX's current expressions page). A call written as a
//! method, `init.ref.starts-with('v')`, passes the receiver as the first argument.

use super::date::strftime;
use super::error::ExprError;
use super::scope::Scope;
use super::template::Template;
use super::value::{Val, Value};

pub(crate) struct Function {
    pub name: &'static str,
    pub params: &'static [&'static str],
    call: fn(&[Val], &Scope) -> Result<Value, String>,
}

impl Function {
    /// The result is secret when an argument is: a secret's prefix, case or length must not
    /// escape through a function any more than through an operator.
    pub fn call(&self, args: &[Val], scope: &Scope) -> Result<Val, String> {
        let value = (self.call)(args, scope)?;
        Ok(Val {
            value,
            secret: args.iter().any(|a| a.secret),
        })
    }

    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "contains",
        params: &["str", "substr"],
        call: contains,
    },
    Function {
        name: "date",
        params: &["format"],
        call: date,
    },
    Function {
        name: "ends-with",
        params: &["str", "suffix"],
        call: |args, _| {
            let [s, suffix] = two(args)?;
            Ok(text(s, "str")?.ends_with(&*text(suffix, "suffix")?).into())
        },
    },
    Function {
        name: "lower",
        params: &["str"],
        call: |args, _| Ok(text(one(args)?, "str")?.to_lowercase().into()),
    },
    Function {
        name: "starts-with",
        params: &["str", "prefix"],
        call: |args, _| {
            let [s, prefix] = two(args)?;
            Ok(text(s, "str")?
                .starts_with(&*text(prefix, "prefix")?)
                .into())
        },
    },
    Function {
        name: "upper",
        params: &["str"],
        call: |args, _| Ok(text(one(args)?, "str")?.to_uppercase().into()),
    },
];

pub(crate) fn lookup(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The names of every function, for completion or documentation.
pub fn function_names() -> impl Iterator<Item = &'static str> {
    FUNCTIONS.iter().map(|f| f.name)
}

/// Every call in `template` to a function that does not exist (with the nearest name when one is
/// close) or with the wrong number of arguments, a method call's receiver counting as the first.
pub fn check_functions(template: &Template) -> Vec<ExprError> {
    let mut errors = Vec::new();
    for call in template.functions() {
        let Some(function) = lookup(&call.name) else {
            let mut message = format!("unknown function `{}`", call.name);
            if let Some(near) = nearest(&call.name) {
                message.push_str(&format!("; did you mean `{near}`?"));
            } else {
                let names: Vec<_> = function_names().collect();
                message.push_str(&format!("; the functions are {}", names.join(", ")));
            }
            errors.push(ExprError::new(call.offset, call.len, message));
            continue;
        };
        if call.args != function.params.len() {
            let receiver = if call.method {
                " (counting the value before the dot)"
            } else {
                ""
            };
            errors.push(ExprError::new(
                call.offset,
                call.len,
                format!(
                    "`{}` takes {}, found {}{receiver}",
                    function.signature(),
                    arguments(function.params.len()),
                    call.args
                ),
            ));
        }
    }
    errors
}

fn arguments(n: usize) -> String {
    match n {
        1 => "1 argument".into(),
        n => format!("{n} arguments"),
    }
}

fn nearest(name: &str) -> Option<&'static str> {
    function_names()
        .map(|f| (strsim::damerau_levenshtein(name, f), f))
        .filter(|(d, f)| *d <= 2.max(f.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
        .or_else(|| {
            // `startsWith`, `StartsWith`, `starts_with`: the GitHub Actions spellings.
            let folded: String = name
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect();
            function_names().find(|f| f.replace('-', "") == folded)
        })
}

fn one(args: &[Val]) -> Result<&Val, String> {
    match args {
        [a] => Ok(a),
        _ => Err(format!("takes 1 argument, found {}", args.len())),
    }
}

fn two(args: &[Val]) -> Result<[&Val; 2], String> {
    match args {
        [a, b] => Ok([a, b]),
        _ => Err(format!("takes 2 arguments, found {}", args.len())),
    }
}

/// A string argument. Numbers and booleans are taken as their text and null as the empty
/// string, so `starts-with(event.git.tag, 'v')` is simply false on a push without a tag.
fn text<'a>(arg: &'a Val, param: &str) -> Result<std::borrow::Cow<'a, str>, String> {
    match &arg.value {
        Value::String(s) => Ok(s.as_str().into()),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(arg.value.render().into()),
        other => Err(format!(
            "`{param}` must be a string, found {}",
            other.kind()
        )),
    }
}

/// `contains(str, substr)` as documented; an array as the first argument is searched for an
/// element equal (`==`) to the second, as in GitHub Actions.
fn contains(args: &[Val], _: &Scope) -> Result<Value, String> {
    let [haystack, needle] = two(args)?;
    if let Value::Array(items) = &haystack.value {
        return Ok(items.iter().any(|i| i.loosely_equals(&needle.value)).into());
    }
    Ok(text(haystack, "str")?
        .contains(&*text(needle, "substr")?)
        .into())
}

fn date(args: &[Val], scope: &Scope) -> Result<Value, String> {
    let format = one(args)?;
    let Value::String(format) = &format.value else {
        return Err(format!(
            "`format` must be a string, found {}",
            format.value.kind()
        ));
    };
    strftime(format, scope.now()).map(Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::template::parse_template;
    use std::time::{Duration, UNIX_EPOCH};

    fn call(name: &str, args: &[Val]) -> Result<Val, String> {
        let mut scope = Scope::new();
        scope.set_now(UNIX_EPOCH + Duration::from_secs(1_772_807_445));
        lookup(name).expect("a known function").call(args, &scope)
    }

    fn s(x: &str) -> Val {
        Val::public(x)
    }

    #[test]
    fn starts_with_and_ends_with() {
        assert_eq!(
            call("starts-with", &[s("hello"), s("he")]),
            Ok(Val::public(true))
        );
        assert_eq!(
            call("starts-with", &[s("hello"), s("lo")]),
            Ok(Val::public(false))
        );
        assert_eq!(
            call("ends-with", &[s("hello"), s("lo")]),
            Ok(Val::public(true))
        );
        assert_eq!(
            call("ends-with", &[s("hello"), s("he")]),
            Ok(Val::public(false))
        );
        assert_eq!(
            call("starts-with", &[s("Hello"), s("he")]),
            Ok(Val::public(false))
        );
        assert_eq!(call("starts-with", &[s("x"), s("")]), Ok(Val::public(true)));
    }

    #[test]
    fn null_is_the_empty_string_and_scalars_their_text() {
        assert_eq!(
            call("starts-with", &[Val::public(Value::Null), s("v")]),
            Ok(Val::public(false))
        );
        assert_eq!(
            call("ends-with", &[Val::public(10.0), s("0")]),
            Ok(Val::public(true))
        );
        assert_eq!(call("upper", &[Val::public(true)]), Ok(Val::public("TRUE")));
    }

    #[test]
    fn contains_strings_and_arrays() {
        assert_eq!(
            call("contains", &[s("hello"), s("el")]),
            Ok(Val::public(true))
        );
        assert_eq!(
            call("contains", &[s("hello"), s("EL")]),
            Ok(Val::public(false))
        );
        let list = Val::public(Value::Array(vec!["a".into(), 1.0.into()]));
        assert_eq!(
            call("contains", &[list.clone(), s("a")]),
            Ok(Val::public(true))
        );
        assert_eq!(
            call("contains", &[list.clone(), s("1")]),
            Ok(Val::public(true))
        );
        assert_eq!(call("contains", &[list, s("b")]), Ok(Val::public(false)));
    }

    #[test]
    fn lower_and_upper() {
        assert_eq!(call("lower", &[s("HELLO Ä")]), Ok(Val::public("hello ä")));
        assert_eq!(call("upper", &[s("hello ß")]), Ok(Val::public("HELLO SS")));
    }

    #[test]
    fn date_formats_the_scopes_instant() {
        assert_eq!(
            call("date", &[s("%Y-%m-%dT%H:%M:%SZ")]),
            Ok(Val::public("2026-03-06T14:30:45Z"))
        );
        assert_eq!(
            call("date", &[s("%Q")]),
            Err("unknown date format `%Q`".into())
        );
        assert_eq!(
            call("date", &[Val::public(1.0)]),
            Err("`format` must be a string, found a number".into())
        );
    }

    #[test]
    fn results_are_secret_when_an_argument_is() {
        let r = call("starts-with", &[Val::secret("hunter2"), s("h")]).unwrap();
        assert!(r.secret);
        assert_eq!(r.value, Value::Bool(true));
        assert!(call("lower", &[Val::secret("X")]).unwrap().secret);
        assert!(!call("lower", &[s("X")]).unwrap().secret);
    }

    #[test]
    fn wrong_types_and_counts_are_errors() {
        assert_eq!(
            call("lower", &[Val::public(Value::Array(vec![]))]),
            Err("`str` must be a string, found an array".into())
        );
        assert_eq!(call("lower", &[]), Err("takes 1 argument, found 0".into()));
        assert_eq!(
            call("contains", &[s("a")]),
            Err("takes 2 arguments, found 1".into())
        );
    }

    #[test]
    fn check_finds_unknown_names_and_wrong_counts() {
        let t = parse_template(
            "${{ strats-with(a, 'x') }} ${{ startsWith(a, 'x') }} ${{ frob() }} \
             ${{ lower(a, b) }} ${{ a.b.upper(1) }} ${{ a.starts-with('v') }}",
        )
        .unwrap();
        let errors = check_functions(&t);
        let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "unknown function `strats-with`; did you mean `starts-with`?",
                "unknown function `startsWith`; did you mean `starts-with`?",
                "unknown function `frob`; the functions are contains, date, ends-with, lower, \
                 starts-with, upper",
                "`lower(str)` takes 1 argument, found 2",
                "`upper(str)` takes 1 argument, found 2 (counting the value before the dot)",
            ]
        );
        assert_eq!((errors[0].offset, errors[0].len), (4, 11));
    }

    #[test]
    fn every_function_is_listed_in_order() {
        let names: Vec<_> = function_names().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|n| lookup(n).is_some()));
        assert!(lookup("nope").is_none());
    }
}
