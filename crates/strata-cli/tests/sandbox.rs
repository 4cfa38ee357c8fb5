//! What a task may and may not do to the machine (docs/security.md), and its cgroup: as root, on
//! real namespaces, mounts and cgroups.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fixture, RunResult, processes_with};

/// Runs one task (not cached) whose script is `script`; `keys` are extra task keys.
fn run_task(name: &str, keys: &str, script: &str) -> (Fixture, RunResult) {
    let f = Fixture::new();
    let mut yaml = format!("tasks:\n  - key: {name}\n    cache: false\n{keys}    run: |\n");
    for line in script.lines() {
        yaml.push_str("      ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    f.write("strata.yml", &yaml);
    let r = f.run(&[]);
    (f, r)
}

fn passed(r: &RunResult, task: &str) -> Vec<String> {
    let output = r.output(task);
    assert_eq!(r.code, 0, "{task} failed: {output:#?}\n{}", r.stderr);
    output
}

/// The task's capability sets from /proc/self/status, by name (`CapEff`, `CapBnd`, ...).
fn capability(output: &[String], set: &str) -> u64 {
    let line = output
        .iter()
        .find(|l| l.starts_with(&format!("{set}:")))
        .unwrap_or_else(|| panic!("no {set} in {output:#?}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYSLOG: u32 = 34;
const CAP_CHOWN: u32 = 0;
const CAP_SETUID: u32 = 7;
const CAP_NET_RAW: u32 = 13;

/// The cgroup2 hierarchy's mount point: tests of cgroups must have one.
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
    });
    let mount = mount.expect("this test needs a cgroup2 hierarchy (none is mounted)");
    let probe = mount.join(format!("strata-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).expect("this test needs a writable cgroup2 hierarchy");
    std::fs::remove_dir(&probe).unwrap();
    mount
}

#[test]
fn the_task_keeps_only_dockers_default_capabilities() {
    let (_f, r) = run_task("caps", "", "grep ^Cap /proc/self/status");
    let out = passed(&r, "caps");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let caps = capability(&out, set);
        // moby's oci/caps/defaults.go: 14 capabilities.
        assert_eq!(caps, 0xa80425fb, "{set} is {caps:#x}");
        for cap in [
            CAP_SYS_MODULE,
            CAP_SYS_RAWIO,
            CAP_SYS_ADMIN,
            CAP_SYS_TIME,
            CAP_SYSLOG,
        ] {
            assert_eq!(caps & (1 << cap), 0, "{set} has capability {cap}");
        }
        for cap in [CAP_CHOWN, CAP_SETUID, CAP_NET_RAW] {
            assert_ne!(caps & (1 << cap), 0, "{set} lacks capability {cap}");
        }
    }
    assert_eq!(capability(&out, "CapInh"), 0);
    assert_eq!(capability(&out, "CapAmb"), 0);
}

#[test]
fn a_task_cannot_remount_sys_read_write_nor_mount_anything() {
    let (_f, r) = run_task(
        "remount",
        "",
        "set +e\n\
         mount -o remount,rw /sys; echo sys=$?\n\
         mount -o remount,rw /sys/fs/cgroup; echo cgroup=$?\n\
         mkdir -p /mnt/t && mount -t tmpfs none /mnt/t; echo tmpfs=$?\n\
         touch /sys/strata-probe; echo touch=$?\n\
         grep -c ' /sys[ /].*ro,' /proc/self/mountinfo | sed 's/^/ro-sys-mounts=/'\n\
         grep ' /sys[ /]' /proc/self/mountinfo | grep -vc ' ro,' | sed 's/^/rw-sys-mounts=/'\n\
         true",
    );
    let out = passed(&r, "remount");
    for attempt in ["sys", "cgroup", "tmpfs", "touch"] {
        let line = out
            .iter()
            .find(|l| l.starts_with(&format!("{attempt}=")))
            .unwrap();
        assert_ne!(
            line,
            &format!("{attempt}=0"),
            "{attempt} succeeded: {out:#?}"
        );
    }
    // Every mount under /sys is read-only, not only its top.
    assert!(out.contains(&"rw-sys-mounts=0".to_string()), "{out:#?}");
    assert!(
        !out.contains(&"ro-sys-mounts=0".to_string()),
        "no /sys mount seen: {out:#?}"
    );
}

#[test]
fn a_task_cannot_write_host_sysctls_or_cgroups() {
    let mount = cgroup2_mount();
    let sysctl = "/proc/sys/vm/overcommit_ratio";
    let before = std::fs::read_to_string(sysctl).unwrap();
    let evil = mount.join("strata-test-evil");
    let (_f, r) = run_task(
        "sysctl",
        "",
        &format!(
            "set +e\n\
             echo {value} > {sysctl}; echo sysctl=$?\n\
             mkdir {evil}; echo cgroup=$?",
            evil = evil.display(),
            // The value it has: were the write allowed, the host would not change.
            value = before.trim()
        ),
    );
    let out = passed(&r, "sysctl");
    for attempt in ["sysctl", "cgroup"] {
        assert!(
            out.iter()
                .any(|l| l.starts_with(&format!("{attempt}=")) && l != &format!("{attempt}=0")),
            "{attempt} was not refused: {out:#?}"
        );
    }
    assert_eq!(std::fs::read_to_string(sysctl).unwrap(), before);
    assert!(!evil.exists(), "the task created a cgroup on the host");
}

#[test]
fn a_task_cannot_write_a_block_device_queue_setting() {
    let queue = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("queue/read_ahead_kb"))
        .find(|p| p.exists())
        .expect("this test needs a block device with a queue in /sys/block");
    let before = std::fs::read_to_string(&queue).unwrap();
    let (_f, r) = run_task(
        "queue",
        "",
        // The value it has: were the write allowed, the host would not change.
        &format!(
            "set +e\necho {} > {} ; echo write=$?",
            before.trim(),
            queue.display()
        ),
    );
    let out = passed(&r, "queue");
    assert!(
        out.iter()
            .any(|l| l.starts_with("write=") && l != "write=0"),
        "{out:#?}"
    );
    assert!(
        out.iter().any(|l| l.contains("Read-only file system")),
        "{out:#?}"
    );
    assert_eq!(std::fs::read_to_string(&queue).unwrap(), before);
}

#[test]
fn a_task_has_no_dev_kmsg_and_a_device_it_makes_is_inert() {
    let (_f, r) = run_task(
        "kmsg",
        "",
        "set +e\n\
         test -e /dev/kmsg; echo exists=$?\n\
         mknod /dev/kmsg c 1 11; echo hi > /dev/kmsg; echo dev=$?\n\
         mknod /workspace/kmsg c 1 11; echo mknod=$?\n\
         echo hi > /workspace/kmsg; echo write=$?\n\
         mknod $RWX_VALUES/kmsg c 1 11; echo hi > $RWX_VALUES/kmsg; echo outputs=$?; rm -f $RWX_VALUES/kmsg\n\
         cat /proc/keys | wc -c | sed 's/^/keys-bytes=/'",
    );
    let out = passed(&r, "kmsg");
    assert!(out.contains(&"exists=1".to_string()), "{out:#?}");
    assert!(
        out.iter().any(|l| l.starts_with("dev=") && l != "dev=0"),
        "{out:#?}"
    );
    // mknod itself works (package managers unpack device nodes), opening it does not.
    assert!(out.contains(&"mknod=0".to_string()), "{out:#?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("write=") && l != "write=0"),
        "{out:#?}"
    );
    // Nor in the outputs directory, bound from the host's filesystem.
    assert!(
        out.iter()
            .any(|l| l.starts_with("outputs=") && l != "outputs=0"),
        "{out:#?}"
    );
    // Masked as Docker masks it.
    assert!(out.contains(&"keys-bytes=0".to_string()), "{out:#?}");
}

#[test]
fn the_hostname_is_the_task_name_and_resolves() {
    let (_f, r) = run_task(
        "unit_tests",
        "",
        "hostname\ncat /proc/sys/kernel/hostname\ngetent hosts unit-tests | awk '{print \"resolves=\" $1}'\ncat /etc/hostname\ncat /etc/resolv.conf",
    );
    let out = passed(&r, "unit_tests");
    // `_` is not valid in a hostname.
    assert_eq!(out[0], "unit-tests");
    assert_eq!(out[1], "unit-tests");
    assert_eq!(out[2], "resolves=127.0.1.1");
    assert_eq!(out[3], "unit-tests");
    // On the host's own root too, the host's resolver configuration (a copy: the host's may be
    // a symlink into /run, which is the task's own tmpfs).
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    assert_eq!(out[4..].join("\n"), host_resolv.trim_end());
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "unit-tests"
    );
}

#[test]
fn sudo_chown_and_setuid_programs_work() {
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "this test needs sudo on the host"
    );
    let (_f, r) = run_task(
        "ci",
        "",
        "sudo -n id -u 2>&1 | sed 's/^/sudo=/'\n\
         touch /workspace/owned && chown 65534:65534 /workspace/owned\n\
         stat -c owner=%u:%g /workspace/owned\n\
         cp /usr/bin/id /usr/local/bin/strata-suid-id && chmod 4755 /usr/local/bin/strata-suid-id\n\
         setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo drop=$(id -u); echo suid=$(/usr/local/bin/strata-suid-id -u)'\n\
         set +e\n\
         setpriv --reuid=65534 --regid=65534 --clear-groups sudo -n true 2>/dev/null; echo nobody-sudo=$?",
    );
    let out = passed(&r, "ci");
    // No "unable to resolve host" line before it either.
    assert_eq!(out[0], "sudo=0", "{out:#?}");
    assert!(out.contains(&"owner=65534:65534".to_string()), "{out:#?}");
    assert!(out.contains(&"drop=65534".to_string()), "{out:#?}");
    assert!(out.contains(&"suid=0".to_string()), "{out:#?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("nobody-sudo=") && l != "nobody-sudo=0"),
        "{out:#?}"
    );
}

