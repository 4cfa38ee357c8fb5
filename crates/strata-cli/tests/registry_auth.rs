//! Registry credentials as docker and podman find them, against Debian's `docker-registry` on
//! loopback: with htpasswd behind a credential helper of the test's own, and with token
//! authentication (the registry's `auth.token`) served by a token issuer of the test's own that
//! signs its tokens with a certificate the registry trusts, as Docker Hub and GHCR do it.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{CacheDir, Counter, Fixture, RunResult};
use strata_testkit::{HttpServer, Server};

const REGISTRY_VARS: &[&str] = &[
    "STRATA_REGISTRY_USERNAME",
    "STRATA_REGISTRY_PASSWORD",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "XDG_RUNTIME_DIR",
];

fn pipeline(f: &Fixture, counter: &Counter) {
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: deps\n    run: |\n      {}\n      echo ok > /opt/deps\n",
            counter.ping("deps")
        ),
    );
}

fn run(f: &Fixture, cache: &Path, url: &str, vars: &[(&str, String)]) -> RunResult {
    let mut cmd = f.command(&["run", "--json", "--remote", url]);
    cmd.env("STRATA_CACHE_DIR", cache);
    for v in REGISTRY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    RunResult::of(&out)
}

fn warnings(r: &RunResult) -> Vec<String> {
    r.events
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Published by one machine, restored by another, both finding credentials through `vars`.
fn assert_shared(f: &Fixture, counter: &Counter, url: &str, vars: &[(&str, String)]) {
    let r = run(f, f.cache.path(), url, vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert!(r.event("task-pushed", "deps").is_some(), "{:?}", r.events);
    assert_eq!(counter.take(), vec!["deps"]);
    let b = CacheDir::new("strata-cache-b-");
    let r = run(f, b.path(), url, vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert!(r.event("task-restored", "deps").is_some(), "{:?}", r.events);
    assert!(counter.take().is_empty());
}

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_credential_helper_named_in_docker_config_serves_the_registry() {
    let registry = Server::registry_with_auth("ci", "helper-pw");
    let url = format!("oci://{}/ci/cache", registry.host());
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter);
    let home = tempfile::tempdir().unwrap();
    let asked = home.path().join("asked");
    // A helper as ECR's and GCR's are: `get`, the server on stdin, JSON on stdout.
    executable(
        &home.path().join("bin/docker-credential-fleet"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\necho \"$server\" >> {}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"ci\",\"Secret\":\"helper-pw\"}}'\n",
            asked.display()
        ),
    );
    let docker = home.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{0}": {{}}}}, "credHelpers": {{"{0}": "fleet"}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let vars = [
        ("DOCKER_CONFIG", docker.display().to_string()),
        ("PATH", path_with(&home.path().join("bin"))),
    ];
    assert_shared(&f, &counter, &url, &vars);
    let asked = std::fs::read_to_string(&asked).unwrap();
    assert!(
        asked.lines().all(|l| l == registry.host()),
        "the helper is asked for the registry's host: {asked}"
    );
}

#[test]
fn podman_auth_file_is_read() {
    let registry = Server::registry_with_auth("ci", "podman-pw");
    let url = format!("oci://{}/ci/cache", registry.host());
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter);
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    // base64("ci:podman-pw")
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "Y2k6cG9kbWFuLXB3"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    assert_shared(
        &f,
        &counter,
        &url,
        &[("REGISTRY_AUTH_FILE", auth.display().to_string())],
    );
}

/// A token issuer as a registry's `auth.token.realm` names it: checks the client's basic
/// credentials (or, for an OAuth2 refresh token, the token), and issues a JWT for the scope asked,
/// signed with a key whose certificate the registry trusts.
struct TokenIssuer {
    server: HttpServer,
    /// The scopes and grant of every request it answered.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
}

const ISSUER: &str = "strata-test-issuer";

