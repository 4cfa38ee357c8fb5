//! The invariants checked after every trial. Each returns what it found wrong, in words a
//! report can carry; an empty list means it holds.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::world::{Outcome, World};

/// Mounts of the host whose line mentions the campaign's marker, except `allowed` (the tmpfs a
/// trial mounted itself).
pub fn leaked_mounts(world: &World, allowed: &[&Path]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(&world.marker))
        .filter(|l| {
            !allowed
                .iter()
                .any(|a| l.split(' ').nth(4) == Some(&*a.to_string_lossy()))
        })
        .map(|l| format!("leaked mount: {l}"))
        .collect()
}

fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(needle).then_some((pid, c))
        })
        .collect()
}

/// Processes left behind: anything whose command line carries the marker (task shells and their
/// `sleep 0.3<marker>`, sandbox helpers, strata itself). The detached `settle-cache` that
/// follows a run may take a moment: it is waited for, up to 30 s.
pub fn leaked_processes(world: &World) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = processes_with(&world.marker);
        let settling = found.iter().any(|(_, c)| c.contains("settle-cache"));
        if found.is_empty() {
            return Vec::new();
        }
        if Instant::now() > deadline || !settling {
            // A killed PID namespace takes a moment to empty.
            std::thread::sleep(Duration::from_millis(500));
            return processes_with(&world.marker)
                .into_iter()
                .map(|(pid, c)| {
                    format!(
                        "leaked process {pid}: {}",
                        c.chars().take(120).collect::<String>()
                    )
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// cgroups of strata processes of this campaign that are gone. A run removes those of killed
/// runs when it starts, so this is checked after a trial's last run.
pub fn leaked_cgroups(world: &World) -> Vec<String> {
    let mut leaked = Vec::new();
    for pid in &world.spawned {
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        for home in cgroup_homes() {
            let dir = home.join(format!("strata-{pid}"));
            if dir.exists() {
                leaked.push(format!("leaked cgroup {}", dir.display()));
            }
        }
    }
    leaked
}

/// Where strata makes its cgroups: this process's cgroup in the cgroup v2 hierarchy and, as a
/// fallback strata uses, in the v1 memory hierarchy (wherever they are mounted). Empty on a
/// machine with neither, where strata runs tasks without cgroups.
fn cgroup_homes() -> Vec<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount_of = |fs: &str, option: Option<&str>| {
        mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1).unwrap_or("");
            let ok = fstype == fs && option.is_none_or(|o| opts.split(',').any(|x| x == o));
            ok.then(|| std::path::PathBuf::from(left.split(' ').nth(4).unwrap_or("")))
        })
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut homes = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let mount = match ctrl {
            "" => mount_of("cgroup2", None),
            "memory" => mount_of("cgroup", Some("memory")),
            _ => None,
        };
        if let Some(mount) = mount {
            homes.push(mount.join(path));
        }
    }
    homes
}

/// Where the cgroup check looks, for the report.
pub fn cgroup_places() -> String {
    let v2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(" - cgroup2 ");
    let homes: Vec<String> = cgroup_homes()
        .iter()
        .map(|h| h.display().to_string())
        .collect();
    format!(
        "{} (cgroup v2 {})",
        homes.join(", "),
        if v2 {
            "mounted"
        } else {
            "not mounted: strata runs tasks without cgroups here"
        }
    )
}

/// Every entry of a local cache names a layer that is on disk and whose tree digest is its
/// name (strata has no `cache verify` yet: this hashes each layer with strata's own rule).
pub fn corrupt_entries(cache: &Path) -> Vec<String> {
    let index = cache.join("index.sqlite");
    if !index.exists() {
        return Vec::new();
    }
    let db = match rusqlite::Connection::open_with_flags(
        &index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(db) => db,
        Err(e) => return vec![format!("cannot open {}: {e}", index.display())],
    };
    let _ = db.busy_timeout(Duration::from_secs(10));
    let rows: Result<Vec<(String, String)>, _> = db
        .prepare("SELECT task, layer FROM entries")
        .and_then(|mut q| {
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            return vec![format!(
                "cannot read the entries of {}: {e}",
                index.display()
            )];
        }
    };
    let mut bad = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (task, layer) in rows {
        let hex = layer.rsplit(':').next().unwrap_or(&layer).to_string();
        if !seen.insert(hex.clone()) {
            continue;
        }
        let dir = cache.join("layers").join(&hex);
        if !dir.is_dir() {
            bad.push(format!("entry of `{task}` names missing layer {hex}"));
            continue;
        }
        match strata_key::tree_digest(&dir) {
            Ok(d) if d.to_hex() == hex => {}
            Ok(d) => bad.push(format!(
                "entry of `{task}` names layer {hex}, whose files hash to {}",
                d.to_hex()
            )),
            Err(e) => bad.push(format!("cannot hash layer {hex} of `{task}`: {e}")),
        }
    }
    bad
}

/// `strata cache verify` agrees that the local cache is sound.
pub fn strata_verify(world: &World, cache: &Path) -> Vec<String> {
    if !cache.join("index.sqlite").exists() {
        return Vec::new();
    }
    let out = std::process::Command::new(&world.strata)
        .args(["cache", "verify"])
        .env("STRATA_CACHE_DIR", cache)
        .output();
    match out {
        Ok(o) if o.status.success() => Vec::new(),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text.lines().take(4).collect();
            vec![format!(
                "`strata cache verify` of {}: exit {:?}: {}",
                cache.display(),
                o.status.code(),
                lines.join(" | ")
            )]
        }
        Err(e) => vec![format!("`strata cache verify`: {e}")],
    }
}

/// The `verify` task's listing is the fresh build's.
pub fn wrong_result(out: &Outcome, expected: &[String], what: &str) -> Vec<String> {
    let got = out.output("verify");
    if got == expected {
        return Vec::new();
    }
    if got.is_empty() {
        return vec![format!(
            "{what}: `verify` printed nothing ({})",
            out.describe()
        )];
    }
    // The right listing more than once: the files were right, but `verify` (`cache: false`) was
    // executed several times in one run.
    if !expected.is_empty()
        && got.len().is_multiple_of(expected.len())
        && got.chunks(expected.len()).all(|c| c == expected)
    {
        return vec![format!(
            "{what}: right files, but `verify` (cache: false) was executed {} times in one run",
            got.len() / expected.len()
        )];
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    vec![format!(
        "{what}: WRONG RESULT: listing differs from a fresh build at line {first}: got {:?}, want {:?}",
        got.get(first),
        expected.get(first)
    )]
}

/// A run that had to succeed did, with the right files.
pub fn good_run(out: &Outcome, expected: &[String], what: &str) -> Vec<String> {
    if out.code != Some(0) {
        return vec![format!("{what}: run failed: {}", out.describe())];
    }
    wrong_result(out, expected, what)
}

/// strata never panics (exit 101 or a panic message), whatever happened.
pub fn no_panic(out: &Outcome, what: &str) -> Vec<String> {
    if out.code == Some(101) || out.stderr.contains("panicked at") {
        vec![format!("{what}: strata panicked: {}", out.describe())]
    } else {
        Vec::new()
    }
}
