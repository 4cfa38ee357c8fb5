//! A task's `background-processes` and its `docker` daemon: their expressions resolved, how
//! they enter the key, and what the sandbox is given to run them (`strata_sandbox`'s
//! `background.rs` runs them).
//!
//! `docker: true` is one more background process, `dockerd`, started before the user's own
//! ones: its data root is a directory of the host bound at `/var/lib/docker` (overlay2 cannot
//! sit on the overlay that is the task's root), its socket and exec root are in the task's
//! private `/run`, and it makes no bridge and touches no iptables rule, so two tasks' daemons
//! never meet on the host's `docker0` or firewall. The task is privileged (docs/security.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_pipeline::expr::Scope;
use strata_pipeline::{Docker, Task};
use strata_sandbox::{BackgroundProcess, BindMount, ReadyCheck};

use crate::context::RunContext;
use crate::expressions::resolve as resolve_text;

/// The key of the Docker daemon's background process (a user's process may not take it).
pub(crate) const DOCKERD_KEY: &str = strata_pipeline::DOCKERD_PROCESS;
/// Where the daemon listens inside the sandbox; `DOCKER_HOST` names it.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const DOCKER_DATA_ROOT: &str = "/var/lib/docker";
/// How long `dockerd` may take to answer (it starts containerd first).
const DOCKERD_READY: Duration = Duration::from_secs(60);
/// Containers get this long to stop when the daemon is told to shut down.
const DOCKERD_GRACE: Duration = Duration::from_secs(15);

/// The background processes as they run, and as they are keyed (secrets by name).
pub(crate) struct ResolvedServices {
    pub(crate) processes: Vec<BackgroundProcess>,
    /// Appended to the key's executor: empty for a task with neither processes nor Docker, so
    /// that every other task keeps its key.
    pub(crate) keyed: String,
}

/// Resolves the expressions of the task's background processes.
pub(crate) fn resolve(
    task: &Task,
    scope: &Scope,
    key_scope: &Scope,
) -> Result<ResolvedServices, String> {
    let mut processes = Vec::new();
    let mut keyed = Vec::new();
    if task.docker != Docker::Disabled {
        processes.push(dockerd(&docker_cgroup_parent(task)));
        keyed.push(match task.docker {
            Docker::PreserveData => "docker=preserve-data".to_string(),
            _ => "docker".to_string(),
        });
    }
    for p in &task.background {
        let what =
            |field: &str, e: String| format!("background process `{}`: `{field}`: {e}", p.key);
        let run = resolve_text(&p.run, scope, key_scope).map_err(|e| what("run", e))?;
        let check = p
            .ready_check
            .as_ref()
            .map(|c| {
                resolve_text(&c.run, scope, key_scope)
                    .map(|r| (r, c.timeout))
                    .map_err(|e| what("ready-check", e))
            })
            .transpose()?;
        let mut after = p.after.clone();
        if task.docker != Docker::Disabled {
            // A process may use Docker (a database in a container) as the command may.
            after.push(DOCKERD_KEY.to_string());
        }
        // Written field by field, not derived from the sandbox's type, so that a field added
        // there cannot change existing keys by accident.
        let keyed_process = serde_json::json!({
            "key": p.key,
            "run": run.keyed,
            "ready-check": check.as_ref().map(|(r, timeout)| serde_json::json!({
                "run": r.keyed,
                "timeout-seconds": timeout.as_secs(),
            })),
            "after": after,
            "terminate-grace-period-seconds": p.grace_period.as_secs(),
        });
        keyed.push(format!("background={keyed_process}"));
        processes.push(BackgroundProcess {
            key: p.key.clone(),
            run: run.text,
            ready_check: check.map(|(r, timeout)| ReadyCheck {
                // RWX's images have `rwx-docker-ready-check`; strata defines it for the check.
                prelude: if task.docker != Docker::Disabled
                    && r.text.contains(DOCKER_READY_CHECK_NAME)
                {
                    DOCKER_READY_CHECK.to_string()
                } else {
                    String::new()
                },
                run: r.text,
                timeout,
            }),
            after,
            grace_period: p.grace_period,
        });
    }
    Ok(ResolvedServices {
        processes,
        keyed: keyed.iter().map(|k| format!(" {k}")).collect(),
    })
}

const DOCKER_READY_CHECK_NAME: &str = "rwx-docker-ready-check";
/// What RWX's `rwx-docker-ready-check` is for, as a bash function a Docker task's ready checks
/// may call: the daemon has at least one container, and every container is running and, if it
/// has a health check, healthy (`docker compose up` as a background process).
const DOCKER_READY_CHECK: &str = r#"rwx-docker-ready-check() {
  local ids state
  ids=$(docker ps -aq) || return 1
  [ -n "$ids" ] || return 1
  for id in $ids; do
    state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id") || return 1
    case "$state" in running/ | running/healthy) ;; *) return 1 ;; esac
  done
}"#;

