//! Where S3 credentials come from: the places the AWS SDKs look, in their order, so that a CI
//! machine's platform credentials work without variables pasted into a pipeline.
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (`AWS_ROLE_SESSION_NAME`),
//!    exchanged with STS `AssumeRoleWithWebIdentity` — what GitHub Actions OIDC and EKS give;
//! 3. the shared `credentials` and `config` files (`AWS_SHARED_CREDENTIALS_FILE`,
//!    `AWS_CONFIG_FILE`, `~/.aws/…`) and the profile `AWS_PROFILE` (else `default`): static keys,
//!    `credential_process`, or `role_arn` with `web_identity_token_file`;
//! 4. ECS/EKS container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`,
//!    with `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`;
//! 5. EC2 instance metadata, IMDSv2 only (a session token first), unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it.
//!
//! The chain is resolved at the first request, not when the cache is opened (so `strata check`
//! never reaches for a metadata service). Temporary credentials are fetched again when they have
//! less than [`REFRESH_BEFORE`] left, so a long run never signs with expired keys; if that fetch
//! fails, the old ones are used while they last. No source at all: requests go unsigned (a
//! public bucket).
//!
//! Written here rather than taken from the AWS SDK: its credential providers are async (tokio)
//! and would more than double strata's build; this is the part of them strata needs, over the
//! blocking HTTP client strata already uses.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::client::{body_excerpt, elements, parse_time, unescape};

/// Temporary credentials are fetched again when they expire in less than this.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// After a failed resolution, how long before the chain is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Metadata services answer at once or not at all (off EC2, 169.254.169.254 may not answer).
const METADATA_TIMEOUT: Duration = Duration::from_secs(1);

/// Credentials, and when they stop working (`None`: never).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub expires: Option<SystemTime>,
    /// Which source gave them, for messages (never the keys themselves).
    pub source: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key", &self.access_key)
            .field("expires", &self.expires)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    pub(super) fn signing(&self) -> rusty_s3::Credentials {
        match &self.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(
                self.access_key.clone(),
                self.secret_key.clone(),
                token.clone(),
            ),
            None => rusty_s3::Credentials::new(self.access_key.clone(), self.secret_key.clone()),
        }
    }

    fn fresh(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|at| {
            at.duration_since(now)
                .is_ok_and(|left| left > REFRESH_BEFORE)
        })
    }

    fn valid(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct CredentialError {
    pub source_name: String,
    pub message: String,
}

fn fail(source: &str, message: impl std::fmt::Display) -> CredentialError {
    CredentialError {
        source_name: source.to_string(),
        message: message.to_string(),
    }
}

/// The variables and files the chain reads; the process's own in a real run, given whole in
/// unit tests.
#[derive(Clone)]
pub struct Environment {
    vars: std::collections::HashMap<String, String>,
    home: Option<PathBuf>,
}

impl Environment {
    pub fn of_process() -> Environment {
        Environment {
            vars: std::env::vars().collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    #[cfg(test)]
    fn of(vars: &[(&str, &str)], home: Option<&Path>) -> Environment {
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            home: home.map(Path::to_path_buf),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn aws_file(&self, var: &str, name: &str) -> Option<PathBuf> {
        match self.var(var) {
            Some(path) => Some(PathBuf::from(path)),
            None => self.home.as_ref().map(|h| h.join(".aws").join(name)),
        }
    }

    fn profile_name(&self) -> &str {
        self.var("AWS_PROFILE")
            .or_else(|| self.var("AWS_DEFAULT_PROFILE"))
            .unwrap_or("default")
    }

    /// The settings of the chosen profile: the credentials file's section over the config
    /// file's, as the SDKs merge them.
    fn profile(&self) -> Result<Profile, CredentialError> {
        let name = self.profile_name();
        let mut settings = Profile::default();
        if let Some(path) = self.aws_file("AWS_CONFIG_FILE", "config") {
            let section = if name == "default" {
                "default".to_string()
            } else {
                format!("profile {name}")
            };
            settings.merge(read_ini_section(&path, &section)?);
        }
        if let Some(path) = self.aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
            settings.merge(read_ini_section(&path, name)?);
        }
        Ok(settings)
    }

    /// The region the SDKs would use: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
    /// `region`, then (when `metadata` allows) the instance's.
    pub fn region(&self, metadata: bool) -> Option<String> {
        if let Some(r) = self
            .var("AWS_REGION")
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
        {
            return Some(r.to_string());
        }
        if let Some(r) = self.profile().ok().and_then(|p| p.get("region")) {
            return Some(r);
        }
        if metadata && !self.metadata_disabled() {
            let imds = Imds::new(self);
            return imds
                .token()
                .and_then(|t| imds.get("/latest/meta-data/placement/region", &t))
                .ok()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty());
        }
        None
    }

    fn metadata_disabled(&self) -> bool {
        self.var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// One profile's `key = value` settings.
#[derive(Debug, Default)]
struct Profile(Vec<(String, String)>);

impl Profile {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn merge(&mut self, other: Profile) {
        self.0.extend(other.0);
    }
}

/// The `key = value` lines of `[section]` in an INI file as the AWS CLI writes them (`#` and `;`
/// comments; names compared after trimming). A missing file is an empty profile.
fn read_ini_section(path: &Path, section: &str) -> Result<Profile, CredentialError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profile::default()),
        Err(e) => return Err(fail(&path.display().to_string(), e)),
    };
    let mut inside = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = name == section;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            found.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Profile(found))
}

