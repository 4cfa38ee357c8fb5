//! S3 credentials found where the AWS SDKs find them, against real servers on loopback: `s3s-fs`
//! (which checks every signature) for keys from instance metadata, container credentials and a
//! `credential_process`, and moto's STS for web identity. The metadata and container endpoints
//! are small HTTP servers of the test's own (no packaged server plays them).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{CacheDir, Counter, Fixture, RunResult};
use strata_testkit::{HttpServer, Server};

/// Every variable of the AWS credential chain, removed so that only what a test sets counts.
const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

fn pipeline(f: &Fixture, counter: &Counter, sleep: u32) {
    f.write(
        "strata.yml",
        &format!(
            "tasks:\n  - key: deps\n    run: |\n      {}\n      sleep {sleep}\n      echo ok > /opt/deps\n",
            counter.ping("deps")
        ),
    );
}

/// `strata run --json --remote URL` on `cache`, with exactly the AWS variables `vars` and a home
/// directory of its own (no `~/.aws` but what the test writes).
fn run(f: &Fixture, cache: &Path, url: &str, home: &Path, vars: &[(&str, &str)]) -> RunResult {
    let mut cmd = f.command(&["run", "--json", "--remote", url]);
    cmd.env("STRATA_CACHE_DIR", cache).env("HOME", home);
    for v in AWS_VARS {
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

/// The run published to the shared cache with the credentials it found: a second machine,
/// with the same credential source, restores the task from there instead of running it.
fn assert_shared(f: &Fixture, counter: &Counter, url: &str, home: &Path, vars: &[(&str, &str)]) {
    let r = run(f, f.cache.path(), url, home, vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(counter.take(), vec!["deps"]);
    let b = CacheDir::new("strata-cache-b-");
    let r = run(f, b.path(), url, home, vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(
        r.event("task-restored", "deps").map(|e| e["from"].clone()),
        Some(serde_json::json!(url.split('?').next().unwrap())),
        "{:?}",
        r.events
    );
    assert!(counter.take().is_empty());
}

fn s3_url(server: &Server) -> String {
    format!("s3://strata-ci?endpoint={}", server.endpoint())
}

/// `2026-12-01T21:30:05Z` for a time.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn credential_document(expires: SystemTime) -> String {
    serde_json::json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": strata_testkit::S3_ACCESS_KEY,
        "SecretAccessKey": strata_testkit::S3_SECRET_KEY,
        "Token": "session-token-from-the-platform",
        "Expiration": rfc3339(expires),
    })
    .to_string()
}

/// moto's server, which serves S3 too, with the bucket the tests publish to.
fn moto_with_bucket() -> Server {
    let moto = Server::moto();
    let created = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            &format!("{}/strata-ci", moto.endpoint()),
        ])
        .status()
        .unwrap();
    assert!(created.success(), "create the bucket in moto");
    moto
}

#[test]
fn instance_metadata_credentials_need_a_session_token_and_are_refreshed_before_they_expire() {
    let server = Server::s3("strata-ci");
    let fetched = Arc::new(AtomicUsize::new(0));
    let imds = {
        let fetched = fetched.clone();
        HttpServer::start(move |req| {
            let base = "/latest/meta-data/iam/security-credentials/";
            if req.method == "PUT" && req.path == "/latest/api/token" {
                return match req.header("x-aws-ec2-metadata-token-ttl-seconds") {
                    Some(_) => (200, "imds-session-token".into()),
                    None => (400, "missing ttl".into()),
                };
            }
            // IMDSv2: every read carries the session token.
            if req.header("x-aws-ec2-metadata-token") != Some("imds-session-token") {
                return (401, String::new());
            }
            match req.path.as_str() {
                p if p == base => (200, "ci-runner\n".into()),
                p if p == format!("{base}ci-runner") => {
                    fetched.fetch_add(1, Ordering::SeqCst);
                    // Valid for the refresh margin and 3 s: fresh at the first lookup, due for
                    // a refresh by the time the task (4 s) is published.
                    let expires = SystemTime::now() + Duration::from_secs(5 * 60 + 3);
                    (200, credential_document(expires))
                }
                _ => (404, String::new()),
            }
        })
    };
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 4);
    let home = tempfile::tempdir().unwrap();
    let url = s3_url(&server);
    let vars = [("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())];
    let r = run(&f, f.cache.path(), &url, home.path(), &vars);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    assert_eq!(counter.take(), vec!["deps"]);
    assert!(
        fetched.load(Ordering::SeqCst) >= 2,
        "credentials close to expiry must be fetched again during the run (fetched {})",
        fetched.load(Ordering::SeqCst)
    );
    // Every read carried the token: none was refused.
    assert!(
        imds.requests()
            .iter()
            .all(|r| r.method == "PUT" || r.header("x-aws-ec2-metadata-token").is_some())
    );
    let b = CacheDir::new("strata-cache-b-");
    let r = run(&f, b.path(), &url, home.path(), &vars);
    assert_eq!(
        r.event("task-restored", "deps").unwrap()["from"],
        "s3://strata-ci"
    );
    assert!(counter.take().is_empty());
}

#[test]
fn container_credentials_with_an_authorization_token_file() {
    let server = Server::s3("strata-ci");
    let endpoint = HttpServer::start(|req| {
        if req.header("authorization") != Some("Bearer ecs-token") {
            return (403, "no token".into());
        }
        match req.path.as_str() {
            "/v2/credentials/task-role" => (
                200,
                credential_document(SystemTime::now() + Duration::from_secs(3600)),
            ),
            _ => (404, String::new()),
        }
    });
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 0);
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "Bearer ecs-token\n").unwrap();
    let full_uri = format!("{}/v2/credentials/task-role", endpoint.endpoint());
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full_uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    assert_shared(&f, &counter, &s3_url(&server), home.path(), &vars);
}