/// The cgroup, in each hierarchy, under which the task's daemon puts its containers' cgroups:
/// its own, so that two daemons never share one and strata can remove it afterwards
/// ([`DockerData`]'s drop). The sandbox has no cgroup namespace: the daemon sees the host's
/// hierarchies.
fn docker_cgroup_parent(task: &Task) -> String {
    format!(
        "strata-docker-{}-{}",
        std::process::id(),
        strata_sandbox::hostname_for(task.name.as_str())
    )
}

/// `dockerd` as a background process: no bridge, no iptables, its state in the task's `/run`
/// and in the data root bound at `/var/lib/docker`; ready once it answers on its socket.
fn dockerd(cgroup_parent: &str) -> BackgroundProcess {
    BackgroundProcess {
        key: DOCKERD_KEY.to_string(),
        run: format!(
            "exec dockerd --host unix://{DOCKER_SOCKET} --data-root {DOCKER_DATA_ROOT} \
             --exec-root /run/docker --pidfile /run/docker.pid --bridge=none \
             --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
             --cgroup-parent /{cgroup_parent}"
        ),
        ready_check: Some(ReadyCheck {
            run: format!("docker -H unix://{DOCKER_SOCKET} version"),
            timeout: DOCKERD_READY,
            prelude: String::new(),
        }),
        after: Vec::new(),
        grace_period: DOCKERD_GRACE,
    }
}

/// Why a task's background processes failed, with what to do when it is its Docker daemon that
/// could not even start (the shell's 127: no `dockerd` in the task's filesystem).
pub(crate) fn explain_failure(task: &Task, reason: String) -> String {
    if task.docker != Docker::Disabled
        && reason.starts_with(&format!(
            "background process `{DOCKERD_KEY}` exited with status 127"
        ))
    {
        format!(
            "{reason}: `docker` needs `dockerd`, `containerd` and `runc` in the task's filesystem \
             (Debian's `docker.io` package)"
        )
    } else {
        reason
    }
}

/// The host side of a task's Docker daemon: its data root, bound into the sandbox, and what
/// happens to it afterwards.
pub(crate) struct DockerData {
    pub(crate) bind: BindMount,
    pub(crate) env: (String, String),
    /// Removed when the task ends (`docker: true`); `None` for `preserve-data`.
    discard: Option<PathBuf>,
    /// The cgroup its containers were put under, removed when the task ends.
    cgroup_parent: String,
    /// `preserve-data`: held while the task runs, so that two runs of one task never share a
    /// live data root (the second waits).
    _lock: Option<std::fs::File>,
}

impl Drop for DockerData {
    fn drop(&mut self) {
        // The task's processes, its containers' among them, died with its PID namespace.
        strata_sandbox::remove_cgroup_tree(&self.cgroup_parent);
        if let Some(dir) = &self.discard {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Prepares the data root of the task's daemon: a fresh directory in the task's scratch, or
/// for `preserve-data` the task's own directory under the cache's `docker/`. A new data root
/// starts as a copy of the one kept by the nearest `preserve-data` task in its `use` (the
/// last listed wins, as for layers), so that images pulled there are here too, as in RWX.
pub(crate) fn docker_data(
    ctx: &RunContext<'_>,
    task: &Task,
    scratch: &Path,
) -> Result<Option<DockerData>, String> {
    if task.docker == Docker::Disabled {
        return Ok(None);
    }
    remove_stale_cgroups();
    let (dir, discard, lock) = match task.docker {
        Docker::Disabled => return Ok(None),
        Docker::Enabled => {
            let dir = scratch.join("docker-data");
            let _ = std::fs::remove_dir_all(&dir);
            (dir.clone(), Some(dir), None)
        }
        Docker::PreserveData => {
            let (dir, lock_path) = preserved_dir(ctx, task.name.as_str());
            let parent = dir.parent().expect("under docker/");
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
            let lock = open_lock(&lock_path)?;
            lock.lock()
                .map_err(|e| format!("failed to lock {}: {e}", lock_path.display()))?;
            (dir, None, Some(lock))
        }
    };
    if !dir.exists()
        && let Some(from) = inherited_preserved(ctx, task)
    {
        copy_preserved(ctx, &from, &dir)?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    Ok(Some(DockerData {
        bind: BindMount {
            source: dir,
            target: PathBuf::from(DOCKER_DATA_ROOT),
        },
        env: ("DOCKER_HOST".into(), format!("unix://{DOCKER_SOCKET}")),
        discard,
        cgroup_parent: docker_cgroup_parent(task),
        _lock: lock,
    }))
}

/// The containers' cgroups of daemons whose strata was killed before it could remove them
/// (`strata-docker-<pid>-<task>` with no such strata process any more).
fn remove_stale_cgroups() {
    for root in strata_sandbox::cgroup_roots() {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("strata-docker-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                strata_sandbox::remove_cgroup_tree(&name);
            }
        }
    }
}

/// A `preserve-data` task's data root and its lock file.
fn preserved_dir(ctx: &RunContext<'_>, task: &str) -> (PathBuf, PathBuf) {
    let dir = ctx.cache.root().join("docker").join(preserved_name(task));
    let lock = dir.with_extension("lock");
    (dir, lock)
}

fn open_lock(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("failed to open {}: {e}", path.display()))
}

/// The nearest `preserve-data` task under `task` through `use`: its `use` from the last, each
/// one, then what it uses.
fn inherited_preserved(ctx: &RunContext<'_>, task: &Task) -> Option<String> {
    fn search(ctx: &RunContext<'_>, task: &Task, depth: usize) -> Option<String> {
        if depth > 64 {
            return None; // validation refuses cycles; this only bounds a deep chain
        }
        task.uses.iter().rev().find_map(|name| {
            let used = ctx.pipeline.task(name.as_str())?;
            if used.docker == Docker::PreserveData {
                Some(used.name.to_string())
            } else {
                search(ctx, used, depth + 1)
            }
        })
    }
    search(ctx, task, 0)
}

/// Copies the data root kept by the task `from` (if it ran on this machine) into `to`, under a
/// shared lock so that it is not copied while its task changes it.
fn copy_preserved(ctx: &RunContext<'_>, from: &str, to: &Path) -> Result<(), String> {
    let (source, lock_path) = preserved_dir(ctx, from);
    if !source.is_dir() {
        return Ok(());
    }
    let lock = open_lock(&lock_path)?;
    lock.lock_shared()
        .map_err(|e| format!("failed to lock {}: {e}", lock_path.display()))?;
    // cp keeps what Docker's overlay2 needs: device nodes (its whiteouts), xattrs, hard links.
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&source)
        .arg(&partial)
        .status()
        .map_err(|e| format!("failed to run cp for {}: {e}", source.display()))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!(
            "failed to copy the Docker data kept by `{from}` ({}): cp {status}",
            source.display()
        ));
    }
    std::fs::rename(&partial, to)
        .map_err(|e| format!("failed to move {} into place: {e}", partial.display()))
}

