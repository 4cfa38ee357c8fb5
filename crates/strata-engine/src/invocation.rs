//! What started this run and the values it gives expressions: the trigger chosen from the CI
//! strata runs in (GitHub Actions, GitLab CI, or by hand), its `if`, its `init` computed from
//! `event.*`, `--init` overrides, secrets, and `run.*`. Everything an expression can read before
//! any task runs is in the [`Scope`] built here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_pipeline::expr::{Scope, Value, parse_template};
use strata_pipeline::{Pipeline, Text, Trigger, TriggerEvent};

use crate::checkout::Checkout;

/// Where the run's inputs come from besides the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct InvocationOptions {
    /// `--init NAME=VALUE`, over every trigger's.
    pub init: Vec<(String, String)>,
    /// `--secrets FILE`: `NAME=VALUE` lines.
    pub secrets_file: Option<PathBuf>,
    /// Only keys are worked out (`strata plan`, `strata explain`): they take a secret by its
    /// name, never its value, so a secret nobody gave is no error.
    pub keys_only: bool,
}

/// The outcome: the scope, and what the trigger decided.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub scope: Scope,
    /// The same scope with every secret replaced by its name (`${{ secrets.TOKEN }}`): what a
    /// key is computed with, so that a secret enters keys by name only.
    pub key_scope: Scope,
    /// The trigger chosen, if any (`None`: started by hand).
    pub trigger: Option<TriggerEvent>,
    /// Tasks the trigger targets (all when empty).
    pub targets: Vec<String>,
    /// The trigger says `reset-tool-cache: true`: tasks start without their tool caches.
    pub reset_tool_cache: bool,
    /// Why nothing runs: the trigger's `if` was false, or no trigger answers this event.
    pub skip: Option<String>,
    /// Every secret value, to be masked wherever output is shown or kept.
    pub secret_values: Vec<String>,
    /// Vault items (secrets, vars, tokens) nobody gave, each with how to give it: an error
    /// only if a task that runs reads one.
    pub unresolved: Vec<(Vec<String>, String)>,
}

/// The environment of the process, as a lookup (so tests can give their own).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `run.*`: `dir` is the directory of the run's definitions (`.rwx`, else the definition
/// file's own; `mint-dir` is its older name).
fn run_namespace(pipeline: &Pipeline, env: EnvLookup<'_>) -> Value {
    let dir = strata_pipeline::calls::run_dir(&pipeline.path)
        .display()
        .to_string();
    let id = env("GITHUB_RUN_ID")
        .or_else(|| env("CI_PIPELINE_ID"))
        .unwrap_or_else(|| format!("local-{}", std::process::id()));
    let mut run = BTreeMap::new();
    run.insert("dir".into(), Value::from(dir.clone()));
    run.insert("mint-dir".into(), Value::from(dir));
    run.insert("id".into(), Value::from(id));
    run.insert(
        "definition-path".into(),
        Value::from(pipeline.path.display().to_string()),
    );
    Value::Object(run)
}

/// `event.git.*` from the checkout (what a push of it would say).
fn git_event(checkout: Option<&Checkout>) -> BTreeMap<String, Value> {
    let mut git = BTreeMap::new();
    if let Some(c) = checkout {
        git.insert("sha".into(), Value::from(c.sha.clone()));
        git.insert("ref".into(), Value::from(c.git_ref()));
        if let Some(b) = &c.branch {
            git.insert("branch".into(), Value::from(b.clone()));
        }
        if let Some(t) = &c.tag {
            git.insert("tag".into(), Value::from(t.clone()));
        }
        if let Some(u) = c.remotes.first() {
            git.insert("repository-url".into(), Value::from(u.clone()));
            git.insert("url".into(), Value::from(u.clone()));
        }
    }
    git
}

fn json_to_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect())
        }
    }
}

/// The CI event strata runs for: which trigger answers it, `event.*`, and the pull request
/// action if there is one.
struct CiEvent {
    event: TriggerEvent,
    /// What the trigger's `event.*` holds.
    tree: BTreeMap<String, Value>,
    action: Option<String>,
}

