//! Reading typed values out of YAML nodes, each failure a located diagnostic.

use crate::diagnostic::Diagnostic;
use crate::duration::parse_duration;
use crate::model::Text;
use crate::yaml::{Node, Value, is_null};

/// The closest of `candidates` to `word`, as a "did you mean" hint.
pub(crate) fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| {
            // A key cut short (`cache` for `cache-key`) is as likely as a typo.
            let prefix = c.starts_with(word) || word.starts_with(c);
            (
                if prefix {
                    1
                } else {
                    strsim::damerau_levenshtein(word, c)
                },
                c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

pub(crate) fn unknown_key(key: &Node, text: &str, within: &str, allowed: &[&str]) -> Diagnostic {
    let d = key.error(format!("unknown key `{text}` in {within}"));
    match suggest(text, allowed) {
        Some(help) => d.with_help(help),
        None => d.with_help(format!("valid keys are: {}", allowed.join(", "))),
    }
}

pub(crate) fn as_map<'a>(
    node: &'a Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<&'a [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            errors.push(node.error(format!("{what} must be a mapping, found {}", node.kind())));
            None
        }
    }
}

pub(crate) fn as_string(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<String> {
    match &node.value {
        Value::Scalar { text, quoted } if *quoted || !is_null(text) => Some(text.clone()),
        _ => {
            errors.push(node.error(format!("{what} must be a string, found {}", node.kind())));
            None
        }
    }
}

/// A scalar of any kind (string, number, boolean) as text: RWX converts every `with`, `init`
/// and env value to a string.
pub(crate) fn as_text(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<Text> {
    match &node.value {
        Value::Scalar { text, quoted } => Some(Text::new(
            if !*quoted && is_null(text) {
                String::new()
            } else {
                text.clone()
            },
            node.at,
        )),
        _ => {
            errors.push(node.error(format!(
                "{what} must be a string, number or boolean, found {}",
                node.kind()
            )));
            None
        }
    }
}

pub(crate) fn as_bool(node: &Node, what: &str, errors: &mut Vec<Diagnostic>) -> Option<bool> {
    match &node.value {
        Value::Scalar {
            text,
            quoted: false,
        } if text == "true" => Some(true),
        Value::Scalar {
            text,
            quoted: false,
        } if text == "false" => Some(false),
        _ => {
            errors.push(node.error(format!(
                "{what} must be true or false, found {}",
                node.kind()
            )));
            None
        }
    }
}

/// A string or a list of strings (`use: a` and `use: [a, b]` are both accepted), with the node
/// of each item for positions. Nested lists are flattened: RWX allows them so that a list can
/// be shared through a YAML alias.
pub(crate) fn as_string_list<'a>(
    node: &'a Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(&'a Node, String)> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .flat_map(|item| match &item.value {
                Value::Seq(_) => as_string_list(item, what, errors),
                _ => as_string(item, &format!("each item of {what}"), errors)
                    .map(|s| vec![(item, s)])
                    .unwrap_or_default(),
            })
            .collect(),
        Value::Scalar { .. } => as_string(node, what, errors)
            .map(|s| vec![(node, s)])
            .unwrap_or_default(),
        Value::Map(_) => {
            errors.push(node.error(format!("{what} must be a list of strings, found a mapping")));
            Vec::new()
        }
    }
}

pub(crate) fn duration(
    node: &Node,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<std::time::Duration> {
    let text = match &node.value {
        // `timeout: 90` is seconds, as a number.
        Value::Scalar { text, .. } => text.clone(),
        _ => as_string(node, what, errors)?,
    };
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(
                node.error(format!("{what}: {e}"))
                    .with_help("for example `90s`, `10m`, `1h30m`, `7d` or `1 day`"),
            );
            None
        }
    }
}

/// The scalar text of a key node, or a diagnostic.
pub(crate) fn key_name(key: &Node, errors: &mut Vec<Diagnostic>) -> Option<String> {
    as_string(key, "a key", errors)
}