#[test]
fn apt_installs_a_package_whose_scripts_chown_and_setuid() {
    assert!(
        Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/dpkg-deb").exists(),
        "this test needs apt-get and dpkg-deb on the host"
    );
    // A local package: apt and dpkg run as they do for a download, without the network.
    let (_f, r) = run_task(
        "apt",
        "",
        "mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/local/bin\n\
         printf 'Package: strata-probe\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.com>\\nDescription: probe\\n' > /tmp/pkg/DEBIAN/control\n\
         printf '#!/bin/sh\\nset -e\\nchown nobody /usr/local/bin/strata-probe\\nchmod 4755 /usr/local/bin/strata-probe\\n' > /tmp/pkg/DEBIAN/postinst\n\
         printf '#!/bin/sh\\necho probe\\n' > /tmp/pkg/usr/local/bin/strata-probe\n\
         chmod 755 /tmp/pkg/DEBIAN/postinst /tmp/pkg/usr/local/bin/strata-probe\n\
         dpkg-deb --root-owner-group --build /tmp/pkg /workspace/probe.deb >/dev/null\n\
         apt-get install -y /workspace/probe.deb >/dev/null 2>&1\n\
         stat -c 'mode=%U %A' /usr/local/bin/strata-probe\n\
         dpkg -s strata-probe | grep '^Status'",
    );
    let out = passed(&r, "apt");
    assert!(
        out.contains(&"mode=nobody -rwsr-xr-x".to_string()),
        "{out:#?}"
    );
    assert!(
        out.contains(&"Status: install ok installed".to_string()),
        "{out:#?}"
    );
}

