//! The config file: settings of a machine rather than of a pipeline. Today that is the list of
//! shared caches:
//!
//! ```yaml
//! cache:
//!   - s3://ci-cache/strata?endpoint=http://minio.internal:9000
//!   - oci://registry.internal:5000/strata-cache,ro
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
}

/// Reads a config file. Unknown keys are errors, as in pipeline files.
pub fn load_config(path: &Path) -> Result<Config, Diagnostics> {
    let text = read_source(path, "config file")?;
    let mut errors = Vec::new();
    let mut config = Config {
        path: path.to_path_buf(),
        caches: Vec::new(),
    };
    match yaml::parse(&text) {
        Ok(root) => match &root.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    match &key.value {
                        Value::Scalar { text, .. } if text == "cache" => {
                            config.caches = remote_caches(value, "`cache`", &mut errors);
                        }
                        Value::Scalar { text, .. } => errors.push(
                            key.error(format!("unknown key `{text}` in the config file"))
                                .with_help("the config file has one key, `cache`"),
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
