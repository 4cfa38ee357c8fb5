//! Reading names, members, indexes and method calls: `tasks.build.values.sha`, `event.list[0]`,
//! `a?.b`, `init.ref.starts-with('v')`.

use std::borrow::Cow;

use super::ast::{Access, Base, Ident, LinkKind, Span};
use super::error::EvalError;
use super::eval::{Evaluator, NULL};
use super::value::{Val, Value, format_number};

impl<'s> Evaluator<'s> {
    pub fn access(&self, access: &Access, span: Span) -> Result<Val, EvalError> {
        // Where in the scope the current value sits, while that is known: secrecy is decided
        // by path, so `vaults.v.name` is public even though `vaults` holds secrets.
        let mut location: Option<Vec<String>> = None;
        // Secrecy that no path can take away: a secret index, a function of a secret.
        let mut tainted = false;
        let mut current: Cow<'s, Value> = match &access.base {
            Base::Name(name) => {
                let Some(value) = self.scope.root(&name.name) else {
                    return Err(self.unknown_name(name));
                };
                location = Some(vec![name.name.clone()]);
                Cow::Borrowed(value)
            }
            Base::Call(call) => {
                let v = self.call(call, None)?;
                tainted = v.secret;
                Cow::Owned(v.value)
            }
            Base::Group(inner) => {
                let v = self.eval(inner)?;
                tainted = v.secret;
                Cow::Owned(v.value)
            }
        };
        let mut secret = self.secrecy(tainted, &location);
        let mut before = Span::new(span.offset, access_base_end(access, span));
        for link in &access.chain {
            if link.optional && *current == Value::Null {
                // `a?.b.c` is null when `a` is, as in JavaScript: the rest of the chain is skipped.
                return Ok(Val {
                    value: Value::Null,
                    secret,
                });
            }
            match &link.kind {
                LinkKind::Member(name) => {
                    current = match member(current, &name.name) {
                        Ok(v) => v,
                        Err(kind) => {
                            return Err(self.bad_receiver(link.span, before, kind, &name.name));
                        }
                    };
                    if let Some(l) = &mut location {
                        l.push(name.name.clone());
                    }
                }
                LinkKind::Index(index) => {
                    let key = self.eval(index)?;
                    tainted |= key.secret;
                    match (&mut location, key_text(&key.value)) {
                        (Some(l), Some(k)) => l.push(k),
                        _ => location = None,
                    }
                    if *current == Value::Null {
                        let before = self.quote(before);
                        return Err(EvalError::new(
                            link.span.offset,
                            link.span.len,
                            format!(
                                "cannot index `{before}`, which is null; write `{before}?[…]` if \
                                 it may be missing"
                            ),
                        ));
                    }
                    current = element(current, &key.value).map_err(|message| {
                        EvalError::new(link.span.offset, link.span.len, message)
                    })?;
                }
                LinkKind::Method(call) => {
                    let receiver = Val {
                        value: current.into_owned(),
                        secret,
                    };
                    let v = self.call(call, Some(receiver))?;
                    tainted = v.secret;
                    location = None;
                    current = Cow::Owned(v.value);
                }
            }
            if location.is_none() {
                tainted |= secret;
            }
            secret = self.secrecy(tainted, &location);
            before = Span::new(span.offset, link.span.end());
        }
        Ok(Val {
            value: current.into_owned(),
            secret,
        })
    }

    fn secrecy(&self, tainted: bool, location: &Option<Vec<String>>) -> bool {
        tainted
            || location
                .as_ref()
                .is_some_and(|l| self.scope.is_secret_at(l))
    }
    fn unknown_name(&self, name: &Ident) -> EvalError {
        let near = self
            .scope
            .root_names()
            .map(|n| (strsim::damerau_levenshtein(&name.name, n), n))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d);
        let mut message = format!("`{}` is not defined", name.name);
        if let Some((_, n)) = near {
            message.push_str(&format!("; did you mean `{n}`?"));
        }
        EvalError::new(name.span.offset, name.span.len, message)
    }

    fn bad_receiver(&self, at: Span, before: Span, kind: &str, name: &str) -> EvalError {
        let before = self.quote(before);
        let message = if kind == "null" {
            format!(
                "cannot read `{name}` of `{before}`, which is null; write `{before}?.{name}` if it \
                 may be missing"
            )
        } else {
            format!("cannot read `{name}` of `{before}`, which is {kind}, not an object")
        };
        EvalError::new(at.offset, at.len, message)
    }
}

fn access_base_end(access: &Access, span: Span) -> usize {
    match access.chain.first() {
        Some(link) => link.span.offset,
        None => span.end(),
    }
}

/// A key as a path segment: strings as they are, numbers as they render (`a[0]` is `a.0`).
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(format_number(*n)),
        _ => None,
    }
}

/// `value.name`: a missing member is null, as in JavaScript. `Err` carries the kind of a value
/// that has no members.
fn member<'v>(value: Cow<'v, Value>, name: &str) -> Result<Cow<'v, Value>, &'static str> {
    match value {
        Cow::Borrowed(Value::Object(map)) => Ok(Cow::Borrowed(map.get(name).unwrap_or(&NULL))),
        Cow::Owned(Value::Object(mut map)) => Ok(Cow::Owned(map.remove(name).unwrap_or_default())),
        other => Err(other.kind()),
    }
}

