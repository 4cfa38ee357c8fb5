//! A cgroup per task, where the machine allows: the whole task is killed at once
//! (`cgroup.kill`) and its CPU time and peak memory are measured.
//!
//! Layout (cgroup v2): `<strata's own cgroup>/strata-<pid>/<task>`. The run's cgroup holds no
//! process, so the controllers it is given may be enabled for its leaves ("no internal
//! processes"); each task's processes live only in their leaf. Staying under strata's own cgroup
//! keeps tasks inside whatever limits the machine put on strata (a CI job's slice, a container).
//! The controllers a leaf gets are those strata's cgroup already hands down: when strata runs in
//! the root cgroup, `memory` and `cpu` are enabled there; under a cgroup that has processes of
//! its own the kernel forbids enabling them, and the leaf still has `cgroup.kill` and
//! `cpu.stat` but no `memory.peak`.
//!
//! On a hybrid host (v1 controllers, the v2 hierarchy without `memory`, as this project's CI
//! machine) the peak comes from a leaf of the v1 memory hierarchy under strata's own memory
//! cgroup (`memory.max_usage_in_bytes`).
//!
//! Without a writable cgroup2 hierarchy tasks run as before (killed through their PID
//! namespace) and the run says so once.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Written by the helper into the scratch dir when it could not join its cgroup (the task then
/// runs outside it, and reports no usage).
pub(crate) const CGROUP_ERROR_FILE: &str = "cgroup-error";

/// What a task used, measured by its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The most memory the task's processes held at once (page cache included, as the kernel
    /// counts it).
    pub peak_memory_bytes: Option<u64>,
    /// CPU time of all the task's processes, user and system.
    pub cpu_usec: Option<u64>,
}

/// Where this process puts its tasks' cgroups.
#[derive(Debug)]
struct Hierarchy {
    /// `<mount of cgroup2><own cgroup>/strata-<pid>`.
    run: PathBuf,
    /// The same under the v1 memory hierarchy, where `run` has no memory controller.
    memory_v1_run: Option<PathBuf>,
}

static HIERARCHY: OnceLock<Result<Hierarchy, String>> = OnceLock::new();
static NOTICE_GIVEN: AtomicBool = AtomicBool::new(false);

fn hierarchy() -> &'static Result<Hierarchy, String> {
    HIERARCHY.get_or_init(detect)
}

/// A task's cgroup (a v2 leaf, maybe with a v1 memory leaf), removed by [`TaskCgroup::finish`].
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    leaf: PathBuf,
    memory_v1: Option<PathBuf>,
}

/// The notice a run gives once when tasks get no cgroup, `None` after the first call.
pub(crate) fn take_notice(reason: &str) -> Option<String> {
    (!NOTICE_GIVEN.swap(true, Ordering::SeqCst)).then(|| {
        format!(
            "tasks run without a cgroup ({reason}): no CPU time or peak memory is reported, \
             and a timeout kills a task through its PID namespace"
        )
    })
}

impl TaskCgroup {
    /// Creates the leaf for `task`; `Err` says why there is none.
    pub(crate) fn create(task: &str) -> Result<TaskCgroup, String> {
        let h = hierarchy().as_ref().map_err(Clone::clone)?;
        // Another task of this run may remove the run's cgroup between our mkdirs when it
        // finishes last: create it again.
        let mut tries = 0;
        let leaf = loop {
            ensure_run_cgroup(&h.run).map_err(|e| format!("create {}: {e}", h.run.display()))?;
            match make_leaf(&h.run, task) {
                Ok(leaf) => break leaf,
                Err(e) if e.kind() == ErrorKind::NotFound && tries < 3 => tries += 1,
                Err(e) => {
                    return Err(format!(
                        "create a cgroup for {task} in {}: {e}",
                        h.run.display()
                    ));
                }
            }
        };
        let memory_v1 = h.memory_v1_run.as_ref().and_then(|run| {
            (0..3).find_map(|_| {
                let _ = std::fs::create_dir(run);
                make_leaf(run, task).ok()
            })
        });
        Ok(TaskCgroup { leaf, memory_v1 })
    }

