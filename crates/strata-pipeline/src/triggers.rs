//! `on:`: what starts a run, and the init values each trigger gives it. strata chooses the
//! trigger from the CI it runs in (the engine's `invocation`); this module only reads them.

use crate::diagnostic::{Diagnostic, Location};
use crate::model::Text;
use crate::parse::scalars::{as_map, as_string_list, as_text, key_name, unknown_key};
use crate::yaml::{Node, Value};

/// An event of a CI system that a trigger answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerEvent {
    GithubPush,
    GithubPullRequest,
    GithubMergeGroup,
    GitlabPush,
    GitlabTagPush,
    GitlabMergeRequest,
    ForgejoPush,
    ForgejoPullRequest,
    OriginPush,
    OriginPullRequest,
    Cron,
    Dispatch,
    CacheRebuild,
    Webhook,
}

impl TriggerEvent {
    /// As written under `on:` (`github.push`).
    pub fn name(self) -> &'static str {
        match self {
            TriggerEvent::GithubPush => "github.push",
            TriggerEvent::GithubPullRequest => "github.pull_request",
            TriggerEvent::GithubMergeGroup => "github.merge_group",
            TriggerEvent::GitlabPush => "gitlab.push",
            TriggerEvent::GitlabTagPush => "gitlab.tag-push",
            TriggerEvent::GitlabMergeRequest => "gitlab.merge-request",
            TriggerEvent::ForgejoPush => "forgejo.push",
            TriggerEvent::ForgejoPullRequest => "forgejo.pull-request",
            TriggerEvent::OriginPush => "origin.push",
            TriggerEvent::OriginPullRequest => "origin.pull-request",
            TriggerEvent::Cron => "cron",
            TriggerEvent::Dispatch => "dispatch",
            TriggerEvent::CacheRebuild => "cache-rebuild",
            TriggerEvent::Webhook => "webhook",
        }
    }
}

/// One trigger: when it applies (`if`), the init values it computes, the tasks it runs.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub event: TriggerEvent,
    pub at: Location,
    pub init: Vec<(String, Text)>,
    pub condition: Option<Text>,
    /// Tasks to run (all when empty).
    pub target: Vec<(String, Location)>,
    /// Pull/merge request actions it answers (RWX's default when empty: opened, reopened,
    /// synchronize).
    pub actions: Vec<String>,
    /// `key` of a cron, dispatch or webhook trigger.
    pub key: Option<String>,
    /// `reset-tool-cache: true` of a cron trigger: its runs start without tool caches (and
    /// write them afresh).
    pub reset_tool_cache: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Triggers {
    /// `on.cli.init`: defaults for a run started by hand (`strata run`), overridden by `--init`.
    pub cli_init: Vec<(String, Text)>,
    pub triggers: Vec<Trigger>,
}

impl Triggers {
    /// The triggers answering `event`, in file order.
    pub fn for_event(&self, event: TriggerEvent) -> impl Iterator<Item = &Trigger> {
        self.triggers.iter().filter(move |t| t.event == event)
    }
}

const ON_KEYS: &[&str] = &[
    "github",
    "gitlab",
    "forgejo",
    "origin",
    "cron",
    "cli",
    "dispatch",
    "cache-rebuild",
    "webhook",
];
/// Keys every trigger may have; those that only mean something in RWX's cloud (`title`,
/// `start`, `region`, `status-checks`, ...) are accepted and have no effect.
const TRIGGER_KEYS: &[&str] = &[
    "init",
    "if",
    "target",
    "title",
    "start",
    "region",
    "status-checks",
];
const PR_KEYS: &[&str] = &["actions"];
const CRON_KEYS: &[&str] = &["key", "schedule", "branch", "reset-tool-cache"];
const DISPATCH_KEYS: &[&str] = &["key", "params"];
const WEBHOOK_KEYS: &[&str] = &["key"];
const CACHE_REBUILD_KEYS: &[&str] = &["ref"];
const CLI_KEYS: &[&str] = &["init", "title", "start", "region"];