/// `value[key]`: objects take strings (and numbers, as their text), arrays take whole numbers
/// (and strings holding one, since task values are strings). A missing member or an index out
/// of range is null, as in JavaScript.
fn element<'v>(value: Cow<'v, Value>, key: &Value) -> Result<Cow<'v, Value>, String> {
    match (&*value, key) {
        (Value::Object(_), Value::String(_) | Value::Number(_)) => {
            let name = key_text(key).unwrap_or_default();
            Ok(match value {
                Cow::Borrowed(Value::Object(map)) => Cow::Borrowed(map.get(&name).unwrap_or(&NULL)),
                Cow::Owned(Value::Object(mut map)) => {
                    Cow::Owned(map.remove(&name).unwrap_or_default())
                }
                _ => Cow::Owned(Value::Null),
            })
        }
        (Value::Object(_), other) => Err(format!(
            "an object's index must be a string or a number, found {}",
            other.kind()
        )),
        (Value::Array(items), _) => {
            let position = match key {
                Value::Number(n) if n.fract() == 0.0 && *n >= 0.0 => Some(*n as usize),
                Value::Number(_) => None,
                Value::String(s) => match s.parse::<usize>() {
                    Ok(i) => Some(i),
                    Err(_) => {
                        return Err("an array's index must be a number, found a string that is \
                                    not one"
                            .into());
                    }
                },
                other => {
                    return Err(format!(
                        "an array's index must be a number, found {}",
                        other.kind()
                    ));
                }
            };
            let Some(i) = position.filter(|i| *i < items.len()) else {
                return Ok(Cow::Owned(Value::Null));
            };
            Ok(match value {
                Cow::Borrowed(Value::Array(items)) => Cow::Borrowed(items.get(i).unwrap_or(&NULL)),
                Cow::Owned(Value::Array(items)) => {
                    Cow::Owned(items.into_iter().nth(i).unwrap_or_default())
                }
                _ => Cow::Owned(Value::Null),
            })
        }
        (other, _) => Err(format!("cannot index {}", other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use crate::expr::eval::tests::{eval_error, value};
    use crate::expr::value::Value;

    #[test]
    fn missing_members_are_null_but_reading_through_null_is_an_error() {
        assert_eq!(value("init.missing"), Value::Null);
        assert_eq!(value("tasks.other"), Value::Null);
        let e = eval_error("tasks.other.values.sha");
        assert_eq!(
            e.message,
            "cannot read `values` of `tasks.other`, which is null; write `tasks.other?.values` \
             if it may be missing"
        );
        assert_eq!((e.offset, e.len), (15, 7));
        assert_eq!(
            eval_error("init.branch.x").message,
            "cannot read `x` of `init.branch`, which is a string, not an object"
        );
    }

    #[test]
    fn optional_chaining_skips_the_rest_of_the_chain() {
        assert_eq!(value("tasks.other?.values.sha"), Value::Null);
        assert_eq!(value("tasks.other?.values.sha.more[0]"), Value::Null);
        assert_eq!(value("event.nothing?[0]"), Value::Null);
        assert_eq!(value("event.nothing?.lower()"), Value::Null);
        assert_eq!(value("event.map?.a"), Value::Number(1.0));
        assert_eq!(value("(event.nothing)?.x"), Value::Null);
        // `?.` guards only the link it is on.
        eval_error("event.map?.z.y");
    }

    #[test]
    fn indexing_with_strings_and_numbers() {
        assert_eq!(value("event.map['a']"), Value::Number(1.0));
        assert_eq!(value("event.map[init.key]"), Value::Number(2.0));
        assert_eq!(value("event.map[1]"), Value::from("one"));
        assert_eq!(value("event.map['zz']"), Value::Null);
        assert_eq!(value("event['map'].b"), Value::Number(2.0));
        assert_eq!(value("event.list[0]"), Value::from("x"));
        assert_eq!(value("event.list['1']"), Value::from("y"));
        assert_eq!(value("event.list[3]"), Value::Null);
        assert_eq!(value("event.list[-1]"), Value::Null);
        assert_eq!(value("event.list[0.5]"), Value::Null);
        assert_eq!(value("(event.list)[1]"), Value::from("y"));
        assert_eq!(value("tasks['my-task'].values.sha"), Value::from("abc123"));
    }

    #[test]
    fn bad_indexes_are_errors() {
        assert_eq!(
            eval_error("event.list['x']").message,
            "an array's index must be a number, found a string that is not one"
        );
        assert_eq!(
            eval_error("event.list[true]").message,
            "an array's index must be a number, found a boolean"
        );
        assert_eq!(
            eval_error("event.map[null]").message,
            "an object's index must be a string or a number, found null"
        );
        assert_eq!(
            eval_error("init.branch[0]").message,
            "cannot index a string"
        );
        let e = eval_error("event.nothing[0]");
        assert_eq!(
            e.message,
            "cannot index `event.nothing`, which is null; write `event.nothing?[…]` if it may \
             be missing"
        );
        assert_eq!((e.offset, e.len), (17, 3));
    }

    #[test]
    fn unknown_names_suggest_a_namespace() {
        let e = eval_error("inti.branch");
        assert_eq!(e.message, "`inti` is not defined; did you mean `init`?");
        assert_eq!((e.offset, e.len), (4, 4));
        assert_eq!(eval_error("zzzzzz").message, "`zzzzzz` is not defined");
    }

    #[test]
    fn method_calls_pass_the_receiver_first() {
        assert_eq!(
            value("init.ref.starts-with('refs/tags/')"),
            Value::Bool(true)
        );
        assert_eq!(value("init.branch.upper().lower()"), Value::from("main"));
        assert_eq!(value("(init.branch).ends-with('in')"), Value::Bool(true));
        assert_eq!(value("event.list.contains('y')"), Value::Bool(true));
        assert_eq!(value("init.missing.upper()"), Value::from(""));
    }
}