#[test]
fn a_profile_with_a_credential_process() {
    let server = Server::s3("strata-ci");
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 0);
    let home = tempfile::tempdir().unwrap();
    let helper = home.path().join("helper.sh");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\necho '{}'\n",
            credential_document(SystemTime::now() + Duration::from_secs(3600))
                .replace("\"Code\":\"Success\",", "\"Version\":1,")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[default]\nregion = eu-west-1\n\n[profile ci]\ncredential_process = {}\n",
            helper.display()
        ),
    )
    .unwrap();
    let vars = [("AWS_PROFILE", "ci"), ("AWS_EC2_METADATA_DISABLED", "true")];
    assert_shared(&f, &counter, &s3_url(&server), home.path(), &vars);
    // The default profile has no credentials: unsigned requests, which the server refuses,
    // cost one warning and never the run.
    let b = CacheDir::new("strata-cache-c-");
    let r = run(
        &f,
        b.path(),
        &s3_url(&server),
        home.path(),
        &[("AWS_EC2_METADATA_DISABLED", "true")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(warnings(&r).len(), 1, "{:?}", warnings(&r));
    counter.take();
}

#[test]
fn web_identity_is_exchanged_with_sts_and_its_keys_sign_the_requests() {
    let moto = moto_with_bucket();
    let endpoint = moto.endpoint();
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 0);
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("oidc-token");
    // What GitHub Actions writes for a job with `id-token: write` (moto does not check it).
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm9yZy9yZXBvIn0.c2ln",
    )
    .unwrap();
    let url = format!("s3://strata-ci?endpoint={endpoint}");
    let vars = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/strata-ci"),
        ("AWS_ROLE_SESSION_NAME", "strata-test"),
        ("AWS_ENDPOINT_URL_STS", endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    assert_shared(&f, &counter, &url, home.path(), &vars);
    let log = moto.log();
    // STS was asked, and what went to S3 was signed with the temporary keys it issued (moto
    // issues `ASIA…` access keys) and carried their session token.
    assert!(log.contains("POST / "), "{log}");
    let signed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/strata-ci/") && l.contains("X-Amz-Credential="))
        .collect();
    assert!(!signed.is_empty(), "{log}");
    assert!(
        signed
            .iter()
            .all(|l| l.contains("X-Amz-Credential=ASIA") && l.contains("X-Amz-Security-Token=")),
        "{signed:?}"
    );
}

#[test]
fn static_keys_in_the_shared_credentials_file() {
    let server = Server::s3("strata-ci");
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 0);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("creds");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            strata_testkit::S3_ACCESS_KEY,
            strata_testkit::S3_SECRET_KEY
        ),
    )
    .unwrap();
    let vars = [
        ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
        ("AWS_PROFILE", "ci"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    assert_shared(&f, &counter, &s3_url(&server), home.path(), &vars);
}

#[test]
fn a_profile_with_a_role_and_a_web_identity_token_file() {
    let moto = moto_with_bucket();
    let endpoint = moto.endpoint();
    let f = Fixture::new();
    let counter = Counter::start();
    pipeline(&f, &counter, 0);
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("eks-token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln",
    )
    .unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile ci]\nrole_arn = arn:aws:iam::123456789012:role/from-profile\nweb_identity_token_file = {}\n",
            token_file.display()
        ),
    )
    .unwrap();
    let url = format!("s3://strata-ci?endpoint={endpoint}");
    let vars = [
        ("AWS_PROFILE", "ci"),
        ("AWS_ENDPOINT_URL_STS", endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    assert_shared(&f, &counter, &url, home.path(), &vars);
    assert!(
        moto.log()
            .lines()
            .any(|l| l.contains("/strata-ci/") && l.contains("X-Amz-Credential=ASIA")),
        "{}",
        moto.log()
    );
}