/// A task name as a directory name: generated names (`a.b`, `x[1]`) keep their characters
/// readable, anything else becomes `_`.
fn preserved_name(task: &str) -> String {
    task.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
        + ".data"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(text: &str) -> Task {
        strata_pipeline::parse_str(Path::new("strata.yml"), text)
            .unwrap()
            .tasks
            .pop()
            .unwrap()
    }

    #[test]
    fn a_task_without_services_adds_nothing_to_its_key() {
        let t = task("tasks:\n  - key: a\n    run: x\n");
        let r = resolve(&t, &Scope::default(), &Scope::default()).unwrap();
        assert!(r.processes.is_empty());
        assert_eq!(r.keyed, "");
    }

    #[test]
    fn every_field_of_a_process_is_keyed() {
        let base = "tasks:\n  - key: a\n    run: x\n    background-processes:\n      - key: db\n        run: serve\n";
        let keyed = |extra: &str| {
            resolve(
                &task(&format!("{base}{extra}")),
                &Scope::default(),
                &Scope::default(),
            )
            .unwrap()
            .keyed
        };
        let plain = keyed("");
        assert!(plain.starts_with(" background="), "{plain}");
        let variants = [
            keyed("        ready-check: probe\n"),
            keyed("        ready-check: {run: probe, timeout-seconds: 5}\n"),
            keyed("        terminate-grace-period-seconds: 1\n"),
        ];
        for v in &variants {
            assert_ne!(v, &plain);
        }
        assert_ne!(variants[0], variants[1]);
    }

    #[test]
    fn the_keyed_form_is_stable() {
        // If this changes, existing entries of tasks with background processes miss.
        let t = task(
            "tasks:\n  - key: a\n    run: x\n    background-processes:\n      - {key: b, run: one}\n      - key: db\n        run: serve\n        after: b\n        ready-check: {run: probe, timeout-seconds: 5}\n",
        );
        let r = resolve(&t, &Scope::default(), &Scope::default()).unwrap();
        assert_eq!(
            r.keyed,
            concat!(
                r#" background={"after":[],"key":"b","ready-check":null,"run":"one","terminate-grace-period-seconds":10}"#,
                r#" background={"after":["b"],"key":"db","ready-check":{"run":"probe","timeout-seconds":5},"run":"serve","terminate-grace-period-seconds":10}"#,
            )
        );
    }

    #[test]
    fn docker_is_a_process_that_the_others_wait_for() {
        let t = task(
            "tasks:\n  - key: a\n    run: x\n    docker: true\n    background-processes:\n      - key: db\n        run: serve\n",
        );
        let r = resolve(&t, &Scope::default(), &Scope::default()).unwrap();
        assert_eq!(r.processes[0].key, DOCKERD_KEY);
        assert!(r.processes[0].run.contains("--bridge=none"));
        assert_eq!(r.processes[1].after, [DOCKERD_KEY]);
        assert!(r.keyed.starts_with(" docker background="), "{}", r.keyed);
    }

    #[test]
    fn preserved_data_directories_are_plain_names() {
        assert_eq!(preserved_name("build"), "build.data");
        assert_eq!(preserved_name("tests[2]/x"), "tests_2__x.data");
        assert_eq!(preserved_name("..evil"), "evil.data");
    }
}
