//! The config file: settings of a machine rather than of a pipeline: the shared caches, and the
//! host variables every task is given.
//!
//! ```yaml
//! cache:
//!   - s3://ci-cache/strata?endpoint=http://minio.internal:9000
//!   - oci://registry.internal:5000/strata-cache,ro
//!   - url: s3://ci-cache/main                  # only entries signed by one of these keys
//!     trusted-keys: ["ci-main:BASE64..."]
//! env:
//!   - SSL_CERT_FILE                            # the host's value, part of the keys
//!   - RUSTFLAGS=-Dwarnings                     # this value
//!   - {name: NPM_TOKEN, cache-key: excluded}   # the host's value, keyed by name only
//! packages:                                    # where `call: NAME VERSION` finds packages
//!   - /srv/rwx-packages                        # a directory of NAME/rwx-package.yml
//!   - https://github.com/rwx-cloud/packages.git   # a git repository, cloned into the cache
//! base-images:                                 # RWX's `base: {os, tag}` -> an image
//!   ubuntu 24.04: localhost:5000/ubuntu:24.04
//! local:
//!   max-size: 20GB                             # the local cache's budget, kept after each run
//!   tool-cache-max-age: 48h                    # tool caches older than this are not used
//! ```

use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostics;
use crate::model::SharedCacheDecl;
use crate::parse::{read_source, remote_caches};
use crate::yaml::{self, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub caches: Vec<SharedCacheDecl>,
    pub env: Vec<ConfigEnv>,
    /// Package sources: directories or git URLs (relative directories: to the config file).
    pub packages: Vec<String>,
    /// RWX's `base: {os, tag}` (`"ubuntu 24.04"` or `"ubuntu 24.04 1.1"`) -> image reference.
    pub base_images: Vec<(String, String)>,
    pub local: LocalConfig,
}

/// Settings of the local cache (`local:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalConfig {
    /// `max-size`: the budget, in bytes, that a prune after each run keeps the cache within.
    pub max_size: Option<u64>,
    /// `tool-cache-max-age`: a tool cache last written longer ago is neither used nor kept
    /// (`None`: RWX's 48 hours).
    pub tool_cache_max_age: Option<std::time::Duration>,
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
            Some("tool-cache-max-age") => {
                if let Some(text) = as_string(v, "`tool-cache-max-age`", errors) {
                    match crate::parse_duration(&text) {
                        Ok(age) => local.tool_cache_max_age = Some(age),
                        Err(e) => errors.push(v.error(format!("`tool-cache-max-age`: {e}"))),
                    }
                }
            }
            Some(other) => errors.push(unknown_key(
                k,
                other,
                "`local`",
                &["max-size", "tool-cache-max-age"],
            )),
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

/// `packages:`: a source or a list of them; a relative directory is relative to the file.
fn package_sources(
    file: &Path,
    node: &crate::yaml::Node,
    errors: &mut Vec<crate::Diagnostic>,
) -> Vec<String> {
    crate::parse::scalars::as_string_list(node, "`packages`", errors)
        .into_iter()
        .map(|(_, s)| {
            if is_git_url(&s) || Path::new(&s).is_absolute() {
                s
            } else {
                file.parent()
                    .unwrap_or(Path::new("."))
                    .join(s)
                    .display()
                    .to_string()
            }
        })
        .collect()
}

/// Whether a package source names a git repository rather than a directory.
pub fn is_git_url(s: &str) -> bool {
    s.contains("://") || s.ends_with(".git") || (s.contains('@') && s.contains(':'))
}

/// `base-images:`: a mapping from RWX's `os` (and `tag`) to an image reference.
fn base_images(
    node: &crate::yaml::Node,
    errors: &mut Vec<crate::Diagnostic>,
) -> Vec<(String, String)> {
    use crate::parse::scalars::{as_map, as_string};
    as_map(node, "`base-images`", errors)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| {
            let os = as_string(k, "an OS (`ubuntu 24.04`)", errors)?;
            let image = as_string(v, "an image reference", errors)?;
            Some((os.split_whitespace().collect::<Vec<_>>().join(" "), image))
        })
        .collect()
}

/// Reads a config file. Unknown keys are errors, as in pipeline files.
pub fn load_config(path: &Path) -> Result<Config, Diagnostics> {
    let text = read_source(path, "config file")?;
    let mut errors = Vec::new();
    let mut config = Config {
        path: path.to_path_buf(),
        caches: Vec::new(),
        env: Vec::new(),
        packages: Vec::new(),
        base_images: Vec::new(),
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
                        Value::Scalar { text, .. } if text == "packages" => {
                            config.packages = package_sources(path, value, &mut errors);
                        }
                        Value::Scalar { text, .. } if text == "base-images" => {
                            config.base_images = base_images(value, &mut errors);
                        }
                        Value::Scalar { text, .. } if text == "local" => {
                            config.local = local_config(value, &mut errors);
                        }
                        Value::Scalar { text, .. } => errors.push(
                            key.error(format!("unknown key `{text}` in the config file"))
                                .with_help("the config file's keys are `cache`, `env`, `packages`, `base-images` and `local`"),
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