/// The credentials of an S3 cache: resolved at first use, refreshed before they expire.
pub struct CredentialChain {
    env: Environment,
    state: Mutex<State>,
}

enum State {
    Unresolved,
    Resolved(Option<AwsCredentials>),
    Failed(CredentialError, SystemTime),
}

impl CredentialChain {
    pub fn new(env: Environment) -> CredentialChain {
        CredentialChain {
            env,
            state: Mutex::new(State::Unresolved),
        }
    }

    /// Fixed keys (tests, or a caller that has its own).
    pub fn with_keys(access_key: &str, secret_key: &str) -> CredentialChain {
        Self::fixed(Some(AwsCredentials {
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            session_token: None,
            expires: None,
            source: "given keys".into(),
        }))
    }

    /// Fixed credentials, or none (unsigned requests).
    pub fn fixed(credentials: Option<AwsCredentials>) -> CredentialChain {
        CredentialChain {
            env: Environment {
                vars: Default::default(),
                home: None,
            },
            state: Mutex::new(State::Resolved(credentials)),
        }
    }

    /// The credentials to sign the next request with (`None`: unsigned).
    pub fn current(&self) -> Result<Option<AwsCredentials>, CredentialError> {
        let now = SystemTime::now();
        let mut state = self.state.lock().expect("credentials lock");
        match &*state {
            State::Resolved(None) => return Ok(None),
            State::Resolved(Some(c)) if c.fresh(now) => return Ok(Some(c.clone())),
            State::Failed(e, at) if now.duration_since(*at).unwrap_or_default() < RETRY_AFTER => {
                return Err(e.clone());
            }
            _ => {}
        }
        match resolve(&self.env) {
            Ok(found) => {
                *state = State::Resolved(found.clone());
                Ok(found)
            }
            Err(e) => {
                // Temporary credentials that failed to refresh still work until they expire.
                if let State::Resolved(Some(old)) = &*state
                    && old.valid(now)
                {
                    return Ok(Some(old.clone()));
                }
                *state = State::Failed(e.clone(), now);
                Err(e)
            }
        }
    }
}

/// Walks the chain once: the first source that is configured gives the credentials, or its
/// error; none configured is `None`.
pub fn resolve(env: &Environment) -> Result<Option<AwsCredentials>, CredentialError> {
    if let (Some(key), Some(secret)) = (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Some(AwsCredentials {
            access_key: key.to_string(),
            secret_key: secret.to_string(),
            session_token: env.var("AWS_SESSION_TOKEN").map(str::to_string),
            expires: None,
            source: "the environment".into(),
        }));
    }
    if let (Some(token_file), Some(role)) = (
        env.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
        env.var("AWS_ROLE_ARN"),
    ) {
        return web_identity(
            env,
            Path::new(token_file),
            role,
            env.var("AWS_ROLE_SESSION_NAME"),
        )
        .map(Some);
    }
    let profile = env.profile()?;
    let source = format!("profile `{}`", env.profile_name());
    if let (Some(key), Some(secret)) = (
        profile.get("aws_access_key_id"),
        profile.get("aws_secret_access_key"),
    ) {
        return Ok(Some(AwsCredentials {
            access_key: key,
            secret_key: secret,
            session_token: profile.get("aws_session_token"),
            expires: None,
            source,
        }));
    }
    if let Some(command) = profile.get("credential_process") {
        return credential_process(&command, &source).map(Some);
    }
    if let (Some(role), Some(token_file)) = (
        profile.get("role_arn"),
        profile.get("web_identity_token_file"),
    ) {
        return web_identity(
            env,
            Path::new(&token_file),
            &role,
            profile.get("role_session_name").as_deref(),
        )
        .map(Some);
    }
    if let Some(url) = container_url(env) {
        return container(env, &url).map(Some);
    }
    if !env.metadata_disabled() {
        return Imds::new(env).credentials();
    }
    Ok(None)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(METADATA_TIMEOUT)
        .timeout(Duration::from_secs(10))
        .build()
}