#[test]
fn privileged_true_grants_every_capability_and_is_keyed() {
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: plain\n    cache: false\n    run: grep ^CapEff /proc/self/status\n  \
         - key: dind\n    cache: false\n    privileged: true\n    run: |\n      \
         grep ^CapEff /proc/self/status\n      \
         mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted\n      \
         test -w /proc/sys/vm/overcommit_ratio && echo sysctl-writable\n",
    );
    let r = f.run(&[]);
    let plain = passed(&r, "plain");
    let dind = r.output("dind");
    let caps = capability(&dind, "CapEff");
    assert_ne!(caps & (1 << CAP_SYS_ADMIN), 0, "{dind:#?}");
    assert_eq!(capability(&plain, "CapEff") & (1 << CAP_SYS_ADMIN), 0);
    assert!(dind.contains(&"mounted".to_string()), "{dind:#?}");
    assert!(dind.contains(&"sysctl-writable".to_string()), "{dind:#?}");
    // Same command, different key: a privileged result is never reused for a plain task.
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    run: 'true'\n  - key: b\n    privileged: true\n    run: 'true'\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = |t| r.event("task-started", t).unwrap()["key"].clone();
    assert_ne!(key("a"), key("b"));
}

#[test]
fn a_timed_out_task_leaves_no_process_and_no_cgroup() {
    let mount = cgroup2_mount();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    timeout: 1s\n    run: |\n      \
         grep '^0::' /proc/self/cgroup\n      \
         (setsid sleep 4431 &) ; nohup sleep 4432 >/dev/null 2>&1 &\n      \
         sleep 4433\n",
    );
    let watcher = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(700));
        !processes_with("sleep 4431").is_empty() && !processes_with("sleep 4432").is_empty()
    });
    let r = f.run(&[]);
    assert!(
        watcher.join().unwrap(),
        "the background processes were never seen running"
    );
    assert_eq!(r.code, 1);
    let failed = r.event("task-failed", "slow").unwrap();
    assert!(failed["reason"].as_str().unwrap().contains("timed out"));
    for sleep in ["sleep 4431", "sleep 4432", "sleep 4433"] {
        assert!(processes_with(sleep).is_empty(), "`{sleep}` survived");
    }
    // The task ran in a leaf of its own, removed with it, and so is its run's cgroup.
    let line = &r.output("slow")[0];
    let path = line.strip_prefix("0::").unwrap();
    let leaf = Path::new(path);
    assert_eq!(leaf.file_name().unwrap(), "slow", "{line}");
    assert!(
        leaf.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("strata-"),
        "{line}"
    );
    let leaf = mount.join(path.trim_start_matches('/'));
    assert!(!leaf.exists(), "{} is left", leaf.display());
    assert!(!leaf.parent().unwrap().exists(), "the run's cgroup is left");
}