fn github_event(env: EnvLookup<'_>, checkout: Option<&Checkout>) -> Option<CiEvent> {
    if env("GITHUB_ACTIONS").as_deref() != Some("true") {
        return None;
    }
    let name = env("GITHUB_EVENT_NAME").unwrap_or_default();
    let event = match name.as_str() {
        "push" => TriggerEvent::GithubPush,
        "pull_request" | "pull_request_target" => TriggerEvent::GithubPullRequest,
        "merge_group" => TriggerEvent::GithubMergeGroup,
        "schedule" => TriggerEvent::Cron,
        "workflow_dispatch" => TriggerEvent::Dispatch,
        _ => return None,
    };
    let payload: serde_json::Value = env("GITHUB_EVENT_PATH")
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let action = payload
        .get("action")
        .and_then(|a| a.as_str())
        .map(str::to_string);
    let mut git = git_event(checkout);
    let pr_head = payload.pointer("/pull_request/head");
    if let Some(sha) = pr_head
        .and_then(|h| h.get("sha"))
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .or_else(|| env("GITHUB_SHA"))
    {
        git.insert("sha".into(), Value::from(sha));
    }
    let branch = env("GITHUB_HEAD_REF")
        .filter(|b| !b.is_empty())
        .or_else(|| match env("GITHUB_REF_TYPE").as_deref() {
            Some("branch") => env("GITHUB_REF_NAME"),
            _ => None,
        });
    if let Some(b) = branch {
        git.insert("branch".into(), Value::from(b));
    }
    if env("GITHUB_REF_TYPE").as_deref() == Some("tag")
        && let Some(t) = env("GITHUB_REF_NAME")
    {
        git.insert("tag".into(), Value::from(t));
    }
    if let Some(r) = env("GITHUB_REF") {
        git.insert("ref".into(), Value::from(r));
    }
    if let (Some(server), Some(repo)) = (env("GITHUB_SERVER_URL"), env("GITHUB_REPOSITORY")) {
        let url = format!("{server}/{repo}.git");
        git.insert("repository-url".into(), Value::from(url.clone()));
        git.insert("url".into(), Value::from(url));
    }
    let mut github = BTreeMap::new();
    let key = match event {
        TriggerEvent::GithubPullRequest => "pull_request",
        TriggerEvent::GithubMergeGroup => "merge_group",
        TriggerEvent::Cron => "schedule",
        TriggerEvent::Dispatch => "workflow_dispatch",
        _ => "push",
    };
    github.insert(key.to_string(), json_to_value(payload));
    let mut tree = BTreeMap::new();
    tree.insert("git".into(), Value::Object(git));
    tree.insert("github".into(), Value::Object(github));
    Some(CiEvent {
        event,
        tree,
        action,
    })
}

fn gitlab_event(env: EnvLookup<'_>, checkout: Option<&Checkout>) -> Option<CiEvent> {
    if env("GITLAB_CI").as_deref() != Some("true") {
        return None;
    }
    let source = env("CI_PIPELINE_SOURCE").unwrap_or_default();
    let tag = env("CI_COMMIT_TAG").filter(|t| !t.is_empty());
    let event = match (source.as_str(), &tag) {
        ("merge_request_event", _) => TriggerEvent::GitlabMergeRequest,
        ("push", Some(_)) => TriggerEvent::GitlabTagPush,
        ("push", None) => TriggerEvent::GitlabPush,
        ("schedule", _) => TriggerEvent::Cron,
        _ => return None,
    };
    let mut git = git_event(checkout);
    if let Some(sha) = env("CI_COMMIT_SHA") {
        git.insert("sha".into(), Value::from(sha));
    }
    if let Some(b) = env("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME").or_else(|| env("CI_COMMIT_BRANCH"))
    {
        git.insert("branch".into(), Value::from(b.clone()));
        git.insert("ref".into(), Value::from(format!("refs/heads/{b}")));
    }
    if let Some(t) = &tag {
        git.insert("tag".into(), Value::from(t.clone()));
        git.insert("ref".into(), Value::from(format!("refs/tags/{t}")));
    }
    if let Some(url) = env("CI_REPOSITORY_URL") {
        git.insert("repository-url".into(), Value::from(url));
    }
    let mut gitlab = BTreeMap::new();
    for (k, v) in [
        ("project-path", "CI_PROJECT_PATH"),
        ("merge-request-iid", "CI_MERGE_REQUEST_IID"),
        ("pipeline-source", "CI_PIPELINE_SOURCE"),
    ] {
        if let Some(value) = env(v) {
            gitlab.insert(k.to_string(), Value::from(value));
        }
    }
    let mut tree = BTreeMap::new();
    tree.insert("git".into(), Value::Object(git));
    tree.insert("gitlab".into(), Value::Object(gitlab));
    Some(CiEvent {
        event,
        tree,
        action: None,
    })
}

