//! One function per kind of fault. A trial sets up its own caches (and its own remote prefix,
//! repository or directory), injects the fault at a point its generator chose, then checks the
//! invariants (`checks.rs`) and records what broke.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::checks;
use crate::pipelines::{self, REFERENCE_SALT};
use crate::rng::Rng;
use crate::world::{Outcome, Remote, RemoteKind, World};

/// Every kind, in the order the campaign cycles through them.
pub const KINDS: &[&str] = &[
    "kill-task",
    "kill-publish",
    "kill-restore",
    "server-kill",
    "blob-corrupt",
    "archive-swap",
    "concurrent",
    "enospc",
    "odd-files",
    "yaml-bomb",
    "closed-stdout",
    "sigint",
    "kill-prune",
    "corrupt-index",
    "big-output",
    "sandbox",
];

const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Address-space limits for the trials that may make strata grow without bound, so that a
/// failing trial cannot take the machine's memory from others (a 706-byte YAML file once reached
/// 21 GB): strata then fails its allocation, which the trial reports.
const BOMB_MEMORY: u64 = 2 << 30;
const OUTPUT_MEMORY: u64 = 4 << 30;

/// The listings of fresh builds of the two pipelines (salt `REFERENCE_SALT`).
pub struct References {
    pub main: Vec<String>,
    pub odd: Vec<String>,
    /// `strata cache prune` exists in the binary under test.
    pub prune: bool,
    /// `strata cache verify` exists.
    pub verify: bool,
}

pub struct Trial<'a> {
    pub world: &'a mut World,
    pub refs: &'a References,
    pub n: u64,
    pub rng: Rng,
    /// The fault as chosen: remote, point, mode.
    pub variant: Vec<String>,
    pub failures: Vec<String>,
    /// Caches whose entries are verified at the end.
    caches: Vec<PathBuf>,
    /// A tmpfs the trial mounted (not a leak).
    disk: Option<PathBuf>,
}

