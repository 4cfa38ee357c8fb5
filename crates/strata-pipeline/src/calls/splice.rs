//! One resolved call spliced into the calling pipeline: its arguments checked against what the
//! called file declares, its tasks renamed `caller.inner` with the call's scope, and the calling
//! task made to stand for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::expr::parse_template;
use crate::model::{Note, Pipeline, Task, TaskKind, TaskName};

use super::expand::PACKAGE_USE;
use super::{CallArg, CallOutputs, CallScope, CallSpec, Called};

/// The called tasks, renamed and scoped, then the caller standing for them.
pub(super) fn splice(
    pipeline: &mut Pipeline,
    caller: Task,
    spec: &CallSpec,
    called: Called,
    mut inner: Pipeline,
    out: &mut Vec<Task>,
    errors: &mut Vec<Diagnostic>,
) {
    let before = errors.len();
    let is_package = matches!(called, Called::Package(_));
    let called = match called {
        Called::Run { path, .. } => Called::Run {
            path,
            local_package: inner.package.is_some(),
        },
        c => c,
    };
    let what = match &called {
        Called::Package(p) => format!("package `{} {}`", p.name, p.version),
        Called::Run { path, .. } => format!("run definition {}", path.display()),
    };
    // `with:` against the package's parameters.
    let mut params = Vec::new();
    match &inner.package {
        None => {
            if let Some(at) = spec.with_at {
                errors.push(
                    Diagnostic::new(
                        at,
                        4,
                        format!("`with` passes parameters to a package, and the {what} is not one"),
                    )
                    .with_help("an embedded run gets its values with `init`"),
                );
            }
        }
        Some(decl) => {
            let names: Vec<&str> = decl.parameters.iter().map(|p| p.name.as_str()).collect();
            for arg in &spec.with {
                if !names.contains(&arg.name.as_str()) {
                    let d = Diagnostic::new(
                        arg.at,
                        arg.name.len(),
                        format!("the {what} has no parameter `{}`", arg.name),
                    );
                    errors.push(match crate::parse::scalars::suggest(&arg.name, &names) {
                        Some(h) => d.with_help(h),
                        None if names.is_empty() => d.with_help("it declares no parameters"),
                        None => d.with_help(format!("its parameters are: {}", names.join(", "))),
                    });
                }
            }
            for p in &decl.parameters {
                if let Some(arg) = spec.with.iter().find(|a| a.name == p.name) {
                    params.push(arg.clone());
                } else if let Some(default) = &p.default {
                    params.push(CallArg {
                        name: p.name.clone(),
                        value: default.clone(),
                        at: p.at,
                    });
                } else if p.required {
                    errors.push(
                        Diagnostic::new(
                            spec.with_at.unwrap_or(spec.at),
                            4,
                            format!("the {what} needs parameter `{}`", p.name),
                        )
                        .with_help(format!("give it under `with:`: `{}: VALUE`", p.name)),
                    );
                } else {
                    // An optional parameter without a default reads as an empty string.
                    params.push(CallArg {
                        name: p.name.clone(),
                        value: crate::model::Text::new("", p.at),
                        at: p.at,
                    });
                }
            }
        }
    }
    let mut missing_init: Vec<CallArg> = Vec::new();
    if is_package {
        for (key, at) in [("init", spec.init_at)] {
            if let Some(at) = at {
                errors.push(Diagnostic::new(
                    at,
                    key.len(),
                    format!("`{key}` is for embedded runs; a package takes `with`"),
                ));
            }
        }
    } else if !spec.inherit_init {
        // Init values the called file reads and the call does not give are empty, with a
        // warning (RWX's own files do this: an embedded run's triggers are not used).
        for task in &inner.tasks {
            if task.scope.is_some() {
                continue;
            }
            for name in init_reads(task) {
                if spec
                    .init
                    .iter()
                    .chain(&missing_init)
                    .any(|a| a.name == name)
                {
                    continue;
                }
                let at = spec.init_at.unwrap_or(spec.at);
                pipeline.notes.push(Note {
                    warning: true,
                    at,
                    message: format!(
                        "the {what} reads `init.{name}` (task `{}`), which this call does not give: it is empty",
                        task.name
                    ),
                });
                missing_init.push(CallArg {
                    name,
                    value: crate::model::Text::new("", at),
                    at,
                });
            }
        }
    }
    // `target:` keeps the named tasks and what they need.
    if !spec.targets.is_empty() {
        let mut targets = Vec::new();
        for (t, at) in &spec.targets {
            if inner.task(t).is_none() {
                errors.push(Diagnostic::new(
                    *at,
                    t.len(),
                    format!("the {what} has no task `{t}`"),
                ));
            } else {
                targets.push(TaskName::new(t.clone()));
            }
        }
        let keep = inner.closure(&targets);
        let mut i = 0;
        inner.tasks.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
    if errors.len() > before {
        out.push(caller);
        return;
    }
    let scope = Arc::new(CallScope {
        caller: caller.name.clone(),
        called,
        params,
        init: spec.init.iter().cloned().chain(missing_init).collect(),
        inherit_init: spec.inherit_init,
        parent: None,
        parallel: match &caller.parallel {
            Some(crate::parallel::Parallel::Instance(i)) => Some(i.clone()),
            _ => None,
        },
    });
    let prefix = scope.prefix();
    let rename = |n: &TaskName| TaskName::new(format!("{prefix}{n}"));
    let local_package = matches!(
        scope.called,
        Called::Run {
            local_package: true,
            ..
        }
    );
    // The call's own `use`, `after`, `env` and `filter` apply to a package's tasks; a local
    // package places its caller's `use` where it says `package.use`; an embedded run is
    // isolated.
    let used_inside: BTreeSet<&TaskName> = inner.tasks.iter().flat_map(|t| &t.uses).collect();
    let finals: Vec<TaskName> = inner
        .tasks
        .iter()
        .filter(|t| !used_inside.contains(&t.name))
        .map(|t| rename(&t.name))
        .collect();
    let others: Vec<TaskName> = inner
        .tasks
        .iter()
        .map(|t| rename(&t.name))
        .filter(|n| !finals.contains(n))
        .collect();
    if matches!(
        scope.called,
        Called::Run {
            local_package: false,
            ..
        }
    ) && let Some(r) = caller
        .ref_spans
        .iter()
        .find(|r| caller.uses.contains(&r.name))
    {
        pipeline.notes.push(Note {
            warning: false,
            at: r.at,
            message: "`use` on an embedded run has no effect: its tasks are isolated from the caller's, as in RWX (pass values with `init`)".into(),
        });
    }
    let mut reparented: HashMap<*const CallScope, Arc<CallScope>> = HashMap::new();
    for mut t in std::mem::take(&mut inner.tasks) {
        t.name = rename(&t.name);
        let mut uses = Vec::new();
        if is_package {
            uses.extend(caller.uses.iter().cloned());
        }
        for u in &t.uses {
            if u.as_str() == PACKAGE_USE {
                if local_package || is_package {
                    uses.extend(caller.uses.iter().cloned());
                }
            } else {
                uses.push(rename(u));
            }
        }
        let mut seen = BTreeSet::new();
        uses.retain(|u| seen.insert(u.clone()));
        t.uses = uses;
        t.after = t.after.iter().map(&rename).collect();
        t.value_deps = t.value_deps.iter().map(&rename).collect();
        for a in &mut t.artifact_refs {
            a.task = rename(&a.task);
            a.members = a.members.iter().map(&rename).collect();
        }
        // Order crosses into every call, embedded runs included.
        t.after.extend(caller.after.iter().cloned());
        if !caller.cache.enabled {
            t.cache.enabled = false;
        }
        if !matches!(
            scope.called,
            Called::Run {
                local_package: false,
                ..
            }
        ) {
            for var in &caller.env {
                if !t.env.iter().any(|v| v.name == var.name) {
                    t.env.insert(0, var.clone());
                }
            }
            if t.filter.is_none() {
                t.filter = caller.filter.clone();
            }
        }
        // The arguments of the call are read by every called task.
        for d in &caller.value_deps {
            if !t.value_deps.contains(d) {
                t.value_deps.push(d.clone());
            }
        }
        t.ref_spans.clear();
        t.scope = Some(match &t.scope {
            None => scope.clone(),
            Some(s) => reparent(s, &scope, &prefix, &mut reparented),
        });
        if let TaskKind::Called(outputs) = &mut t.kind {
            outputs.call = reparent(&outputs.call, &scope, &prefix, &mut reparented);
            outputs.values_from = outputs.values_from.iter().map(&rename).collect();
        }
        out.push(t);
    }
    let file = file_of(&scope.called);
    // An embedded run's own `base` is not used (its tasks run on the caller's): its notes
    // about it would mislead. One that names another base than the caller's is said: its
    // tasks would otherwise pass or fail on a system their file does not ask for, unseen
    // (a matrix of embedded runs, one per image, would test one image many times).
    // The same for a `base.config` other than the caller's on the same base: its setup would
    // not run under the file's tasks.
    let embedded = matches!(scope.called, Called::Run { .. });
    let unused = match (inner.base_at, &inner.base_config) {
        (Some(at), _) if inner.base != pipeline.base => Some((at, "`base`", "base")),
        (_, Some((config, at)))
            if pipeline.base_config.as_ref().map(|(c, _)| c) != Some(config) =>
        {
            Some((*at, "`base.config`", "base configuration"))
        }
        _ => None,
    };
    if embedded && let Some((at, what, kind)) = unused {
        let message = format!(
            "{}:{}:{}: this {what} is not used when the file is called: strata runs \
             every task of a run on one {kind}, so its tasks run on the calling file's",
            file_of(&scope.called).display(),
            at.line,
            at.column,
        );
        if !pipeline.notes.iter().any(|o| o.message == message) {
            pipeline.notes.push(Note {
                warning: true,
                at: spec.at,
                message,
            });
        }
    }
    for n in inner.notes {
        if embedded && n.message.starts_with("`base`") {
            continue;
        }
        let message = format!(
            "{}:{}:{}: {}",
            file.display(),
            n.at.line,
            n.at.column,
            n.message
        );
        if pipeline.notes.iter().any(|o| o.message == message) {
            continue;
        }
        pipeline.notes.push(Note {
            warning: n.warning,
            at: spec.at,
            message,
        });
    }
    for mut u in inner.unsupported {
        u.key = format!("{} (in {}:{})", u.key, file.display(), u.at.line);
        u.task = u.task.map(|t| rename(&t));
        u.at = spec.at;
        pipeline.unsupported.push(u);
    }
    let values_from: Vec<TaskName> = inner
        .package
        .as_ref()
        .map(|d| {
            d.values_from
                .iter()
                .map(|(n, _)| rename(n))
                // `target:` may have left a task out.
                .filter(|n| out.iter().any(|t| &t.name == n))
                .collect()
        })
        .unwrap_or_default();
    let mut caller = caller;
    for v in &values_from {
        if !caller.value_deps.contains(v) {
            caller.value_deps.push(v.clone());
        }
    }
    caller.kind = TaskKind::Called(CallOutputs {
        call: scope,
        values_from,
    });
    caller.uses = finals;
    caller.after = others;
    caller.env.clear();
    caller.filter = None;
    caller.ref_spans.clear();
    out.push(caller);
}

/// The file a call reads: the package's, or the embedded run definition.
fn file_of(called: &Called) -> std::path::PathBuf {
    match called {
        Called::Package(p) => p.file(),
        Called::Run { path, .. } => path.clone(),
    }
}

/// A nested call's scope, moved under `root` (its caller renamed with `prefix`).
fn reparent(
    s: &Arc<CallScope>,
    root: &Arc<CallScope>,
    prefix: &str,
    memo: &mut HashMap<*const CallScope, Arc<CallScope>>,
) -> Arc<CallScope> {
    if let Some(done) = memo.get(&Arc::as_ptr(s)) {
        return done.clone();
    }
    let parent = match &s.parent {
        None => root.clone(),
        Some(p) => reparent(p, root, prefix, memo),
    };
    let moved = Arc::new(CallScope {
        caller: TaskName::new(format!("{prefix}{}", s.caller)),
        parent: Some(parent),
        ..(**s).clone()
    });
    memo.insert(Arc::as_ptr(s), moved.clone());
    moved
}

/// The `init.NAME`s a task of the called file reads (not `init?.NAME`).
fn init_reads(task: &Task) -> Vec<String> {
    let mut out = Vec::new();
    for text in task.texts() {
        if !text.raw.contains("${{") {
            continue;
        }
        let Ok(t) = parse_template(&text.raw) else {
            continue;
        };
        for r in t.references() {
            if r.path.first().map(String::as_str) == Some("init")
                && let Some(name) = r.path.get(1)
                && !text.raw[r.offset..].starts_with(&format!("init?.{name}"))
                && !out.contains(name)
            {
                out.push(name.clone());
            }
        }
    }
    out
}