/// A value a vault holds, as an expression reads it.
#[derive(Debug, Clone, PartialEq)]
struct VaultItem {
    /// Where expressions read it (`vaults.prod.secrets.DB`).
    path: Vec<String>,
    /// What it is looked up by: `DB` for a secret or var, the path inside the vault for the
    /// rest (`github-apps.bot.token`).
    name: String,
    /// Secrets, tokens and OIDC tokens are secret; `vars` are not.
    secret: bool,
}

impl VaultItem {
    /// `secrets.N`, `vaults.V.secrets.N`, `vaults.V.vars.N`, `vaults.V.<kind>.…` (GitHub app
    /// tokens, OIDC tokens, service accounts) and `github-apps.A.…`.
    fn of(path: &[String]) -> Option<VaultItem> {
        let item = |path: &[String], name: String, secret| VaultItem {
            path: path.to_vec(),
            name,
            secret,
        };
        match path.first().map(String::as_str)? {
            "secrets" if path.len() >= 2 => Some(item(&path[..2], path[1].clone(), true)),
            "github-apps" if path.len() >= 2 => Some(item(path, path.join("."), true)),
            "vaults" if path.len() >= 4 => match path[2].as_str() {
                "secrets" => Some(item(&path[..4], path[3].clone(), true)),
                "vars" => Some(item(&path[..4], path[3].clone(), false)),
                _ => Some(item(path, path[2..].join("."), true)),
            },
            _ => None,
        }
    }

    /// The variable it is read from: `STRATA_SECRET_<NAME>` or `STRATA_VAR_<NAME>`, the name
    /// upper-cased with `-` and `.` as `_`.
    fn variable(&self) -> String {
        let kind = if self.secret { "SECRET" } else { "VAR" };
        format!(
            "STRATA_{kind}_{}",
            self.name.to_ascii_uppercase().replace(['-', '.'], "_")
        )
    }

    /// From its variable, else (secrets) the secrets file; a GitHub app's token falls back to
    /// `$GITHUB_TOKEN`, the token GitHub Actions gives a job.
    fn lookup(&self, env: EnvLookup<'_>, file: &BTreeMap<String, String>) -> Option<String> {
        env(&self.variable())
            .or_else(|| self.secret.then(|| file.get(&self.name).cloned()).flatten())
            .or_else(|| {
                let app_token =
                    self.name.starts_with("github-apps.") && self.name.ends_with(".token");
                app_token.then(|| env("GITHUB_TOKEN")).flatten()
            })
    }

    fn hint(&self) -> String {
        if self.secret {
            format!(
                "`{}` (set {} or give `{}` in --secrets FILE)",
                self.path.join("."),
                self.variable(),
                self.name
            )
        } else {
            format!("`{}` (set {})", self.path.join("."), self.variable())
        }
    }
}

fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secrets file {}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{}:{}: expected NAME=VALUE", path.display(), i + 1));
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Every vault item the pipeline's expressions read.
fn referenced_vault_items(texts: &[&Text]) -> Vec<VaultItem> {
    let mut out: Vec<VaultItem> = Vec::new();
    for t in texts {
        let Ok(template) = parse_template(&t.raw) else {
            continue;
        };
        for r in template.references() {
            if let Some(item) = VaultItem::of(&r.path)
                && !out.contains(&item)
            {
                out.push(item);
            }
        }
    }
    out
}

