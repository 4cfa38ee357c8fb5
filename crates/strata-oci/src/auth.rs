//! Registry credentials, found where docker, podman and skopeo find them, so that the helpers a
//! CI platform installs (ECR, GCR/Artifact Registry, GHCR, ACR) work unchanged:
//!
//! 1. `STRATA_REGISTRY_USERNAME` / `STRATA_REGISTRY_PASSWORD` (strata's own, for every host);
//! 2. the containers auth file podman and skopeo use: `$REGISTRY_AUTH_FILE`, else
//!    `$XDG_RUNTIME_DIR/containers/auth.json`, else `~/.config/containers/auth.json` (its `auths`,
//!    read like docker's);
//! 3. docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`): the host's `credHelpers` entry,
//!    then its `auths` entry (`auth`, or `identitytoken`), then `credsStore` — a helper is the
//!    program `docker-credential-<name>`, asked with `get` and the host on stdin, answering
//!    `{"Username", "Secret"}` (a `<token>` user means the secret is an identity token).
//!
//! Docker Hub is filed as `https://index.docker.io/v1/`; other hosts by name, with or without a
//! scheme. Looked up at the first challenge a registry makes, not before.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What to answer a registry's challenge with.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredential {
    /// A user and password (or an access token used as one, as ECR, GCR and GHCR helpers give).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`): exchanged at the token endpoint with
    /// `grant_type=refresh_token`.
    IdentityToken(String),
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryCredential::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, .. }}")
            }
            RegistryCredential::IdentityToken(_) => write!(f, "IdentityToken(..)"),
        }
    }
}

/// A credential source that is configured for the host and failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct CredentialError {
    pub source_name: String,
    pub message: String,
}

/// The variables and files the lookup reads (the process's own, or given whole in tests).
#[derive(Clone, Default)]
pub struct AuthEnvironment {
    vars: std::collections::HashMap<String, String>,
}

impl AuthEnvironment {
    pub fn of_process() -> AuthEnvironment {
        AuthEnvironment {
            vars: std::env::vars().collect(),
        }
    }

