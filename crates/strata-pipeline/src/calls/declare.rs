//! The top-level keys of a package file (`rwx-package.yml`: `name`, `version`, `parameters`,
//! `outputs`, ...) and of a local package's `package:` block.

use crate::diagnostic::Diagnostic;
use crate::model::TaskName;
use crate::parse::scalars::{
    as_bool, as_map, as_string, as_string_list, as_text, key_name, unknown_key,
};
use crate::yaml::{Node, Value};

use super::{PackageDecl, Parameter};

/// Top-level keys that declare a package.
pub(crate) const PACKAGE_KEYS: &[&str] = &[
    "package",
    "name",
    "version",
    "description",
    "source_code_url",
    "issue_tracker_url",
    "parameters",
    "outputs",
];
const BLOCK_KEYS: &[&str] = &[
    "visibility",
    "name",
    "version",
    "description",
    "source_code_url",
    "issue_tracker_url",
    "parameters",
    "outputs",
];
const PARAMETER_KEYS: &[&str] = &["description", "required", "default"];
const OUTPUT_KEYS: &[&str] = &["values-from", "values"];

/// Records the top-level `key` of a package file into `decl` (created on first use).
pub(crate) fn declare(
    key: &str,
    value: &Node,
    decl: &mut Option<PackageDecl>,
    errors: &mut Vec<Diagnostic>,
) {
    let d = decl.get_or_insert_with(PackageDecl::default);
    match key {
        "package" => match &value.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let Some(name) = key_name(k, errors) else {
                        continue;
                    };
                    if name == "visibility" {
                        as_string(v, "`package.visibility`", errors);
                    } else if BLOCK_KEYS.contains(&name.as_str()) {
                        declare(&name, v, decl, errors);
                    } else {
                        errors.push(unknown_key(k, &name, "`package`", BLOCK_KEYS));
                    }
                }
            }
            _ => {
                if as_bool(value, "`package`", errors) == Some(false) {
                    *decl = None;
                }
            }
        },
        "name" => d.name = as_string(value, "`name`", errors),
        "version" => {
            d.version = as_string(value, "`version`", errors);
            if let Some(v) = &d.version
                && super::sources::parse_version(v).is_none()
            {
                errors.push(value.error(format!(
                    "`version: {v}` is not a version (MAJOR.MINOR.PATCH)"
                )));
            }
        }
        "description" | "source_code_url" | "issue_tracker_url" => {
            as_string(value, &format!("`{key}`"), errors);
        }
        "parameters" => d.parameters = parameters(value, errors),
        "outputs" => {
            if let Some(entries) = as_map(value, "`outputs`", errors) {
                for (k, v) in entries {
                    match key_name(k, errors).as_deref() {
                        Some("values-from") => {
                            d.values_from = as_string_list(v, "`outputs.values-from`", errors)
                                .into_iter()
                                .map(|(n, s)| (TaskName::new(s), n.at))
                                .collect()
                        }
                        Some("values") => errors.push(
                            k.error("`outputs.values` of a package is not supported yet")
                                .with_help("name the tasks whose values the package hands on in `outputs.values-from`"),
                        ),
                        Some(other) => {
                            errors.push(unknown_key(k, other, "`outputs`", OUTPUT_KEYS))
                        }
                        None => {}
                    }
                }
            }
        }
        _ => {}
    }
}

fn parameters(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<Parameter> {
    let mut out: Vec<Parameter> = Vec::new();
    let Some(entries) = as_map(node, "`parameters`", errors) else {
        return out;
    };
    for (k, v) in entries {
        let Some(name) = key_name(k, errors) else {
            continue;
        };
        let mut p = Parameter {
            name: name.clone(),
            required: false,
            default: None,
            at: k.at,
        };
        match &v.value {
            Value::Map(fields) => {
                for (fk, fv) in fields {
                    match key_name(fk, errors).as_deref() {
                        Some("description") => {
                            as_string(fv, "a parameter's `description`", errors);
                        }
                        Some("required") => {
                            p.required = as_bool(fv, "`required`", errors).unwrap_or(false)
                        }
                        Some("default") => p.default = as_text(fv, "`default`", errors),
                        Some(other) => errors.push(unknown_key(
                            fk,
                            other,
                            &format!("parameter `{name}`"),
                            PARAMETER_KEYS,
                        )),
                        None => {}
                    }
                }
            }
            Value::Scalar {
                text,
                quoted: false,
            } if crate::yaml::is_null(text) => {}
            _ => {
                errors.push(v.error(format!(
                    "parameter `{name}` must be a mapping (`description`, `required`, `default`), found {}",
                    v.kind()
                )));
                continue;
            }
        }
        if out.iter().any(|o| o.name == name) {
            errors.push(k.error(format!("parameter `{name}` is declared twice")));
            continue;
        }
        out.push(p);
    }
    out
}