/// Every text of the pipeline an expression may be in.
pub(crate) fn all_texts(pipeline: &Pipeline) -> Vec<&Text> {
    let mut texts: Vec<&Text> = pipeline.tasks.iter().flat_map(|t| t.texts()).collect();
    for t in &pipeline.triggers.triggers {
        texts.extend(t.init.iter().map(|(_, v)| v));
        texts.extend(t.condition.iter());
    }
    texts.extend(pipeline.triggers.cli_init.iter().map(|(_, v)| v));
    texts
}

fn render(text: &Text, scope: &Scope) -> Result<strata_pipeline::expr::Rendered, String> {
    let template = parse_template(&text.raw).map_err(|e| e.message)?;
    template.render(scope).map_err(|e| e.message)
}

/// Works out the run's scope and trigger. `env` is the process environment.
pub fn invoke(
    pipeline: &Pipeline,
    checkout: Option<&Checkout>,
    options: &InvocationOptions,
    env: EnvLookup<'_>,
) -> Result<Invocation, String> {
    let mut scope = Scope::new();
    scope.insert(&["run"], run_namespace(pipeline, env));
    // Secrets first: trigger values may read them.
    let file = match &options.secrets_file {
        Some(p) => read_secrets_file(p)?,
        None => BTreeMap::new(),
    };
    let texts = all_texts(pipeline);
    let mut secret_values = Vec::new();
    let mut secret_paths: Vec<Vec<String>> = Vec::new();
    let mut unresolved = Vec::new();
    scope.mark_secret(&["secrets"]);
    for item in referenced_vault_items(&texts) {
        let p: Vec<&str> = item.path.iter().map(String::as_str).collect();
        if item.secret {
            scope.mark_secret(&p);
        }
        match item.lookup(env, &file) {
            Some(v) if item.secret => {
                secret_values.push(v.clone());
                scope.insert_secret(&p, Value::from(v));
                secret_paths.push(item.path.clone());
            }
            Some(v) => scope.insert(&p, Value::from(v)),
            // Nothing runs: a key has the secret's name in its place (below), whatever the
            // value. So does the scope: an `if:` that asks whether the secret is set sees it
            // set, as a run that is given it would.
            None if item.secret && options.keys_only => {
                let name = format!("${{{{ {} }}}}", item.path.join("."));
                scope.insert_secret(&p, Value::from(name));
                secret_paths.push(item.path.clone());
            }
            // Needed only if a task that runs reads it: see `missing_values`.
            None => unresolved.push((item.path.clone(), item.hint())),
        }
    }
    if let Some(token) = env("GITHUB_TOKEN") {
        secret_values.push(token.clone());
        scope.insert_secret(&["github", "token"], Value::from(token));
        secret_paths.push(vec!["github".into(), "token".into()]);
    }

    let ci = github_event(env, checkout).or_else(|| gitlab_event(env, checkout));
    let mut init: BTreeMap<String, strata_pipeline::expr::Rendered> = BTreeMap::new();
    let mut trigger = None;
    let mut targets = Vec::new();
    let mut reset_tool_cache = false;
    let mut skip = None;
    match &ci {
        Some(ci) => {
            scope.insert(&["event"], Value::Object(ci.tree.clone()));
            let candidates: Vec<&Trigger> = pipeline
                .triggers
                .for_event(ci.event)
                .filter(|t| {
                    t.actions.is_empty()
                        || ci
                            .action
                            .as_ref()
                            .is_none_or(|a| t.actions.iter().any(|x| x == a))
                })
                .collect();
            if candidates.is_empty() && !pipeline.triggers.triggers.is_empty() {
                skip = Some(format!(
                    "no trigger in {} answers {} (its `on:` names {})",
                    pipeline.path.display(),
                    ci.event.name(),
                    trigger_names(pipeline)
                ));
            }
            // The first trigger whose `if` holds.
            let mut chosen = None;
            for t in &candidates {
                match &t.condition {
                    Some(c) => {
                        let template = parse_template(&c.raw).map_err(|e| e.message)?;
                        let v = template
                            .evaluate(&scope)
                            .map_err(|e| format!("`on.{}.if`: {}", t.event.name(), e.message))?;
                        if v.truthy() {
                            chosen = Some(*t);
                            break;
                        }
                    }
                    None => {
                        chosen = Some(*t);
                        break;
                    }
                }
            }
            match chosen {
                Some(t) => {
                    trigger = Some(t.event);
                    reset_tool_cache = t.reset_tool_cache;
                    targets = t.target.iter().map(|(n, _)| n.clone()).collect();
                    for (name, text) in &t.init {
                        let v = render(text, &scope)
                            .map_err(|e| format!("`on.{}.init.{name}`: {e}", t.event.name()))?;
                        init.insert(name.clone(), v);
                    }
                }
                None if skip.is_none() && !candidates.is_empty() => {
                    skip = Some(format!(
                        "the `if` of every {} trigger is false",
                        ci.event.name()
                    ));
                }
                None => {}
            }
        }
        None => {
            // By hand: `event.git.*` describes the checkout, and the init values that push
            // triggers derive from it are derived the same way; then `on.cli.init`.
            let git = git_event(checkout);
            let mut event = BTreeMap::new();
            event.insert("git".to_string(), Value::Object(git));
            scope.insert(&["event"], Value::Object(event));
            let push = pipeline.triggers.triggers.iter().find(|t| {
                matches!(
                    t.event,
                    TriggerEvent::GithubPush
                        | TriggerEvent::GitlabPush
                        | TriggerEvent::ForgejoPush
                        | TriggerEvent::OriginPush
                )
            });
            if let Some(t) = push {
                for (name, text) in &t.init {
                    let only_git = parse_template(&text.raw).is_ok_and(|tp| {
                        tp.references().iter().all(|r| {
                            r.path.first().map(String::as_str) == Some("event")
                                && r.path.get(1).map(String::as_str) == Some("git")
                        })
                    });
                    if only_git && let Ok(v) = render(text, &scope) {
                        init.insert(name.clone(), v);
                    }
                }
            }
            for (name, text) in &pipeline.triggers.cli_init {
                let v = render(text, &scope).map_err(|e| format!("`on.cli.init.{name}`: {e}"))?;
                init.insert(name.clone(), v);
            }
        }
    }
    for (k, v) in &options.init {
        init.insert(
            k.clone(),
            strata_pipeline::expr::Rendered {
                text: v.clone(),
                secret: false,
            },
        );
    }
    scope.insert(&["init"], Value::Object(BTreeMap::new()));
    for (k, v) in init {
        if v.secret {
            // An init value computed from a secret is a secret too.
            scope.insert_secret(&["init", &k], Value::from(v.text));
            secret_paths.push(vec!["init".into(), k]);
        } else {
            scope.insert(&["init", &k], Value::from(v.text));
        }
    }
    let mut key_scope = scope.clone();
    for path in &secret_paths {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        key_scope.insert(&p, Value::from(format!("${{{{ {} }}}}", path.join("."))));
    }
    secret_values.retain(|v| !v.is_empty());
    secret_values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    secret_values.dedup();
    Ok(Invocation {
        scope,
        key_scope,
        trigger,
        targets,
        reset_tool_cache,
        skip,
        secret_values,
        unresolved,
    })
}