impl<'a> Trial<'a> {
    pub fn new(world: &'a mut World, refs: &'a References, seed: u64, n: u64) -> Trial<'a> {
        Trial {
            world,
            refs,
            n,
            rng: Rng::for_trial(seed, n),
            variant: Vec::new(),
            failures: Vec::new(),
            caches: Vec::new(),
            disk: None,
        }
    }

    pub fn run(&mut self, kind: &str) {
        match kind {
            "kill-task" => self.kill_task(libc::SIGKILL),
            "sigint" => self.kill_task(libc::SIGINT),
            "kill-publish" => self.kill_publish(),
            "kill-restore" => self.kill_restore(),
            "server-kill" => self.server_kill(),
            "blob-corrupt" => self.blob_corrupt(),
            "archive-swap" => self.archive_swap(),
            "concurrent" => self.concurrent(),
            "enospc" => self.enospc(),
            "odd-files" => self.odd_files(),
            "yaml-bomb" => self.yaml_bomb(),
            "closed-stdout" => self.closed_stdout(),
            "kill-prune" => self.kill_prune(),
            "corrupt-index" => self.corrupt_index(),
            "big-output" => self.big_output(),
            "sandbox" => self.sandbox(),
            other => panic!("unknown kind {other}"),
        }
        self.final_checks();
    }

    fn note(&mut self, s: impl Into<String>) {
        self.variant.push(s.into());
    }

    fn fail(&mut self, found: Vec<String>) {
        self.failures.extend(found);
    }

    fn salt(&self, tag: &str) -> String {
        format!("salt-t{}{tag}", self.n)
    }

    fn expected_main(&self, salt: &str) -> Vec<String> {
        self.refs
            .main
            .iter()
            .map(|l| l.replace(REFERENCE_SALT, salt))
            .collect()
    }

    fn cache(&mut self, name: &str) -> PathBuf {
        let p = self.world.root.join(format!("t{}-cache-{name}", self.n));
        self.caches.push(p.clone());
        p
    }

    fn ws_main(&self, salt: &str) -> PathBuf {
        let yaml = pipelines::main(salt, &self.world.marker);
        self.world
            .workspace(&format!("t{}-ws-{salt}", self.n), yaml.as_bytes())
    }

    fn pick_remote(&mut self, kinds: &[RemoteKind]) -> Remote {
        let kind = *self.rng.pick(kinds);
        let r = self.world.remote(kind, self.n);
        self.note(format!("{kind:?}"));
        r
    }

    fn good(&mut self, out: &Outcome, expected: &[String], what: &str) {
        let mut found = checks::good_run(out, expected, what);
        found.extend(checks::no_panic(out, what));
        if !found.is_empty() {
            // Kept with the trial's directories (a failed trial's are not removed).
            let path = self.world.root.join(format!(
                "t{}-events-{}.jsonl",
                self.n,
                what.replace(' ', "-")
            ));
            let lines: Vec<String> = out.events.iter().map(|e| e.to_string()).collect();
            let _ = std::fs::write(&path, lines.join("\n"));
            found.push(format!("its events: {}", path.display()));
        }
        self.fail(found);
    }

    /// Right after a kill: no task process and no mount may outlive strata.
    fn no_leaks_now(&mut self) {
        let disk = self.disk.clone();
        let allowed: Vec<&Path> = disk.iter().map(|d| d.as_path()).collect();
        let found = checks::leaked_mounts(self.world, &allowed);
        self.fail(found);
        let found = checks::leaked_processes(self.world);
        self.fail(found);
    }

    fn final_checks(&mut self) {
        self.no_leaks_now();
        let found = checks::leaked_cgroups(self.world);
        self.fail(found);
        for cache in self.caches.clone() {
            self.fail(checks::corrupt_entries(&cache));
            if self.refs.verify {
                let found = checks::strata_verify(self.world, &cache);
                self.fail(found);
            }
        }
        if let Some(disk) = self.disk.take() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&disk)
                .status();
        }
    }

    /// A run on a fresh cache that must succeed: fills `remote`.
    fn populate(&mut self, ws: &Path, remote: &Remote, salt: &str) -> PathBuf {
        let a = self.cache("a");
        let out = self.world.run(ws, &a, Some(remote), RUN_LIMIT);
        let expected = self.expected_main(salt);
        self.good(&out, &expected, "populating run");
        a
    }

    /// SIGKILL (or SIGINT) while a task runs, then the same machine and a fresh one run again.
    fn kill_task(&mut self, sig: i32) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let task = *self.rng.pick(&["gen", "lib", "tool", "app"]);
        let delay = self.rng.range(0, 900);
        self.note(format!(
            "{} while `{task}` runs, +{delay} ms",
            sig_name(sig)
        ));
        let mut r = self.world.start_run(&ws, &a, Some(&remote));
        let started = r.wait_for(RUN_LIMIT, |e| is(e, "task-started", task));
        std::thread::sleep(Duration::from_millis(delay));
        r.signal(sig);
        let out = r.finish(Duration::from_secs(60));
        if !started {
            self.note("task never started");
        }
        self.fail(checks::no_panic(&out, "killed run"));
        if sig == libc::SIGINT {
            if out.code == Some(0) {
                self.note("ended before the signal");
            } else if out.code != Some(130) {
                self.fail(vec![format!(
                    "interrupted run: exit {:?}, README says 130 ({})",
                    out.code,
                    out.describe()
                )]);
            }
        }
        self.no_leaks_now();
        let expected = self.expected_main(&salt);
        let out = self.world.run(&ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "same machine after the kill");
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "another machine after the kill");
    }

    /// SIGKILL once a task passed, while its layer is archived and uploaded.
    fn kill_publish(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let task = *self.rng.pick(&["gen", "gen", "lib", "tool", "app"]);
        let delay = self.rng.range(0, 500);
        let mut r = self.world.start_run(&ws, &a, Some(&remote));
        let passed = r.wait_for(RUN_LIMIT, |e| is(e, "task-passed", task));
        std::thread::sleep(Duration::from_millis(delay));
        r.signal(libc::SIGKILL);
        let pushed = r.events.iter().any(|e| is(e, "task-pushed", task));
        let out = r.finish(Duration::from_secs(60));
        self.note(format!(
            "SIGKILL +{delay} ms after `{task}` passed{}{}",
            if passed { "" } else { " (never passed)" },
            if pushed {
                ", already pushed"
            } else {
                ", before its push ended"
            }
        ));
        self.fail(checks::no_panic(&out, "killed run"));
        self.no_leaks_now();
        let expected = self.expected_main(&salt);
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "another machine after the kill");
        let out = self.world.run(&ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "same machine after the kill");
    }

    /// SIGKILL while a fresh machine restores layers from the remote.
    fn kill_restore(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        self.populate(&ws, &remote, &salt);
        let b = self.cache("b");
        let task = *self.rng.pick(&["gen", "gen", "lib", "tool"]);
        let delay = self.rng.range(0, 300);
        let mut r = self.world.start_run(&ws, &b, Some(&remote));
        let hit = r.wait_for(RUN_LIMIT, |e| {
            is(e, "task-restored", task) && e["from"] != "local"
        });
        std::thread::sleep(Duration::from_millis(delay));
        r.signal(libc::SIGKILL);
        let restored = r.events.iter().any(|e| is(e, "layer-fetched", task));
        let out = r.finish(Duration::from_secs(60));
        self.note(format!(
            "SIGKILL +{delay} ms after `{task}` hit the remote{}{}",
            if hit { "" } else { " (no remote hit seen)" },
            if restored {
                ", layer already restored"
            } else {
                ", mid-restore"
            }
        ));
        self.fail(checks::no_panic(&out, "killed run"));
        self.no_leaks_now();
        let expected = self.expected_main(&salt);
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "same machine after the kill");
    }

    /// The server dies while a fresh machine restores from it: the run must still succeed.
    fn server_kill(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        self.populate(&ws, &remote, &salt);
        let b = self.cache("b");
        let delay = self.rng.range(0, 250);
        let mut r = self.world.start_run(&ws, &b, Some(&remote));
        let hit = r.wait_for(RUN_LIMIT, |e| e["event"] == "task-restored");
        std::thread::sleep(Duration::from_millis(delay));
        let restored = r
            .events
            .iter()
            .filter(|e| e["event"] == "layer-fetched")
            .count();
        if let Some(server) = self.world.server(remote.kind) {
            server.kill();
        }
        let out = r.finish(RUN_LIMIT);
        self.note(format!(
            "server killed +{delay} ms after the first remote hit{}, {restored} layers restored by then",
            if hit { "" } else { " (no hit seen)" }
        ));
        let expected = self.expected_main(&salt);
        self.good(&out, &expected, "run whose server died");
        if let Some(server) = self.world.server(remote.kind) {
            server.restart();
        }
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "same machine once the server is back");
    }

    /// A blob of the remote flipped, truncated or deleted; a fresh machine must build instead.
    fn blob_corrupt(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        self.populate(&ws, &remote, &salt);
        let mut blobs = blob_files(&remote);
        blobs.sort_by_key(|(p, size)| (std::cmp::Reverse(*size), p.clone()));
        if blobs.is_empty() {
            self.fail(vec![format!(
                "no blob found under {}",
                remote.files.display()
            )]);
            return;
        }
        let (victim, size) = if self.rng.chance(50) || remote.kind == RemoteKind::Registry {
            blobs[0].clone()
        } else {
            self.rng.pick(&blobs).clone()
        };
        let mode = *self.rng.pick(&["flip", "truncate", "delete"]);
        let at = self.rng.range(0, size.saturating_sub(1));
        match mode {
            "flip" => {
                let mut bytes = std::fs::read(&victim).unwrap_or_default();
                if let Some(b) = bytes.get_mut(at as usize) {
                    *b ^= 0x5a;
                }
                let _ = std::fs::write(&victim, bytes);
            }
            "truncate" => {
                let f = std::fs::OpenOptions::new().write(true).open(&victim);
                let _ = f.and_then(|f| f.set_len(at));
            }
            _ => {
                let _ = std::fs::remove_file(&victim);
            }
        }
        let name = victim
            .strip_prefix(&remote.files)
            .unwrap_or(&victim)
            .display()
            .to_string();
        self.note(format!("{mode} at byte {at} of {name} ({size} bytes)"));
        let expected = self.expected_main(&salt);
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "fresh machine over the damaged remote");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "its second run");
    }

    /// An entry's archive replaced by another valid archive, digests updated, layer name kept.
    fn archive_swap(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        self.populate(&ws, &remote, &salt);
        let victim = *self.rng.pick(&["gen", "lib", "tool", "app"]);
        let donor = *self.rng.pick(&["gen", "lib", "tool", "app"]);
        let donor = if donor == victim { "tool" } else { donor };
        let donor = if donor == victim { "gen" } else { donor };
        self.note(format!("`{victim}` given the archive of `{donor}`"));
        let entries = entry_files(&remote);
        let find = |task: &str| entries.iter().find(|(_, v)| v["task"] == task).cloned();
        let (Some((path, mut entry)), Some((_, other))) = (find(victim), find(donor)) else {
            self.fail(vec![format!(
                "entries of `{victim}` and `{donor}` not found under {}",
                remote.files.display()
            )]);
            return;
        };
        entry["archive"] = other["archive"].clone();
        let _ = std::fs::write(&path, serde_json::to_vec(&entry).unwrap_or_default());
        let expected = self.expected_main(&salt);
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "fresh machine over the swapped archive");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "its second run");
    }

    /// Several runs at once: most on one local cache, one on its own, all on one remote.
    fn concurrent(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let b = self.cache("b");
        let shared = self.rng.range(2, 4) as usize;
        self.note(format!(
            "{shared} runs on one cache + 1 on another, one remote"
        ));
        let mut running = Vec::new();
        for i in 0..=shared {
            let cache = if i < shared { &a } else { &b };
            running.push(self.world.start_run(&ws, cache, Some(&remote)));
        }
        let outs: Vec<Outcome> = running.into_iter().map(|r| r.finish(RUN_LIMIT)).collect();
        let expected = self.expected_main(&salt);
        for (i, out) in outs.iter().enumerate() {
            self.good(out, &expected, &format!("concurrent run {i}"));
        }
        for task in ["gen", "lib", "tool", "app"] {
            let ran = outs[..shared]
                .iter()
                .filter(|o| o.status(task) == "ran")
                .count();
            if ran > 1 {
                self.fail(vec![format!(
                    "`{task}` ran {ran} times in {shared} concurrent runs on one cache (one execution per key)"
                )]);
            }
        }
    }

    /// A full disk: the cache on a small tmpfs.
    fn enospc(&mut self) {
        let mode = *self.rng.pick(&["fill-and-fail", "near-full"]);
        let size = match mode {
            "fill-and-fail" => self.rng.range(48, 80),
            _ => self.rng.range(16, 40),
        };
        let disk = self.world.root.join(format!("t{}-disk", self.n));
        let _ = std::fs::create_dir_all(&disk);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}m"), "tmpfs"])
            .arg(&disk)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            self.fail(vec!["could not mount a tmpfs".into()]);
            return;
        }
        self.disk = Some(disk.clone());
        let cache = disk.join("cache");
        self.caches.push(cache.clone());
        let salt = self.salt("");
        let (mb, fail) = match mode {
            "fill-and-fail" => (size + 10, true),
            _ => (size.saturating_sub(self.rng.range(0, 4)), false),
        };
        self.note(format!("{mode}: tmpfs {size} MB, task writes {mb} MB"));
        let yaml = pipelines::filler(&salt, &self.world.marker, mb, fail);
        let ws = self
            .world
            .workspace(&format!("t{}-ws-fill", self.n), yaml.as_bytes());
        let out = self.world.run(&ws, &cache, None, RUN_LIMIT);
        self.note(format!("exit {:?}", out.code));
        self.fail(checks::no_panic(&out, "run on a full disk"));
        match out.code {
            Some(0) | Some(3) => {}
            Some(1) => {
                // 1 means a task failed: its command must have exited non-zero. strata's own
                // trouble (commit, index, log) is 3.
                for e in out.events.iter().filter(|e| e["event"] == "task-failed") {
                    if e["exit_code"].as_i64().unwrap_or(0) == 0 {
                        self.fail(vec![format!(
                            "exit 1 for strata's own failure (README: 3): `{}` failed with {}",
                            e["task"].as_str().unwrap_or(""),
                            e["reason"]
                        )]);
                    }
                }
            }
            _ => self.fail(vec![format!(
                "run on a full disk: undocumented exit ({})",
                out.describe()
            )]),
        }
        if mode == "fill-and-fail" {
            // The failure must not wedge the cache: a normal pipeline fits and runs.
            let ws = self.ws_main(&salt);
            let expected = self.expected_main(&salt);
            let out = self.world.run(&ws, &cache, None, RUN_LIMIT);
            self.good(&out, &expected, "next run on the same disk");
        }
    }

    /// Odd names and types survive commit, publish and restore on another machine.
    fn odd_files(&mut self) {
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let salt = self.salt("");
        let yaml = pipelines::odd(&salt, &self.world.marker);
        let ws = self
            .world
            .workspace(&format!("t{}-ws-odd", self.n), yaml.as_bytes());
        let expected: Vec<String> = self
            .refs
            .odd
            .iter()
            .map(|l| l.replace(REFERENCE_SALT, &salt))
            .collect();
        let a = self.cache("a");
        let out = self.world.run(&ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "building machine");
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "restoring machine");
        for task in ["odd", "over"] {
            if out.status(task) != "restored" {
                self.fail(vec![format!(
                    "restoring machine: `{task}` was {} instead of restored ({})",
                    out.status(task),
                    out.describe()
                )]);
            }
        }
    }

    /// A YAML bomb: a clear error (exit 2) fast, in little memory, the cache untouched.
    fn yaml_bomb(&mut self) {
        let kind = *self.rng.pick(&["laughs", "deep", "huge", "doubling"]);
        let cmd = *self.rng.pick(&["check", "plan", "run"]);
        let bytes = pipelines::bomb(kind, &mut self.rng);
        self.note(format!("{kind} ({} bytes) to `strata {cmd}`", bytes.len()));
        let ws = self
            .world
            .workspace(&format!("t{}-ws-bomb", self.n), &bytes);
        // A forked child counts its parent's pages in its peak RSS until it execs: hold nothing
        // big while strata starts.
        drop(bytes);
        let cache = self.world.root.join(format!("t{}-never", self.n));
        let stderr_path = ws.join("stderr");
        let mut command = self.world.command(&ws, &cache, &[cmd, "strata.yml"]);
        limit_memory(&mut command, BOMB_MEMORY);
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start strata");
        self.world.spawned.push(child.id());
        let (status, rss_kb, wall) = wait_with_usage(child, Duration::from_secs(10));
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let first = stderr
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        self.note(format!(
            "exit {status:?} in {} ms, {} MB max RSS: {first}",
            wall.as_millis(),
            rss_kb / 1024
        ));
        if status != Some(2) {
            self.fail(vec![format!(
                "{kind} bomb: exit {status:?}, want 2: {first}"
            )]);
        }
        if wall > Duration::from_secs(5) {
            self.fail(vec![format!("{kind} bomb: took {} ms", wall.as_millis())]);
        }
        if rss_kb > 100 * 1024 {
            self.fail(vec![format!(
                "{kind} bomb: {} MB max RSS (cap 100 MB)",
                rss_kb / 1024
            )]);
        }
        if cache.exists() {
            self.fail(vec![format!(
                "{kind} bomb: the cache directory was created"
            )]);
        }
    }

    /// stdout is a pipe nobody reads: commands end quietly, a run still finishes its work.
    fn closed_stdout(&mut self) {
        let what = *self.rng.pick(&[
            "plan",
            "check",
            "explain",
            "logs",
            "run --json",
            "run",
            "run --json, reader leaves",
        ]);
        self.note(what);
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let expected = self.expected_main(&salt);
        if !what.starts_with("run") {
            let out = self.world.run(&ws, &a, None, RUN_LIMIT);
            self.good(&out, &expected, "first run");
        }
        let out = if what == "run --json, reader leaves" {
            let mut r = self.world.start_run(&ws, &a, None);
            r.wait_for(RUN_LIMIT, |e| e["event"] == "task-started");
            r.close_stdout();
            r.finish(RUN_LIMIT)
        } else {
            let args: Vec<&str> = match what {
                "plan" => vec!["plan", "strata.yml"],
                "check" => vec!["check", "strata.yml"],
                "explain" => vec!["explain", "strata.yml", "verify"],
                "logs" => vec!["logs", "strata.yml", "gen"],
                "run --json" => vec!["run", "--json", "--no-remote"],
                _ => vec!["run", "--no-remote"],
            };
            closed_pipe_run(self.world, &ws, &a, &args)
        };
        self.fail(checks::no_panic(&out, what));
        let ok = out.code == Some(0) || (out.code.is_none() && out.signal == Some(libc::SIGPIPE));
        if !ok || (what.starts_with("run") && out.code != Some(0)) {
            self.fail(vec![format!(
                "`strata {what}` into a closed pipe: {}",
                out.describe()
            )]);
        }
        if what.starts_with("run") {
            // The run did its work: a second run restores everything, with the right files.
            let out = self.world.run(&ws, &a, None, RUN_LIMIT);
            self.good(&out, &expected, "run after the closed-pipe run");
            for task in ["gen", "lib", "tool", "app"] {
                if out.status(task) != "restored" {
                    self.fail(vec![format!(
                        "the closed-pipe run did not store `{task}` ({})",
                        out.describe()
                    )]);
                }
            }
        }
    }

    /// A damaged SQLite index: the run rebuilds (exit 0, right files) or stops with exit 3 and
    /// says so; never exit 1 (a task did not fail) and never a panic.
    fn corrupt_index(&mut self) {
        let salt = self.salt("");
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let expected = self.expected_main(&salt);
        let out = self.world.run(&ws, &a, None, RUN_LIMIT);
        self.good(&out, &expected, "first run");
        // Let the detached flush finish so the damage is not undone by a checkpoint.
        let _ = checks::leaked_processes(self.world);
        let index = a.join("index.sqlite");
        let len = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
        let mode = *self
            .rng
            .pick(&["flip-page", "zero-page", "truncate", "garbage-header"]);
        let page = 4096;
        let pages = (len / page).max(1);
        let at = self.rng.range(0, pages - 1) * page + self.rng.range(0, page - 1);
        match mode {
            "flip-page" | "zero-page" => {
                let mut bytes = std::fs::read(&index).unwrap_or_default();
                let start = (at / page * page) as usize;
                let end = (start + page as usize).min(bytes.len());
                for (i, b) in bytes[start..end].iter_mut().enumerate() {
                    *b = if mode == "zero-page" {
                        0
                    } else {
                        *b ^ (i as u8 | 1)
                    };
                }
                let _ = std::fs::write(&index, bytes);
            }
            "truncate" => {
                let f = std::fs::OpenOptions::new().write(true).open(&index);
                let _ = f.and_then(|f| f.set_len(at));
            }
            _ => {
                let mut bytes = std::fs::read(&index).unwrap_or_default();
                for b in bytes.iter_mut().take(100) {
                    *b = 0x42;
                }
                let _ = std::fs::write(&index, bytes);
            }
        }
        self.note(format!("{mode} at byte {at} of {len}"));
        let out = self.world.run(&ws, &a, None, RUN_LIMIT);
        self.note(format!("exit {:?}", out.code));
        self.fail(checks::no_panic(&out, "run over the damaged index"));
        match out.code {
            Some(0) => {
                let found = checks::wrong_result(&out, &expected, "run over the damaged index");
                self.fail(found);
                // The damage may sit where this run did not look: `cache verify` must then
                // say the index is damaged and how to start afresh, not pass it.
                if self.refs.verify {
                    let found: Vec<String> = checks::strata_verify(self.world, &a)
                        .into_iter()
                        .filter(|m| !(m.contains("index is damaged") && m.contains("aside")))
                        .collect();
                    self.fail(found);
                    self.caches.retain(|c| c != &a);
                }
            }
            Some(3) => {
                // Reported, not repaired: the entries check cannot read this index. Issue 11
                // asks that the message say how to repair it.
                self.caches.retain(|c| c != &a);
                // A `help:` line (the index could not be opened) or the failed task's reason
                // (it could be opened, and a write met the damage): either says what to do.
                let reasons: Vec<String> = out
                    .events
                    .iter()
                    .filter(|e| e["event"] == "task-failed")
                    .filter_map(|e| e["reason"].as_str().map(str::to_string))
                    .collect();
                let help = out
                    .stderr
                    .lines()
                    .map(str::to_string)
                    .chain(reasons)
                    .find(|l| {
                        l.starts_with("help:")
                            || (l.contains("index is damaged") && l.contains("aside"))
                    });
                match help {
                    Some(help) => self.note(format!("said: {help}")),
                    None => {
                        let first = out.stderr.lines().next().unwrap_or("").to_string();
                        self.fail(vec![format!(
                            "a damaged index stops every run (exit 3) and the message says no repair: {first}"
                        )]);
                    }
                }
                let again = self.world.run(&ws, &a, None, RUN_LIMIT);
                if again.code != Some(0) {
                    self.note(format!("the next run: exit {:?} too", again.code));
                }
            }
            _ => self.fail(vec![format!(
                "run over a damaged index: exit {:?}, want 0 (rebuilt) or 3 ({})",
                out.code,
                out.describe()
            )]),
        }
    }

    /// A task that prints a lot: strata's memory stays bounded and the run succeeds.
    fn big_output(&mut self) {
        let one_line = self.rng.chance(30);
        let mb = if one_line {
            self.rng.range(20, 100)
        } else {
            self.rng.range(50, 300)
        };
        let json = self.rng.chance(50);
        self.note(format!(
            "{mb} MB {} with{} --json",
            if one_line { "in one line" } else { "in lines" },
            if json { "" } else { "out" }
        ));
        let salt = self.salt("");
        let yaml = pipelines::output(&salt, &self.world.marker, mb, one_line);
        let ws = self
            .world
            .workspace(&format!("t{}-ws-talk", self.n), yaml.as_bytes());
        let a = self.cache("a");
        let mut args = vec!["run", "--no-remote"];
        if json {
            args.push("--json");
        }
        let stderr_path = ws.join("stderr");
        let mut command = self.world.command(&ws, &a, &args);
        limit_memory(&mut command, OUTPUT_MEMORY);
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start strata");
        self.world.spawned.push(child.id());
        let (status, rss_kb, wall) = wait_with_usage(child, RUN_LIMIT);
        let rate = mb as f64 / wall.as_secs_f64().max(0.001);
        self.note(format!(
            "exit {status:?}, {} MB max RSS, {:.1} s ({rate:.0} MB/s)",
            rss_kb / 1024,
            wall.as_secs_f64()
        ));
        if status != Some(0) {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            self.fail(vec![format!(
                "big output: exit {status:?}: {}",
                stderr.lines().last().unwrap_or("")
            )]);
        }
        if rss_kb > 100 * 1024 {
            self.fail(vec![format!(
                "big output: strata peaked at {} MB RSS (issue 11: under 100 MB)",
                rss_kb / 1024
            )]);
        }
    }

    /// A task tries to reach the host (issue 11's list); every attempt must be refused.
    fn sandbox(&mut self) {
        let salt = self.salt("");
        let yaml = pipelines::sandbox(&salt, &self.world.marker);
        let ws = self
            .world
            .workspace(&format!("t{}-ws-probe", self.n), yaml.as_bytes());
        let a = self.cache("a");
        let out = self.world.run(&ws, &a, None, RUN_LIMIT);
        self.fail(checks::no_panic(&out, "probe"));
        if out.code != Some(0) {
            self.fail(vec![format!("probe run failed: {}", out.describe())]);
        }
        let lines = out.output("probe");
        let escaped: Vec<&String> = lines.iter().filter(|l| l.starts_with("ESCAPED")).collect();
        self.note(format!(
            "{} attempts, {} refused",
            lines.len(),
            lines.len() - escaped.len()
        ));
        for l in escaped {
            self.fail(vec![format!("the sandbox let a task reach the host: {l}")]);
        }
        for dir in [
            format!("/sys/fs/cgroup/chaos-{}", self.world.marker),
            format!("/sys/fs/cgroup/memory/chaos-{}", self.world.marker),
        ] {
            if std::fs::remove_dir(&dir).is_ok() {
                self.fail(vec![format!("a task created the host cgroup {dir}")]);
            }
        }
    }

    /// `strata cache prune` killed at a chosen point, or racing a run, on the local cache or a
    /// shared one; afterwards every machine's run is still right.
    fn kill_prune(&mut self) {
        if !self.refs.prune {
            self.note("not covered: this strata has no `cache prune`");
            return;
        }
        let mode = *self
            .rng
            .pick(&["kill-local", "race-local", "kill-remote", "race-remote"]);
        let remote = self.pick_remote(&[RemoteKind::S3, RemoteKind::Registry, RemoteKind::Dir]);
        let old_salt = self.salt("old");
        let salt = self.salt("");
        let old_ws = self.ws_main(&old_salt);
        let ws = self.ws_main(&salt);
        let a = self.cache("a");
        let old_expected = self.expected_main(&old_salt);
        let expected = self.expected_main(&salt);
        let out = self.world.run(&old_ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &old_expected, "older run");
        let delay = self.rng.range(0, 400);
        let args: Vec<&str> = if mode.ends_with("local") {
            vec!["cache", "prune", "--max-size", "1MB"]
        } else {
            vec![
                "cache",
                "prune",
                "--remote",
                &remote.url,
                "--older-than",
                "0s",
            ]
        };
        let shown = args.join(" ");
        if mode.starts_with("kill") {
            let out = self.world.run(&ws, &a, Some(&remote), RUN_LIMIT);
            self.good(&out, &expected, "newer run");
            let mut child = self
                .world
                .command(&ws, &a, &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prune");
            self.world.spawned.push(child.id());
            std::thread::sleep(Duration::from_millis(delay));
            let _ = child.kill();
            let status = child.wait().ok();
            self.note(format!(
                "SIGKILL +{delay} ms into `strata {shown}` ({})",
                if status.and_then(|s| s.code()).is_some() {
                    "it had finished"
                } else {
                    "killed"
                }
            ));
        } else {
            self.note(format!("`strata {shown}` started +{delay} ms into a run"));
            let r = self.world.start_run(&ws, &a, Some(&remote));
            std::thread::sleep(Duration::from_millis(delay));
            let status = self
                .world
                .command(&ws, &a, &args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            let out = r.finish(RUN_LIMIT);
            self.good(&out, &expected, "run racing prune");
            match status {
                Ok(o) if o.status.success() => {}
                Ok(o) => self.fail(vec![format!(
                    "`strata {shown}` racing a run: {:?}: {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                )]),
                Err(e) => self.fail(vec![format!("`strata {shown}`: {e}")]),
            }
        }
        self.no_leaks_now();
        let out = self.world.run(&ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "same machine after prune");
        let out = self.world.run(&old_ws, &a, Some(&remote), RUN_LIMIT);
        self.good(&out, &old_expected, "older pipeline after prune");
        let b = self.cache("b");
        let out = self.world.run(&ws, &b, Some(&remote), RUN_LIMIT);
        self.good(&out, &expected, "another machine after prune");
    }
}

fn is(e: &Value, event: &str, task: &str) -> bool {
    e["event"] == event && e["task"] == task
}

fn sig_name(sig: i32) -> &'static str {
    if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGKILL"
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk(&e.path(), out);
        } else if meta.is_file() {
            out.push((e.path(), meta.len()));
        }
    }
}

/// The blob files of a remote on disk: for a registry (whose store all trials share), only the
/// big ones, which belong to this trial's salted layers.
fn blob_files(remote: &Remote) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    match remote.kind {
        RemoteKind::Registry => {
            walk(&remote.files.join("blobs"), &mut files);
            files.retain(|(p, size)| *size > 1_000_000 && p.ends_with("data"));
        }
        _ => {
            walk(&remote.files, &mut files);
            files.retain(|(p, _)| {
                let rel = p.strip_prefix(&remote.files).unwrap_or(p);
                !rel.starts_with("entries") && !rel.starts_with("tmp")
            });
        }
    }
    files
}