fn http_err(source: &str, e: ureq::Error) -> CredentialError {
    match e {
        ureq::Error::Status(code, resp) => {
            fail(source, format!("HTTP {code} {}", body_excerpt(resp).trim()))
        }
        ureq::Error::Transport(t) => fail(source, strata_oci::retry::TransportFailure::new(&t)),
    }
}

/// STS `AssumeRoleWithWebIdentity`: an unsigned call, the token is the proof.
fn web_identity(
    env: &Environment,
    token_file: &Path,
    role: &str,
    session: Option<&str>,
) -> Result<AwsCredentials, CredentialError> {
    let source = "web identity (STS AssumeRoleWithWebIdentity)";
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| fail(source, format!("{}: {e}", token_file.display())))?;
    let endpoint = match env
        .var("AWS_ENDPOINT_URL_STS")
        .or_else(|| env.var("AWS_ENDPOINT_URL"))
    {
        Some(e) => e.trim_end_matches('/').to_string(),
        None => match env.region(false) {
            Some(region) => format!("https://sts.{region}.amazonaws.com"),
            None => "https://sts.amazonaws.com".to_string(),
        },
    };
    let session = session
        .map(str::to_string)
        .unwrap_or_else(|| format!("strata-{}", std::process::id()));
    let resp = agent()
        .post(&format!("{endpoint}/"))
        .send_form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", &session),
            ("WebIdentityToken", token.trim()),
        ])
        .map_err(|e| http_err(source, e))?;
    let body = resp.into_string().map_err(|e| fail(source, e))?;
    let field = |name: &str| {
        elements(&body, name)
            .next()
            .map(|text| unescape(text.trim()))
            .ok_or_else(|| fail(source, format!("no <{name}> in the answer")))
    };
    Ok(AwsCredentials {
        access_key: field("AccessKeyId")?,
        secret_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires: Some(
            parse_time(&field("Expiration")?).ok_or_else(|| fail(source, "bad <Expiration>"))?,
        ),
        source: format!("web identity (role {role})"),
    })
}

/// The JSON document container credentials, IMDS and `credential_process` all answer with.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialDocument {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default, alias = "SessionToken")]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    version: Option<u32>,
}

impl CredentialDocument {
    fn parse(text: &str, source: &str) -> Result<AwsCredentials, CredentialError> {
        let doc: CredentialDocument =
            serde_json::from_str(text).map_err(|e| fail(source, format!("bad answer: {e}")))?;
        if let Some(code) = doc.code.as_deref().filter(|c| *c != "Success") {
            return Err(fail(source, format!("answered {code}")));
        }
        if doc.version.is_some_and(|v| v != 1) {
            return Err(fail(source, "only Version 1 documents are understood"));
        }
        let expires = match doc.expiration.as_deref() {
            Some(at) => {
                Some(parse_time(at).ok_or_else(|| fail(source, format!("bad Expiration `{at}`")))?)
            }
            None => None,
        };
        Ok(AwsCredentials {
            access_key: doc.access_key_id,
            secret_key: doc.secret_access_key,
            session_token: doc.token.filter(|t| !t.is_empty()),
            expires,
            source: source.to_string(),
        })
    }
}

fn credential_process(command: &str, profile: &str) -> Result<AwsCredentials, CredentialError> {
    let source = format!("credential_process of {profile}");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(&source, e))?;
    if !out.status.success() {
        return Err(fail(
            &source,
            format!("`{command}` failed ({})", out.status),
        ));
    }
    CredentialDocument::parse(&String::from_utf8_lossy(&out.stdout), &source)
}

fn container_url(env: &Environment) -> Option<String> {
    if let Some(relative) = env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Some(format!("http://169.254.170.2{relative}"));
    }
    env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .map(str::to_string)
}

fn container(env: &Environment, url: &str) -> Result<AwsCredentials, CredentialError> {
    let source = "container credentials";
    let mut req = agent().get(url);
    let token = match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| fail(source, format!("{path}: {e}")))?
                .trim()
                .to_string(),
        ),
        None => env
            .var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(str::to_string),
    };
    if let Some(token) = token {
        req = req.set("Authorization", &token);
    }
    let text = req
        .call()
        .map_err(|e| http_err(source, e))?
        .into_string()
        .map_err(|e| fail(source, e))?;
    CredentialDocument::parse(&text, source)
}

/// The EC2 instance metadata service, version 2: every read carries a session token obtained
/// with a `PUT` (which a container's extra network hop, or an SSRF, cannot make).
struct Imds {
    endpoint: String,
    agent: ureq::Agent,
}

const IMDS_SOURCE: &str = "instance metadata (IMDSv2)";

impl Imds {
    fn new(env: &Environment) -> Imds {
        Imds {
            endpoint: env
                .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or("http://169.254.169.254")
                .trim_end_matches('/')
                .to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(METADATA_TIMEOUT)
                .timeout(Duration::from_secs(5))
                .build(),
        }
    }