#[test]
fn cpu_time_and_peak_memory_are_reported() {
    cgroup2_mount();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: work\n    cache: false\n    run: |\n      \
         head -c 64000000 /dev/zero > /tmp/fill\n      \
         i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done\n  \
         - key: idle\n    cache: false\n    run: 'true'\n",
    );
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let passed = r.event("task-passed", "work").unwrap();
    let peak = passed["peak_memory_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak memory in {passed}"));
    let cpu = passed["cpu_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no CPU time in {passed}"));
    // 64 MB written to a tmpfs are charged to the task.
    assert!(peak >= 64_000_000, "peak {peak}");
    assert!(cpu >= 50, "cpu {cpu} ms");
    let summary = r.summary();
    assert_eq!(summary["tasks"]["work"]["peak_memory_bytes"], peak);
    assert_eq!(summary["tasks"]["work"]["cpu_ms"], cpu);
    let idle_cpu = summary["tasks"]["idle"]["cpu_ms"].as_u64().unwrap();
    assert!(idle_cpu < cpu, "idle {idle_cpu} >= work {cpu}");
    assert_eq!(summary["cpu_ms"].as_u64().unwrap(), cpu + idle_cpu);
    assert_eq!(summary["peak_memory_bytes"], peak);
    // The terminal says it too.
    let out = f.output(&["run", "--no-cache"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tasks that ran used") && stderr.contains("peak memory"),
        "{stderr}"
    );
}

#[test]
fn without_a_writable_cgroup_hierarchy_tasks_run_as_before_with_one_warning() {
    let mount = cgroup2_mount();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: a\n    cache: false\n    run: echo a\n  \
         - key: b\n    cache: false\n    run: echo b\n",
    );
    // strata in a mount namespace of its own where the cgroup2 hierarchy is read-only.
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -o remount,bind,ro \"$CGROUP2\" && exec \"$0\" run --json")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .env("CGROUP2", &mount)
        .env("STRATA_CACHE_DIR", f.cache.path())
        .current_dir(f.ws())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let warnings: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "warning").collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(message.contains("without a cgroup"), "{message}");
    for task in ["a", "b"] {
        let passed = events
            .iter()
            .find(|e| e["event"] == "task-passed" && e["task"] == task)
            .unwrap_or_else(|| panic!("{task} did not pass: {stdout}"));
        assert!(passed.get("cpu_ms").is_none(), "{passed}");
        assert!(passed.get("peak_memory_bytes").is_none(), "{passed}");
    }
}

/// Starts `strata run --json` and returns once `task` has printed a line.
fn start_until_output(f: &Fixture, task: &str) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = f
        .command(&["run", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let needle = format!("\"event\":\"task-output\",\"task\":\"{task}\"");
    loop {
        let line = lines
            .next()
            .expect("strata ended before the task printed")
            .unwrap();
        if line.contains(&needle) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn an_interrupt_kills_the_cgroup_and_removes_it() {
    let mount = cgroup2_mount();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    run: |\n      \
         (setsid sleep 4441 &)\n      echo started\n      sleep 4442\n",
    );
    let mut child = start_until_output(&f, "slow");
    let run = mount.join(format!("strata-{}", child.id()));
    assert!(run.join("slow").is_dir(), "{} is not there", run.display());
    // SAFETY: kill(2) on our own child.
    unsafe { kill(child.id() as i32, 2) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    for sleep in ["sleep 4441", "sleep 4442"] {
        assert!(processes_with(sleep).is_empty(), "`{sleep}` survived");
    }
    assert!(!run.exists(), "{} is left", run.display());
}

#[test]
fn the_cgroups_of_a_killed_strata_are_removed_by_the_next_run() {
    let mount = cgroup2_mount();
    let f = Fixture::new();
    f.write(
        "strata.yml",
        "tasks:\n  - key: slow\n    run: |\n      echo started\n      sleep 4451\n",
    );
    let mut child = start_until_output(&f, "slow");
    let run = mount.join(format!("strata-{}", child.id()));
    child.kill().unwrap(); // SIGKILL: strata cleans nothing up
    child.wait().unwrap();
    assert!(
        run.is_dir(),
        "{} should be left by a killed strata",
        run.display()
    );
    f.write("strata.yml", "tasks:\n  - key: next\n    run: 'true'\n");
    let r = f.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !run.exists(),
        "{} is left after the next run",
        run.display()
    );
    assert!(processes_with("sleep 4451").is_empty());
}