    /// The directories the helper joins (writes itself into their `cgroup.procs`).
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.leaf.clone())
            .chain(self.memory_v1.clone())
            .collect()
    }

    pub(crate) fn leaf(&self) -> &Path {
        &self.leaf
    }

    /// Waits until no process is left, reads what the task used and removes the cgroups.
    pub(crate) fn finish(self) -> Usage {
        // The helper has exited, so its PID namespace is gone; the cgroup notices a moment
        // later. Anything still there (it cannot be: belt and braces) is killed.
        let start = Instant::now();
        let mut killed = false;
        while populated(&self.leaf) && start.elapsed() < Duration::from_secs(10) {
            if !killed && start.elapsed() > Duration::from_secs(2) {
                kill(&self.leaf);
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let usage = Usage {
            peak_memory_bytes: read_u64(&self.leaf.join("memory.peak")).or_else(|| {
                self.memory_v1
                    .as_ref()
                    .and_then(|m| read_u64(&m.join("memory.max_usage_in_bytes")))
            }),
            cpu_usec: cpu_usec(&self.leaf),
        };
        for leaf in std::iter::once(&self.leaf).chain(&self.memory_v1) {
            let _ = std::fs::remove_dir(leaf);
            // The run's cgroup goes with its last task (EBUSY while others run).
            if let Some(run) = leaf.parent() {
                let _ = std::fs::remove_dir(run);
            }
        }
        usage
    }
}

/// Kills every process in the cgroup at once.
pub(crate) fn kill(leaf: &Path) {
    if std::fs::write(leaf.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Kernels before 5.14: one by one (the helper's own SIGKILL does the rest).
    if let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid read from the task's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Moves the calling process into each cgroup (the helper, before it forks anything).
pub(crate) fn join(dirs: &[PathBuf]) -> Result<(), String> {
    for dir in dirs {
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| format!("join cgroup {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn populated(leaf: &Path) -> bool {
    std::fs::read_to_string(leaf.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_usec(leaf: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(leaf.join("cpu.stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Creates a fresh leaf for `task` under `run`: `<task>`, or `<task>.<n>` when that name is
/// taken (a leaf that could not be removed, another run of this process), so that a leaf's
/// figures and its kill are never shared.
fn make_leaf(run: &Path, task: &str) -> std::io::Result<PathBuf> {
    let mut last = None;
    for n in 0..16 {
        let leaf = match n {
            0 => run.join(task),
            n => run.join(format!("{task}.{n}")),
        };
        match std::fs::create_dir(&leaf) {
            Ok(()) => return Ok(leaf),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// The run's cgroup, with every controller it may hand to its leaves enabled for them.
fn ensure_run_cgroup(run: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(run) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    enable_controllers(run);
    Ok(())
}

/// Enables `memory`, `cpu` and `pids` for the children of `cgroup`, those it has.
fn enable_controllers(cgroup: &Path) {
    let available = std::fs::read_to_string(cgroup.join("cgroup.controllers")).unwrap_or_default();
    let enabled =
        std::fs::read_to_string(cgroup.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in ["memory", "cpu", "pids"] {
        let has = |s: &str| s.split_whitespace().any(|c| c == controller);
        if has(&available) && !has(&enabled) {
            let _ = std::fs::write(
                cgroup.join("cgroup.subtree_control"),
                format!("+{controller}"),
            );
        }
    }
}

/// Removes the cgroup `name` (relative to each hierarchy's root) and everything under it, in
/// every mounted cgroup hierarchy: what a task's Docker daemon created for its containers
/// (`--cgroup-parent`), once the task is over. Only empty cgroups can go; those whose last
/// process is still being torn down are tried again for a moment.
pub fn remove_cgroup_tree(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for mount in cgroup_roots() {
        let top = mount.join(name.trim_start_matches('/'));
        while top.exists() && remove_tree(&top).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The root of every mounted cgroup hierarchy (v1 and v2).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            matches!(right.split(' ').next(), Some("cgroup" | "cgroup2"))
                .then(|| left.split(' ').nth(4).map(unescape))
                .flatten()
        })
        .collect()
}

/// rmdir of a cgroup's children, then of the cgroup (its files are not files).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// The mount points of the cgroup2 hierarchy and of the v1 memory hierarchy, from
/// `/proc/self/mountinfo`.
fn cgroup_mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut v2 = None;
    let mut memory_v1 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).map(unescape);
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" if v2.is_none() => v2 = mount_point,
            "cgroup" if memory_v1.is_none() && options.split(',').any(|o| o == "memory") => {
                memory_v1 = mount_point
            }
            _ => {}
        }
    }
    (v2, memory_v1)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// strata's own cgroups from `/proc/self/cgroup`: the v2 path (`0::PATH`) and the v1 memory
/// path (`N:...memory...:PATH`).
fn own_cgroups(proc_self_cgroup: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut memory_v1 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            memory_v1 = Some(path.to_string());
        }
    }
    (v2, memory_v1)
}

fn under(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

fn detect() -> Result<Hierarchy, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let (v2_mount, v1_memory_mount) = cgroup_mounts(&mountinfo);
    let v2_mount = v2_mount.ok_or("no cgroup2 hierarchy is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let (own_v2, own_memory_v1) = own_cgroups(&own);
    let own_v2 = own_v2.ok_or("strata's own cgroup v2 is unknown")?;
    let home = under(&v2_mount, &own_v2);
    let pid = std::process::id();
    remove_stale(&home);
    if home == v2_mount {
        // The root cgroup may hold processes and still hand controllers down.
        enable_controllers(&home);
    }
    let run = home.join(format!("strata-{pid}"));
    ensure_run_cgroup(&run).map_err(|e| format!("cannot create {}: {e}", run.display()))?;
    let has_memory = std::fs::read_to_string(run.join("cgroup.subtree_control"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
    let memory_v1_run = match (has_memory, v1_memory_mount, own_memory_v1) {
        (false, Some(mount), Some(own)) => {
            let home = under(&mount, &own);
            remove_stale(&home);
            let run = home.join(format!("strata-{pid}"));
            match std::fs::create_dir(&run) {
                Ok(()) => Some(run),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Some(run),
                Err(_) => None,
            }
        }
        _ => None,
    };
    // Created only to prove it can be; each task creates it again if the last one removed it.
    let _ = std::fs::remove_dir(&run);
    if let Some(run) = &memory_v1_run {
        let _ = std::fs::remove_dir(run);
    }
    Ok(Hierarchy { run, memory_v1_run })
}

/// Removes the cgroups of strata processes that are gone (killed before they could clean up).
/// Their tasks died with them, but a PID namespace takes a moment to empty: wait for that a
/// little (never kill: a cgroup that stays populated is not ours to judge) and leave the rest to
/// a later run.
fn remove_stale(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_millis(500);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("strata-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let run = entry.path();
        if let Ok(leaves) = std::fs::read_dir(&run) {
            for leaf in leaves.flatten().filter(|l| l.path().is_dir()) {
                while populated(&leaf.path()) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = std::fs::remove_dir(leaf.path());
            }
        }
        let _ = std::fs::remove_dir(&run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_both_hierarchies_of_a_hybrid_host() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup_mounts(mountinfo),
            (
                Some(PathBuf::from("/sys/fs/cgroup/unified")),
                Some(PathBuf::from("/sys/fs/cgroup/memory"))
            )
        );
        let own = "9:name=systemd:/\n4:memory:/jobs/42\n1:cpu:/\n0::/\n";
        assert_eq!(
            own_cgroups(own),
            (Some("/".to_string()), Some("/jobs/42".to_string()))
        );
        assert_eq!(
            under(Path::new("/sys/fs/cgroup/memory"), "/jobs/42"),
            PathBuf::from("/sys/fs/cgroup/memory/jobs/42")
        );
        assert_eq!(
            under(Path::new("/sys/fs/cgroup"), "/"),
            PathBuf::from("/sys/fs/cgroup")
        );
    }

    #[test]
    fn finds_a_unified_host_and_unescapes_mount_points() {
        let mountinfo = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
             50 23 0:40 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup_mounts(mountinfo),
            (Some(PathBuf::from("/sys/fs/cgroup")), None)
        );
        assert_eq!(
            unescape("/mnt/my\\040cgroups"),
            PathBuf::from("/mnt/my cgroups")
        );
        assert_eq!(
            own_cgroups("0::/system.slice/runner.service\n"),
            (Some("/system.slice/runner.service".to_string()), None)
        );
    }

    #[test]
    fn a_leaf_is_always_fresh() {
        let run = tempfile::tempdir().unwrap();
        let leaf = || make_leaf(run.path(), "build").unwrap();
        assert_eq!(leaf(), run.path().join("build"));
        // Taken (not removed, or another run of this process): never shared.
        assert_eq!(leaf(), run.path().join("build.1"));
        assert_eq!(leaf(), run.path().join("build.2"));
        let gone = make_leaf(&run.path().join("gone"), "x").unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn the_notice_is_given_once() {
        // Other tests in this process may have taken it already; after one call it is gone.
        let _ = take_notice("x");
        assert_eq!(take_notice("no cgroup2 hierarchy is mounted"), None);
    }
}