fn entry_files(remote: &Remote) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    walk(&remote.files.join("entries"), &mut files);
    files
        .into_iter()
        .filter_map(|(p, _)| {
            let v = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, v))
        })
        .collect()
}

/// Caps the address space of the process `command` starts.
fn limit_memory(command: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reaps `child` with wait4 (killing it after `limit`): its exit code, its peak RSS in KB (with
/// that of the descendants it reaped), the time.
fn wait_with_usage(child: std::process::Child, limit: Duration) -> (Option<i32>, i64, Duration) {
    let pid = child.id() as i32;
    let start = Instant::now();
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code, usage.ru_maxrss, start.elapsed());
        }
        if r < 0 {
            return (None, 0, start.elapsed());
        }
        if start.elapsed() > limit && !killed {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs strata with stdout a pipe whose reading end is already closed.
fn closed_pipe_run(world: &mut World, ws: &Path, cache: &Path, args: &[&str]) -> Outcome {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) with a valid array.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: both descriptors were just created and are owned here.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let stderr_path = cache.with_extension("closed-pipe-stderr");
    let mut child = world
        .command(ws, cache, args)
        .stdout(Stdio::from(write))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start strata");
    world.spawned.push(child.id());
    let deadline = Instant::now() + RUN_LIMIT;
    let mut hung = false;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline && !hung {
            hung = true;
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    Outcome {
        code: status.code(),
        signal: status.signal(),
        events: Vec::new(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        hung,
    }
}
