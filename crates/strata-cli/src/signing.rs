//! Signing keys on the command line: `strata cache keygen`, and the keys a run signs with and
//! trusts, read from the environment.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use strata_cache::{PublicKey, SigningKey};

use crate::commands::{CliError, EXIT_BAD_INPUT, EXIT_INTERNAL};

/// `strata cache keygen NAME`: writes `NAME.secret` (readable by its owner only) and
/// `NAME.public` into `dir`, never over existing files, and prints the public key.
pub(crate) fn keygen(name: &str, dir: &Path) -> Result<u8, CliError> {
    let key = SigningKey::generate(name).map_err(|e| CliError {
        message: format!("error: cannot make key `{name}`: {e}"),
        code: match e {
            strata_cache::KeyError::Random { .. } => EXIT_INTERNAL,
            _ => EXIT_BAD_INPUT,
        },
    })?;
    let secret_path = dir.join(format!("{name}.secret"));
    let public_path = dir.join(format!("{name}.public"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(CliError {
                message: format!(
                    "error: {} already exists; it is not overwritten (remove it, or choose another NAME or --dir)",
                    path.display()
                ),
                code: EXIT_BAD_INPUT,
            });
        }
    }
    let write = |path: &Path, mode: u32, text: &str| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    let public = key.public_key().to_string();
    write(&secret_path, 0o600, &key.secret_text())
        .and_then(|()| write(&public_path, 0o644, &public))
        .map_err(|e| {
            let _ = std::fs::remove_file(&secret_path);
            CliError {
                message: format!("error: cannot write key `{name}` in {}: {e}", dir.display()),
                code: EXIT_INTERNAL,
            }
        })?;
    eprintln!(
        "wrote the secret key to {} (give it to the machines that publish, as $STRATA_SIGNING_KEY; keep it out of logs) and the public key to {} (trust it with `trusted-keys` or $STRATA_TRUSTED_KEYS):",
        secret_path.display(),
        public_path.display()
    );
    println!("{public}");
    Ok(0)
}

/// The keys `$STRATA_SIGNING_KEY` names (none when unset or empty).
pub(crate) fn signing_keys() -> Result<Vec<SigningKey>, CliError> {
    let Ok(value) = std::env::var("STRATA_SIGNING_KEY") else {
        return Ok(Vec::new());
    };
    strata_cache::parse_signing_keys(&value).map_err(|(item, e)| {
        CliError::bad_input(format!(
            "error: $STRATA_SIGNING_KEY (item {item}): {e}\n  (expected NAME:BASE64 as `strata cache keygen` writes it, or the absolute path of a file holding it)"
        ))
    })
}

/// The keys `$STRATA_TRUSTED_KEYS` names, trusted for every shared cache.
pub(crate) fn trusted_keys_for_all() -> Result<Vec<PublicKey>, CliError> {
    let Ok(value) = std::env::var("STRATA_TRUSTED_KEYS") else {
        return Ok(Vec::new());
    };
    strata_cache::parse_public_keys(&value).map_err(|(item, e)| {
        CliError::bad_input(format!("error: $STRATA_TRUSTED_KEYS (item {item}): {e}"))
    })
}