fn b64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace('+', " ")
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
                .replace("%20", " ")
        })
    })
}

impl TokenIssuer {
    fn start() -> TokenIssuer {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=strata-test-issuer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success());
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let seen = seen.clone();
            HttpServer::start(move |req| {
                let (grant, scope, subject) = if req.method == "POST" {
                    let body = String::from_utf8_lossy(&req.body).to_string();
                    if form_value(&body, "grant_type").as_deref() != Some("refresh_token")
                        || form_value(&body, "refresh_token").as_deref() != Some("refresh-me")
                    {
                        return (401, "bad refresh token".into());
                    }
                    (
                        "refresh_token",
                        form_value(&body, "scope").unwrap_or_default(),
                        "robot",
                    )
                } else {
                    // base64("ci:token-pw")
                    if req.header("authorization") != Some("Basic Y2k6dG9rZW4tcHc=") {
                        return (401, "bad credentials".into());
                    }
                    let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or("");
                    (
                        "password",
                        form_value(query, "scope").unwrap_or_default(),
                        "ci",
                    )
                };
                seen.lock()
                    .unwrap()
                    .push((grant.to_string(), scope.clone()));
                let access: Vec<serde_json::Value> = scope
                    .split(' ')
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({
                            "type": kind, "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [der_b64]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": subject, "aud": "strata-registry",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scope.len()),
                    "access": access,
                });
                let input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let signature = sign.wait_with_output().unwrap().stdout;
                let token = format!("{input}.{}", b64url(&signature));
                (
                    200,
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string(),
                )
            })
        };
        TokenIssuer {
            server,
            seen,
            _dir: dir,
            cert,
        }
    }
}

#[test]
fn token_authentication_with_scopes_as_docker_hub_and_ghcr_do_it() {
    let issuer = TokenIssuer::start();
    let realm = format!("{}/token", issuer.server.endpoint());
    let registry = Server::registry_with_token_auth(&realm, ISSUER, &issuer.cert);
    let url = format!("oci://{}/ci/cache", registry.host());
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter);

    // No credentials: the issuer refuses, one warning, the run passes.
    let r = run(&f, f.cache.path(), &url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(warnings(&r).len(), 1, "{:?}", warnings(&r));
    counter.take();

    // A user and password (docker's `auths`): tokens are fetched per scope.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"https://{}": {{"auth": "Y2k6dG9rZW4tcHc="}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let fresh = Fixture::new();
    pipeline(&fresh, &counter);
    assert_shared(
        &fresh,
        &counter,
        &url,
        &[("DOCKER_CONFIG", docker.path().display().to_string())],
    );
    let scopes: Vec<(String, String)> = issuer.seen.lock().unwrap().drain(..).collect();
    assert!(
        // The registry's challenge names the actions in no fixed order (`pull,push` or
        // `push,pull`), and strata asks for what it is challenged with.
        scopes.iter().any(|(_, s)| {
            s.strip_prefix("repository:ci/cache:")
                .is_some_and(|actions| {
                    let mut actions: Vec<&str> = actions.split(',').collect();
                    actions.sort_unstable();
                    actions == ["pull", "push"]
                })
        }),
        "publishing asks for push: {scopes:?}"
    );
    assert!(scopes.iter().all(|(g, _)| g == "password"), "{scopes:?}");

    // An identity token (what `docker login` keeps for Docker Hub, a helper's `<token>` user):
    // exchanged with an OAuth2 refresh-token grant.
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "refresh-me"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let third = CacheDir::new("strata-cache-c-");
    let r = run(
        &fresh,
        third.path(),
        &url,
        &[("DOCKER_CONFIG", docker.path().display().to_string())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert!(r.event("task-restored", "deps").is_some(), "{:?}", r.events);
    let scopes: Vec<(String, String)> = issuer.seen.lock().unwrap().drain(..).collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|(g, _)| g == "refresh_token"),
        "{scopes:?}"
    );
}