pub(crate) fn parse_triggers(node: &Node, errors: &mut Vec<Diagnostic>) -> Triggers {
    let mut out = Triggers::default();
    let Some(entries) = as_map(node, "`on`", errors) else {
        return out;
    };
    for (key, value) in entries {
        let Some(name) = key_name(key, errors) else {
            continue;
        };
        // Systems with one kind of event: a trigger (or a list of them) right under the name.
        let single = [
            ("cron", TriggerEvent::Cron),
            ("dispatch", TriggerEvent::Dispatch),
            ("cache-rebuild", TriggerEvent::CacheRebuild),
            ("webhook", TriggerEvent::Webhook),
        ];
        if let Some((_, event)) = single.iter().find(|(n, _)| *n == name) {
            triggers_of(value, *event, &mut out, errors);
            continue;
        }
        let per_system: &[(&str, TriggerEvent)] = match name.as_str() {
            "github" => &[
                ("push", TriggerEvent::GithubPush),
                ("pull_request", TriggerEvent::GithubPullRequest),
                ("merge_group", TriggerEvent::GithubMergeGroup),
            ],
            "gitlab" => &[
                ("push", TriggerEvent::GitlabPush),
                ("tag-push", TriggerEvent::GitlabTagPush),
                ("merge-request", TriggerEvent::GitlabMergeRequest),
            ],
            "forgejo" => &[
                ("push", TriggerEvent::ForgejoPush),
                ("pull-request", TriggerEvent::ForgejoPullRequest),
            ],
            "origin" => &[
                ("push", TriggerEvent::OriginPush),
                ("pull-request", TriggerEvent::OriginPullRequest),
            ],
            "cli" => {
                if let Some(fields) = as_map(value, "`on.cli`", errors) {
                    for (k, v) in fields {
                        match key_name(k, errors).as_deref() {
                            Some("init") => out.cli_init = init_map(v, errors),
                            Some(other) if CLI_KEYS.contains(&other) => {}
                            Some(other) => errors.push(unknown_key(k, other, "`on.cli`", CLI_KEYS)),
                            None => {}
                        }
                    }
                }
                continue;
            }
            other => {
                errors.push(unknown_key(key, other, "`on`", ON_KEYS));
                continue;
            }
        };
        let Some(events) = as_map(value, &format!("`on.{name}`"), errors) else {
            continue;
        };
        for (k, v) in events {
            let Some(event) = key_name(k, errors) else {
                continue;
            };
            match per_system.iter().find(|(n, _)| *n == event) {
                Some((_, e)) => triggers_of(v, *e, &mut out, errors),
                None => {
                    let names: Vec<&str> = per_system.iter().map(|(n, _)| *n).collect();
                    errors.push(unknown_key(k, &event, &format!("`on.{name}`"), &names));
                }
            }
        }
    }
    out
}

/// A trigger, or a list of them (RWX accepts both).
fn triggers_of(node: &Node, event: TriggerEvent, out: &mut Triggers, errors: &mut Vec<Diagnostic>) {
    match &node.value {
        Value::Seq(items) => {
            for item in items {
                if let Some(t) = trigger(item, event, errors) {
                    out.triggers.push(t);
                }
            }
        }
        _ => {
            if let Some(t) = trigger(node, event, errors) {
                out.triggers.push(t);
            }
        }
    }
}

fn trigger(node: &Node, event: TriggerEvent, errors: &mut Vec<Diagnostic>) -> Option<Trigger> {
    let within = format!("`on.{}`", event.name());
    let mut t = Trigger {
        event,
        at: node.at,
        init: Vec::new(),
        condition: None,
        target: Vec::new(),
        actions: Vec::new(),
        key: None,
        reset_tool_cache: false,
    };
    // `push: {}` and a bare `push:` both mean "on every push".
    if let Value::Scalar {
        text,
        quoted: false,
    } = &node.value
        && crate::yaml::is_null(text)
    {
        return Some(t);
    }
    let fields = as_map(node, &within, errors)?;
    let extra: &[&str] = match event {
        TriggerEvent::GithubPullRequest
        | TriggerEvent::GithubMergeGroup
        | TriggerEvent::GitlabMergeRequest
        | TriggerEvent::ForgejoPullRequest
        | TriggerEvent::OriginPullRequest => PR_KEYS,
        TriggerEvent::Cron => CRON_KEYS,
        TriggerEvent::Dispatch => DISPATCH_KEYS,
        TriggerEvent::Webhook => WEBHOOK_KEYS,
        TriggerEvent::CacheRebuild => CACHE_REBUILD_KEYS,
        _ => &[],
    };
    for (k, v) in fields {
        let Some(name) = key_name(k, errors) else {
            continue;
        };
        match name.as_str() {
            "init" => t.init = init_map(v, errors),
            "if" => t.condition = as_text(v, &format!("{within}.if"), errors),
            "target" => {
                t.target = as_string_list(v, "`target`", errors)
                    .into_iter()
                    .map(|(n, s)| (s, n.at))
                    .collect()
            }
            "actions" if extra.contains(&"actions") => {
                t.actions = as_string_list(v, "`actions`", errors)
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect()
            }
            "reset-tool-cache" if extra.contains(&"reset-tool-cache") => {
                t.reset_tool_cache =
                    crate::parse::scalars::as_bool(v, "`reset-tool-cache`", errors)
                        .unwrap_or(false);
            }
            "key" if extra.contains(&"key") => {
                t.key = as_text(v, "`key`", errors).map(|t| t.raw);
            }
            other if TRIGGER_KEYS.contains(&other) || extra.contains(&other) => {}
            other => {
                let allowed: Vec<&str> = TRIGGER_KEYS.iter().chain(extra).copied().collect();
                errors.push(unknown_key(k, other, &within, &allowed));
            }
        }
    }
    Some(t)
}

/// `init:` of a trigger: parameter name -> value (an expression over `event.*` in general).
fn init_map(node: &Node, errors: &mut Vec<Diagnostic>) -> Vec<(String, Text)> {
    let Some(entries) = as_map(node, "`init`", errors) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| {
            let name = key_name(k, errors)?;
            Some((name, as_text(v, "an init value", errors)?))
        })
        .collect()
}