    #[cfg(test)]
    fn of(vars: &[(&str, &str)]) -> AuthEnvironment {
        AuthEnvironment {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn containers_auth_file(&self) -> Option<PathBuf> {
        if let Some(f) = self.var("REGISTRY_AUTH_FILE") {
            return Some(PathBuf::from(f));
        }
        let runtime = self
            .var("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("containers/auth.json"))
            .filter(|p| p.is_file());
        runtime.or_else(|| {
            self.var("HOME")
                .map(|h| PathBuf::from(h).join(".config/containers/auth.json"))
        })
    }

    fn docker_config(&self) -> Option<PathBuf> {
        match self.var("DOCKER_CONFIG") {
            Some(d) => Some(PathBuf::from(d).join("config.json")),
            None => self
                .var("HOME")
                .map(|h| PathBuf::from(h).join(".docker/config.json")),
        }
    }
}

/// The names a host may be filed under in an auth file.
fn names_of(host: &str) -> Vec<String> {
    let mut names = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if matches!(
        host,
        "docker.io" | "registry-1.docker.io" | "index.docker.io"
    ) {
        names.extend(
            [
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
            ]
            .map(String::from),
        );
    }
    names
}

/// The entry of `object` (an `auths` or `credHelpers` map) for `host`, compared without scheme
/// or trailing path as docker does.
fn entry_for<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    host: &str,
) -> Option<&'a serde_json::Value> {
    let names = names_of(host);
    object.iter().find_map(|(k, v)| {
        let bare = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let bare = bare.strip_suffix("/v1").unwrap_or(bare);
        (names.iter().any(|n| n == k) || names.iter().any(|n| n == bare)).then_some(v)
    })
}

fn read_json(path: &std::path::Path) -> Result<Option<serde_json::Value>, CredentialError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CredentialError {
                source_name: path.display().to_string(),
                message: format!("not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialError {
            source_name: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// An `auths` entry: `auth` (base64 of `user:password`) or `identitytoken`.
fn from_auths_entry(entry: &serde_json::Value) -> Option<RegistryCredential> {
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
    {
        return Some(RegistryCredential::IdentityToken(token.to_string()));
    }
    let decoded = crate::registry::base64_decode(entry.get("auth")?.as_str()?)?;
    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryCredential::Basic {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// The credentials for `host`, or `None` when nothing is configured for it.
pub fn credentials_for(
    env: &AuthEnvironment,
    host: &str,
) -> Result<Option<RegistryCredential>, CredentialError> {
    if let (Some(u), Some(p)) = (
        env.var("STRATA_REGISTRY_USERNAME"),
        env.var("STRATA_REGISTRY_PASSWORD"),
    ) {
        return Ok(Some(RegistryCredential::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    if let Some(path) = env.containers_auth_file()
        && let Some(config) = read_json(&path)?
        && let Some(entry) = config
            .get("auths")
            .and_then(|a| a.as_object())
            .and_then(|a| entry_for(a, host))
        && let Some(found) = from_auths_entry(entry)
    {
        return Ok(Some(found));
    }
    let Some(path) = env.docker_config() else {
        return Ok(None);
    };
    let Some(config) = read_json(&path)? else {
        return Ok(None);
    };
    if let Some(helper) = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| entry_for(h, host))
        .and_then(|h| h.as_str())
    {
        return ask_helper(env, helper, host);
    }
    if let Some(found) = config
        .get("auths")
        .and_then(|a| a.as_object())
        .and_then(|a| entry_for(a, host))
        .and_then(from_auths_entry)
    {
        return Ok(Some(found));
    }
    if let Some(store) = config.get("credsStore").and_then(|s| s.as_str()) {
        return ask_helper(env, store, host);
    }
    Ok(None)
}

/// `docker-credential-<helper> get`, with the server's name on stdin. "Not found" (what a helper
/// says for a host it has nothing for) is `None`.
fn ask_helper(
    env: &AuthEnvironment,
    helper: &str,
    host: &str,
) -> Result<Option<RegistryCredential>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    let fail = |message: String| CredentialError {
        source_name: format!("credential helper `{program}`"),
        message,
    };
    let mut cmd = Command::new(&program);
    if let Some(path) = env.var("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot be started: {e}")))?;
    // Docker Hub is asked for under its historical name, as docker asks.
    let server = if names_of(host)
        .iter()
        .any(|n| n == "https://index.docker.io/v1/")
    {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let said = format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("failed ({}): {said}", out.status)));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer = serde_json::from_str(stdout.trim())
        .map_err(|e| fail(format!("answered something other than credentials: {e}")))?;
    Ok(Some(if answer.username == "<token>" {
        RegistryCredential::IdentityToken(answer.secret)
    } else {
        RegistryCredential::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let path = home.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        home
    }

    fn basic(u: &str, p: &str) -> Option<RegistryCredential> {
        Some(RegistryCredential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn docker_auths_with_or_without_a_scheme_and_docker_hub_by_its_old_name() {
        // "ci:pw" and "hub:hubpw" in base64.
        let home = home_with(&[(
            ".docker/config.json",
            r#"{"auths": {"https://reg.example:5000": {"auth": "Y2k6cHc="},
                          "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
                          "tok.example": {"identitytoken": "refresh-me"}}}"#,
        )]);
        let env = AuthEnvironment::of(&[("HOME", home.path().to_str().unwrap())]);
        assert_eq!(
            credentials_for(&env, "reg.example:5000").unwrap(),
            basic("ci", "pw")
        );
        assert_eq!(
            credentials_for(&env, "docker.io").unwrap(),
            basic("hub", "hubpw")
        );
        assert_eq!(
            credentials_for(&env, "tok.example").unwrap(),
            Some(RegistryCredential::IdentityToken("refresh-me".into()))
        );
        assert_eq!(credentials_for(&env, "other.example").unwrap(), None);
    }

    #[test]
    fn the_containers_auth_file_comes_before_docker_and_strata_variables_before_both() {
        let home = home_with(&[
            (
                ".docker/config.json",
                r#"{"auths": {"reg.example": {"auth": "Y2k6cHc="}}}"#,
            ),
            (
                "podman.json",
                r#"{"auths": {"reg.example": {"auth": "aHViOmh1YnB3"}}}"#,
            ),
        ]);
        let h = home.path().to_str().unwrap();
        let file = format!("{h}/podman.json");
        let env = AuthEnvironment::of(&[("HOME", h), ("REGISTRY_AUTH_FILE", &file)]);
        assert_eq!(
            credentials_for(&env, "reg.example").unwrap(),
            basic("hub", "hubpw")
        );
        let env = AuthEnvironment::of(&[
            ("HOME", h),
            ("REGISTRY_AUTH_FILE", &file),
            ("STRATA_REGISTRY_USERNAME", "mine"),
            ("STRATA_REGISTRY_PASSWORD", "secret"),
        ]);
        assert_eq!(
            credentials_for(&env, "reg.example").unwrap(),
            basic("mine", "secret")
        );
    }

    #[test]
    fn credential_helpers_per_host_then_the_store() {
        let home = home_with(&[
            (
                "bin/docker-credential-fleet",
                "#!/bin/sh\nread host\ncase \"$host\" in\n  reg.example) echo '{\"ServerURL\":\"reg.example\",\"Username\":\"AWS\",\"Secret\":\"ecr-token\"}' ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
            ),
            (
                "bin/docker-credential-store",
                "#!/bin/sh\nread host\necho \"{\\\"Username\\\":\\\"<token>\\\",\\\"Secret\\\":\\\"id-for-$host\\\"}\"\n",
            ),
            (
                ".docker/config.json",
                r#"{"credHelpers": {"reg.example": "fleet", "missing.example": "fleet"}, "credsStore": "store"}"#,
            ),
        ]);
        for helper in ["fleet", "store"] {
            let p = home.path().join(format!("bin/docker-credential-{helper}"));
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let h = home.path().to_str().unwrap();
        let path = format!("{h}/bin:/usr/bin:/bin");
        let env = AuthEnvironment::of(&[("HOME", h), ("PATH", &path)]);
        assert_eq!(
            credentials_for(&env, "reg.example").unwrap(),
            basic("AWS", "ecr-token")
        );
        assert_eq!(credentials_for(&env, "missing.example").unwrap(), None);
        assert_eq!(
            credentials_for(&env, "other.example").unwrap(),
            Some(RegistryCredential::IdentityToken(
                "id-for-other.example".into()
            ))
        );
        std::fs::write(
            home.path().join(".docker/config.json"),
            r#"{"credHelpers": {"reg.example": "absent"}}"#,
        )
        .unwrap();
        let e = credentials_for(&env, "reg.example").unwrap_err();
        assert!(e.to_string().contains("docker-credential-absent"), "{e}");
    }
}