/// Whether anything of the run needs to know the checkout's commit: a `git/clone` of it, a
/// trigger, or an expression reading `event`. Asking git costs a few processes, which a
/// pipeline without any of these should not pay on every run.
pub(crate) fn needs_checkout(pipeline: &Pipeline) -> bool {
    !pipeline.triggers.triggers.is_empty()
        || !pipeline.triggers.cli_init.is_empty()
        || pipeline.tasks.iter().any(|t| t.is_source())
        || all_texts(pipeline)
            .iter()
            .any(|t| t.raw.contains("${{") && t.raw.contains("event"))
}

fn trigger_names(pipeline: &Pipeline) -> String {
    let mut names: Vec<&str> = pipeline
        .triggers
        .triggers
        .iter()
        .map(|t| t.event.name())
        .collect();
    names.dedup();
    names.join(", ")
}

/// What the tasks that will run read and nobody gave: init values (unless read with `?.`) and
/// vault items, each named with where it is read or how to give it.
pub(crate) struct Missing {
    pub(crate) init: Vec<String>,
    pub(crate) vault: Vec<String>,
}

pub(crate) fn missing_values(
    pipeline: &Pipeline,
    wanted: &[bool],
    invocation: &Invocation,
) -> Missing {
    let mut missing = Missing {
        init: Vec::new(),
        vault: Vec::new(),
    };
    let push = |list: &mut Vec<String>, m: String| {
        if !list.contains(&m) {
            list.push(m);
        }
    };
    for (i, task) in pipeline.tasks.iter().enumerate() {
        // A called task reads its call's `init`, not the run's.
        if !wanted[i] || task.scope.is_some() {
            continue;
        }
        for text in task.texts() {
            let Ok(t) = parse_template(&text.raw) else {
                continue;
            };
            for r in t.references() {
                if r.path.first().map(String::as_str) == Some("init")
                    && let Some(name) = r.path.get(1)
                    && invocation.scope.get(&["init", name]).is_none()
                    && !text.raw[r.offset..].starts_with(&format!("init?.{name}"))
                {
                    let m = format!(
                        "`init.{name}` (task `{}`, {}:{}:{})",
                        task.name,
                        pipeline.path.display(),
                        text.at.line,
                        text.at.column
                    );
                    push(&mut missing.init, m);
                }
                for (path, hint) in &invocation.unresolved {
                    if r.path.starts_with(path) {
                        push(&mut missing.vault, hint.clone());
                    }
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> Pipeline {
        strata_pipeline::parse_str(Path::new("/repo/.rwx/ci.yml"), text).unwrap()
    }

    fn checkout() -> Checkout {
        Checkout {
            sha: "a".repeat(40),
            branch: Some("main".into()),
            remotes: vec!["https://github.com/o/r.git".into()],
            ..Checkout::default()
        }
    }

    const FILE: &str = "on:
  github:
    push:
      - if: ${{ event.git.branch == 'main' }}
        init: {commit-sha: '${{ event.git.sha }}', deploy: 'yes'}
        target: [deploy]
      - init: {commit-sha: '${{ event.git.sha }}', deploy: 'no'}
    pull_request:
      init: {commit-sha: '${{ event.git.sha }}', pr: '${{ event.github.pull_request.number }}'}
  cli:
    init: {deploy: maybe}
tasks:
  - key: deploy
    run: echo ${{ init.commit-sha }} ${{ init.deploy }}
";

    #[test]
    fn github_push_picks_the_first_trigger_whose_if_holds() {
        let p = pipeline(FILE);
        let dir = tempfile::tempdir().unwrap();
        let payload = dir.path().join("event.json");
        std::fs::write(&payload, r#"{"head_commit": {"message": "hi"}}"#).unwrap();
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_EVENT_NAME", "push".into()),
            ("GITHUB_EVENT_PATH", payload.display().to_string()),
            ("GITHUB_SHA", "b".repeat(40)),
            ("GITHUB_REF", "refs/heads/main".into()),
            ("GITHUB_REF_NAME", "main".into()),
            ("GITHUB_REF_TYPE", "branch".into()),
        ]);
        let env = |k: &str| vars.get(k).cloned();
        let inv = invoke(&p, Some(&checkout()), &InvocationOptions::default(), &env).unwrap();
        assert_eq!(inv.trigger, Some(TriggerEvent::GithubPush));
        assert_eq!(inv.targets, ["deploy"]);
        assert_eq!(
            inv.scope.get(&["init", "commit-sha"]),
            Some(&Value::from("b".repeat(40)))
        );
        assert_eq!(
            inv.scope.get(&["init", "deploy"]),
            Some(&Value::from("yes"))
        );
        assert_eq!(
            inv.scope
                .get(&["event", "github", "push", "head_commit", "message"]),
            Some(&Value::from("hi"))
        );
        // Another branch: the second trigger.
        let mut vars = vars.clone();
        vars.insert("GITHUB_REF_NAME", "topic".into());
        let env = |k: &str| vars.get(k).cloned();
        let inv = invoke(&p, Some(&checkout()), &InvocationOptions::default(), &env).unwrap();
        assert_eq!(inv.scope.get(&["init", "deploy"]), Some(&Value::from("no")));
        assert!(inv.targets.is_empty());
    }

    #[test]
    fn by_hand_init_comes_from_the_checkout_then_cli_then_flags() {
        let p = pipeline(FILE);
        let env = |_: &str| None;
        let opts = InvocationOptions {
            init: vec![("extra".into(), "1".into())],
            secrets_file: None,
            keys_only: false,
        };
        let inv = invoke(&p, Some(&checkout()), &opts, &env).unwrap();
        assert_eq!(inv.trigger, None);
        assert_eq!(
            inv.scope.get(&["init", "commit-sha"]),
            Some(&Value::from("a".repeat(40)))
        );
        assert_eq!(
            inv.scope.get(&["init", "deploy"]),
            Some(&Value::from("maybe"))
        );
        assert_eq!(inv.scope.get(&["init", "extra"]), Some(&Value::from("1")));
    }

    #[test]
    fn a_false_if_everywhere_skips_the_run() {
        let p = pipeline(
            "on:\n  github:\n    push:\n      if: ${{ false }}\ntasks:\n  - key: a\n    run: x\n",
        );
        let vars = BTreeMap::from([
            ("GITHUB_ACTIONS", "true".to_string()),
            ("GITHUB_EVENT_NAME", "push".to_string()),
        ]);
        let env = |k: &str| vars.get(k).cloned();
        let inv = invoke(&p, None, &InvocationOptions::default(), &env).unwrap();
        assert!(inv.skip.unwrap().contains("false"));
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_secret() {
        let p = pipeline(
            "tasks:\n  - key: a\n    run: deploy ${{ secrets.api-key }} ${{ vaults.prod.secrets.DB }}\n",
        );
        let env = |k: &str| match k {
            "STRATA_SECRET_API_KEY" => Some("s3cr3t".to_string()),
            "STRATA_SECRET_DB" => Some("dbpass".to_string()),
            _ => None,
        };
        let inv = invoke(&p, None, &InvocationOptions::default(), &env).unwrap();
        assert_eq!(inv.secret_values.len(), 2);
        let t = parse_template(&p.tasks[0].run.raw).unwrap();
        let r = t.render(&inv.scope).unwrap();
        assert!(r.secret);
        assert_eq!(r.text, "deploy s3cr3t dbpass");
        // Missing ones are an error only for the tasks that run.
        let none = |_: &str| None;
        let inv = invoke(&p, None, &InvocationOptions::default(), &none).unwrap();
        let missing = missing_values(&p, &[true], &inv);
        assert!(
            missing.vault[0].contains("STRATA_SECRET_API_KEY"),
            "{:?}",
            missing.vault
        );
        assert!(missing_values(&p, &[false], &inv).vault.is_empty());
    }

    #[test]
    fn vault_vars_tokens_and_github_apps() {
        let p = pipeline(
            "tasks:\n  - key: a\n    run: echo ${{ vaults.v.vars.region }} ${{ github-apps.my-bot.token }} ${{ vaults.v.github-apps.other.token }} ${{ vaults.v.oidc.aws }}\n",
        );
        let env = |k: &str| match k {
            "STRATA_VAR_REGION" => Some("eu-west-1".to_string()),
            "STRATA_SECRET_GITHUB_APPS_MY_BOT_TOKEN" => Some("app-token".to_string()),
            "GITHUB_TOKEN" => Some("job-token".to_string()),
            "STRATA_SECRET_OIDC_AWS" => Some("oidc-jwt".to_string()),
            _ => None,
        };
        let inv = invoke(&p, None, &InvocationOptions::default(), &env).unwrap();
        let t = parse_template(&p.tasks[0].run.raw).unwrap();
        let r = t.render(&inv.scope).unwrap();
        assert_eq!(r.text, "echo eu-west-1 app-token job-token oidc-jwt");
        assert!(r.secret);
        // A var is not secret: keyed and shown as it is.
        let var = parse_template("${{ vaults.v.vars.region }}").unwrap();
        assert!(!var.render(&inv.scope).unwrap().secret);
        assert!(!inv.secret_values.contains(&"eu-west-1".to_string()));
        let missing = |_: &str| None;
        let inv = invoke(&p, None, &InvocationOptions::default(), &missing).unwrap();
        let m = missing_values(&p, &[true], &inv).vault.join("\n");
        assert!(m.contains("STRATA_VAR_REGION"), "{m}");
        assert!(m.contains("STRATA_SECRET_OIDC_AWS"), "{m}");
    }
}
