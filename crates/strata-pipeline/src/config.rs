//! The config file: settings of a machine rather than of a pipeline: the shared caches, and the
//! host variables every task is given.
//!
//! ```yaml
//! cache:
//!   - s3://ci-cache/strata?endpoint=http://minio.internal:9000
//!   - oci://registry.internal:5000/strata-cache,ro
//! env:
//!   - SSL_CERT_FILE                            # the host's value, part of the keys
//!   - RUSTFLAGS=-Dwarnings                     # this value
//!   - {name: NPM_TOKEN, cache-key: excluded}   # the host's value, keyed by name only
//! local:
//!   max-size: 20GB                             # the local cache's budget, kept after each run
//! ```

use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostics;
use crate::model::RemoteCacheDecl;
use crate::parse::{read_source, remote_caches};
use crate::yaml::{self, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub caches: Vec<RemoteCacheDecl>,
    pub env: Vec<ConfigEnv>,
    pub local: LocalConfig,
}

/// Settings of the local cache (`local:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalConfig {
    /// `max-size`: the budget, in bytes, that a prune after each run keeps the cache within.
    pub max_size: Option<u64>,
}

fn local_config(node: &crate::yaml::Node, errors: &mut Vec<crate::Diagnostic>) -> LocalConfig {
    use crate::parse::scalars::{as_string, unknown_key};
    let mut local = LocalConfig::default();
    let Value::Map(fields) = &node.value else {
        errors.push(node.error("`local` must be a mapping (`local: {max-size: 20GB}`)"));
        return local;
    };
    for (k, v) in fields {
        match as_string(k, "a key", errors).as_deref() {
            Some("max-size") => {
                if let Some(text) = as_string(v, "`max-size`", errors) {
                    match crate::parse_size(&text) {
                        Ok(bytes) => local.max_size = Some(bytes),
                        Err(e) => errors.push(v.error(format!("`max-size`: {e}"))),
                    }
                }
            }
            Some(other) => errors.push(unknown_key(k, other, "`local`", &["max-size"])),
            None => {}
        }
    }
    local
}

/// A host variable passed into every task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEnv {
    pub name: String,
    /// The value to give; `None`: the host's own.
    pub value: Option<String>,
    /// Keyed by name only.
    pub excluded: bool,
}

fn config_env(node: &crate::yaml::Node, errors: &mut Vec<crate::Diagnostic>) -> Vec<ConfigEnv> {
    use crate::parse::scalars::{as_string, as_string_list};
    let Value::Seq(items) = &node.value else {
        return as_string_list(node, "`env`", errors)
            .into_iter()
            .map(|(_, s)| plain_env(&s))
            .collect();
    };
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            Value::Map(fields) => {
                let mut e = ConfigEnv {
                    name: String::new(),
                    value: None,
                    excluded: false,
                };
                for (k, v) in fields {
                    match as_string(k, "a key", errors).as_deref() {
                        Some("name") => e.name = as_string(v, "`name`", errors).unwrap_or_default(),
                        Some("value") => e.value = as_string(v, "`value`", errors),
                        Some("cache-key") => {
                            e.excluded =
                                as_string(v, "`cache-key`", errors).as_deref() == Some("excluded")
                        }
                        Some(other) => errors.push(crate::parse::scalars::unknown_key(
                            k,
                            other,
                            "an `env` entry",
                            &["name", "value", "cache-key"],
                        )),
                        None => {}
                    }
                }
                if e.name.is_empty() {
                    errors.push(item.error("an `env` entry needs a `name`"));
                } else {
                    out.push(e);
                }
            }
            _ => {
                if let Some(s) = as_string(item, "each item of `env`", errors) {
                    out.push(plain_env(&s));
                }
            }
        }
    }
    out
}

/// `NAME` or `NAME=VALUE`.
pub fn plain_env(text: &str) -> ConfigEnv {
    match text.split_once('=') {
        Some((name, value)) => ConfigEnv {
            name: name.to_string(),
            value: Some(value.to_string()),
            excluded: false,
        },
        None => ConfigEnv {
            name: text.to_string(),
            value: None,
            excluded: false,
        },
    }
}

/// Reads a config file. Unknown keys are errors, as in pipeline files.
pub fn load_config(path: &Path) -> Result<Config, Diagnostics> {
    let text = read_source(path, "config file")?;
    let mut errors = Vec::new();
    let mut config = Config {
        path: path.to_path_buf(),
        caches: Vec::new(),
        env: Vec::new(),
        local: LocalConfig::default(),
    };
    match yaml::parse(&text) {
        Ok(root) => match &root.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    match &key.value {
                        Value::Scalar { text, .. } if text == "cache" => {
                            config.caches = remote_caches(value, "`cache`", &mut errors);
                        }
                        Value::Scalar { text, .. } if text == "env" => {
                            config.env = config_env(value, &mut errors);
                        }
                        Value::Scalar { text, .. } if text == "local" => {
                            config.local = local_config(value, &mut errors);
                        }
                        Value::Scalar { text, .. } => errors.push(
                            key.error(format!("unknown key `{text}` in the config file"))
                                .with_help("the config file's keys are `cache`, `env` and `local`"),
                        ),
                        _ => errors.push(key.error("config keys must be strings")),
                    }
                }
            }
            Value::Scalar { text, .. } if yaml::is_null(text) => {}
            _ => errors.push(root.error("the config file must be a mapping (`cache: [...]`)")),
        },
        Err(d) => errors.push(d),
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(Diagnostics::new(path, &text, errors))
    }
}