    fn token(&self) -> Result<String, CredentialError> {
        self.agent
            .put(&format!("{}/latest/api/token", self.endpoint))
            .set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .call()
            .map_err(|e| http_err(IMDS_SOURCE, e))?
            .into_string()
            .map_err(|e| fail(IMDS_SOURCE, e))
    }

    fn get(&self, path: &str, token: &str) -> Result<String, CredentialError> {
        self.agent
            .get(&format!("{}{path}", self.endpoint))
            .set("X-aws-ec2-metadata-token", token)
            .call()
            .map_err(|e| http_err(IMDS_SOURCE, e))?
            .into_string()
            .map_err(|e| fail(IMDS_SOURCE, e))
    }

    /// `None` when there is no metadata service (not on EC2): the end of the chain.
    fn credentials(&self) -> Result<Option<AwsCredentials>, CredentialError> {
        let token = match self.token() {
            Ok(t) => t,
            // Nothing answers: not an EC2 instance.
            Err(_) => return Ok(None),
        };
        let base = "/latest/meta-data/iam/security-credentials/";
        let roles = self.get(base, &token)?;
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Ok(None); // an instance without a role
        };
        let text = self.get(&format!("{base}{role}"), &token)?;
        let mut found = CredentialDocument::parse(&text, IMDS_SOURCE)?;
        found.source = format!("instance metadata (role {role})");
        Ok(Some(found))
    }
}
#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn times_as_aws_writes_them() {
        let t = parse_time("2026-12-01T21:30:05Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_796_160_605
        );
        assert_eq!(
            parse_time("2026-12-01T21:30:05.123Z"),
            Some(t + Duration::from_millis(123))
        );
        assert_eq!(parse_time("2026-12-01T21:30:05+00:00"), Some(t));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn the_environment_comes_first_and_profiles_read_both_files() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n[ci]\naws_access_key_id=CI\naws_secret_access_key=cisecret\naws_session_token = citoken\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n# a comment\n[profile ci]\nregion = us-west-2\n",
        )
        .unwrap();
        let env = Environment::of(
            &[
                ("AWS_ACCESS_KEY_ID", "ENV"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ],
            Some(home.path()),
        );
        assert_eq!(resolve(&env).unwrap().unwrap().access_key, "ENV");
        let env = Environment::of(&[], Some(home.path()));
        let found = resolve(&env).unwrap().unwrap();
        assert_eq!(
            (found.access_key.as_str(), found.session_token),
            ("DEF", None)
        );
        assert_eq!(env.region(false).as_deref(), Some("eu-west-1"));
        let env = Environment::of(&[("AWS_PROFILE", "ci")], Some(home.path()));
        let found = resolve(&env).unwrap().unwrap();
        assert_eq!(found.access_key, "CI");
        assert_eq!(found.session_token.as_deref(), Some("citoken"));
        assert_eq!(env.region(false).as_deref(), Some("us-west-2"));
        let env = Environment::of(&[("AWS_REGION", "ap-south-1")], Some(home.path()));
        assert_eq!(env.region(false).as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn credential_process_output_is_used_with_its_expiry() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[profile helper]\ncredential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"PROC\", \"SecretAccessKey\": \"procsecret\", \"SessionToken\": \"proctoken\", \"Expiration\": \"2099-01-01T00:00:00Z\"}'\n",
        )
        .unwrap();
        let env = Environment::of(&[("AWS_PROFILE", "helper")], Some(home.path()));
        let found = resolve(&env).unwrap().unwrap();
        assert_eq!(found.access_key, "PROC");
        assert_eq!(found.session_token.as_deref(), Some("proctoken"));
        assert_eq!(found.expires, parse_time("2099-01-01T00:00:00Z"));
        std::fs::write(
            home.path().join(".aws/config"),
            "[profile helper]\ncredential_process = exit 3\n",
        )
        .unwrap();
        let e = resolve(&env).unwrap_err();
        assert!(
            e.to_string()
                .contains("credential_process of profile `helper`"),
            "{e}"
        );
    }

    #[test]
    fn nothing_configured_is_unsigned() {
        let env = Environment::of(&[("AWS_EC2_METADATA_DISABLED", "true")], None);
        assert_eq!(resolve(&env).unwrap(), None);
    }

    #[test]
    fn credentials_close_to_expiry_are_not_fresh_but_still_valid() {
        let now = SystemTime::now();
        let c = AwsCredentials {
            access_key: "K".into(),
            secret_key: "S".into(),
            session_token: None,
            expires: Some(now + Duration::from_secs(60)),
            source: "test".into(),
        };
        assert!(!c.fresh(now) && c.valid(now));
        let later = AwsCredentials {
            expires: Some(now + Duration::from_secs(3600)),
            ..c.clone()
        };
        assert!(later.fresh(now));
    }
}
