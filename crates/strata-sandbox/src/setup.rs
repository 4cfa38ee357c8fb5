//! The mount sequence that turns a spec into the task's root filesystem.

use std::path::{Path, PathBuf};

use crate::spec::SandboxSpec;
use crate::syscalls::{FileKind, Syscalls};

/// Written by the helper into the scratch dir: mount points it had to create inside the upper
/// dir (one relative path per line, a directory before what it holds), to be removed, from the
/// last, before the upper dir is committed: empty directories and empty files.
pub const MOUNTPOINTS_FILE: &str = "created-mountpoints";
/// Written by the helper into the scratch dir when it cannot set up the sandbox.
pub const SETUP_ERROR_FILE: &str = "setup-error";

/// Directories the sandbox mounts over; created in the task's root if the stack lacks them.
const MOUNTPOINTS: &[&str] = &["proc", "dev", "sys", "tmp", "run"];
/// Device nodes bound from the host into the sandbox's fresh `/dev` (Docker's list; no
/// `kmsg`, no disks).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Paths hidden from a task, as Docker's default spec hides them (moby `oci/defaults.go`):
/// kernel memory, keys, timers and hardware the task has no business reading.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];
/// Paths of `/proc` made read-only, as Docker's default spec does: the host's sysctls, IRQ
/// affinities, the SysRq trigger. (`/sys` is read-only as a whole.)
pub(crate) const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Docker's default capabilities (moby `oci/caps/defaults.go`), by `CAP_*` number: what a
/// task keeps unless it is privileged. Enough for package managers (`chown`, `setuid`
/// binaries, `mknod`), `sudo`, `ping` and binding low ports; not enough to mount, load
/// modules, change the clock, read the kernel log or reach raw I/O.
pub const DEFAULT_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
    (8, "SETPCAP"),
    (10, "NET_BIND_SERVICE"),
    (13, "NET_RAW"),
    (18, "SYS_CHROOT"),
    (27, "MKNOD"),
    (29, "AUDIT_WRITE"),
    (31, "SETFCAP"),
];

fn default_capability_mask() -> u64 {
    DEFAULT_CAPABILITIES
        .iter()
        .fold(0, |mask, (cap, _)| mask | (1u64 << cap))
}

/// The task's name as a hostname (RFC 1123: letters, digits and `-`, at most 63 characters,
/// not starting or ending with `-`): any other character becomes `-`.
pub fn hostname_for(task: &str) -> String {
    let name: String = task
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "strata-task".to_string()
    } else {
        name.to_string()
    }
}

/// Mounts the stack and the pseudo-filesystems under `<scratch>/merged` and returns the root to
/// pivot into and the mount points that had to be created in the upper dir.
///
/// Base, then the task's overlay: lowerdirs (top first) over a read-only view of the base. The
/// view is itself an overlay (the base plus an empty tmpfs) because overlayfs refuses a lower
/// dir that lies inside another layer, and with `base: host` every layer lies inside `/`; a
/// separate overlay superblock breaks that ancestry.
pub fn setup_root(
    spec: &SandboxSpec,
    sys: &dyn Syscalls,
) -> std::io::Result<(PathBuf, Vec<String>)> {
    let empty = spec.scratch.join("empty");
    let base_view = spec.scratch.join("base");
    let merged = spec.scratch.join("merged");
    for dir in [&empty, &base_view, &merged] {
        sys.mkdir_all(dir)?;
    }
    sys.make_rprivate(Path::new("/"))?;
    sys.mount_tmpfs(&empty, "size=4k,mode=755")?;
    sys.mount_overlay(&base_view, &[spec.base.clone(), empty.clone()], None)?;
    let mut lowers = spec.lowerdirs.clone();
    lowers.push(base_view);
    sys.mount_overlay(&merged, &lowers, Some((&spec.upperdir, &spec.workdir)))?;
    if !spec.privileged {
        // A device node a task creates (it keeps CAP_MKNOD, as in Docker, so that packages
        // unpack) cannot be opened: what Docker's device cgroup does, for the task's files.
        sys.set_nodev(&merged, true)?;
    }

    let mut created = Vec::new();
    let cwd = spec
        .cwd
        .strip_prefix("/")
        .unwrap_or(&spec.cwd)
        .to_string_lossy()
        .into_owned();
    for mp in MOUNTPOINTS
        .iter()
        .copied()
        .chain(std::iter::once(cwd.as_str()))
    {
        let path = merged.join(mp);
        if !sys.exists(&path) {
            sys.mkdir_all(&path)?;
            created.push(mp.to_string());
        }
    }

    for (i, overlay) in spec.overlays.iter().enumerate() {
        let target = merged.join(&overlay.target);
        let mut lowers = overlay.lowerdirs.clone();
        for m in &overlay.idmapped {
            let Some(lower) = lowers.get_mut(m.lower) else {
                continue;
            };
            let shown = spec.scratch.join(format!("idmapped-{i}-{}", m.lower));
            sys.mkdir_all(&shown)?;
            sys.idmapped_bind(lower, &shown, m.uid, m.gid)?;
            *lower = shown;
        }
        sys.mount_overlay(
            &target,
            &lowers,
            Some((&overlay.upperdir, &overlay.workdir)),
        )?;
        if !spec.privileged {
            sys.set_nodev(&target, true)?;
        }
    }

    sys.mount_proc(&merged.join("proc"))?;
    let dev = merged.join("dev");
    sys.mount_tmpfs(&dev, "mode=755,size=65536k")?;
    if spec.privileged {
        sys.set_nodev(&dev, false)?;
    }
    for name in DEVICES {
        let node = dev.join(name);
        sys.create_file(&node)?;
        sys.bind(&Path::new("/dev").join(name), &node, false)?;
    }
    sys.mkdir_all(&dev.join("pts"))?;
    sys.mount_devpts(&dev.join("pts"))?;
    sys.symlink("pts/ptmx", &dev.join("ptmx"))?;
    sys.mkdir_all(&dev.join("shm"))?;
    sys.mount_tmpfs(&dev.join("shm"), "mode=1777")?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(target, &dev.join(name))?;
    }
    // Read-only all the way down (cgroups, debugfs, securityfs are mounts under /sys), unless
    // the task is privileged.
    sys.bind(Path::new("/sys"), &merged.join("sys"), !spec.privileged)?;
    sys.mount_tmpfs(&merged.join("tmp"), "mode=1777")?;
    sys.mount_tmpfs(&merged.join("run"), "mode=755")?;
    let outputs = merged.join(SandboxSpec::OUTPUTS_DIR.trim_start_matches('/'));
    sys.mkdir_all(&outputs)?;
    sys.bind(&spec.outputs_dir, &outputs, false)?;
    if !spec.privileged {
        // A bind keeps the flags of the host's mount it comes from: devices would work there.
        sys.set_nodev(&outputs, true)?;
        for path in READONLY_PATHS {
            let path = merged.join(path);
            if sys.exists(&path) {
                sys.bind_readonly_in_place(&path)?;
            }
        }
        for path in MASKED_PATHS {
            let path = merged.join(path);
            if sys.exists(&path) {
                sys.mask(&path)?;
            }
        }
    }
    for bind in &spec.binds {
        let relative = bind.target.strip_prefix("/").unwrap_or(&bind.target);
        let target = merged.join(relative);
        if !sys.exists(&target) {
            sys.mkdir_all(&target)?;
            created.push(relative.to_string_lossy().into_owned());
        }
        sys.bind(&bind.source, &target, false)?;
    }
    provide_etc_files(spec, sys, &merged, &mut created)?;
    Ok((merged, created))
}

/// What `/etc/hosts` starts with where the stack's has no `localhost` (Docker's lines).
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Gives the task the files of `/etc` Docker gives every container, whatever the stack ships:
/// an `/etc/hosts` where `localhost` and the task's hostname resolve (the stack's own lines
/// kept), `/etc/hostname`, and the host's `/etc/resolv.conf`. Without them `sudo` cannot
/// resolve the host, `localhost` does not resolve, and an image without a resolver
/// configuration (registry images ship none: the runtime provides it) has no DNS.
///
/// Each is a copy in the scratch dir bound over the path, so the task's edits stay out of its
/// layer. A path the stack lacks, or has as a symlink (`resolv.conf` into `/run`, which is
/// the task's own tmpfs here, or dangling), gets an empty file to mount over, recorded in
/// `created` so that it is removed from the upper dir before the commit: the layer keeps
/// whatever the stack had there. A symlink is never followed: paths of the task's root are
/// resolved against the host's root until `pivot_root`.
fn provide_etc_files(
    spec: &SandboxSpec,
    sys: &dyn Syscalls,
    merged: &Path,
    created: &mut Vec<String>,
) -> std::io::Result<()> {
    let etc = merged.join("etc");
    match sys.kind(&etc) {
        Some(FileKind::Dir) => {}
        None => {
            sys.mkdir_all(&etc)?;
            created.push("etc".into());
        }
        // An `/etc` that is a symlink (or not a directory) is the stack's business.
        Some(_) => return Ok(()),
    }
    let hostname = hostname_for(&spec.task);
    // A hosts file that is not a regular file is not read (and is replaced).
    let stack_hosts = sys.read_file(&etc.join("hosts")).ok();
    let hosts = hosts_file(stack_hosts.as_deref(), &hostname);
    bind_etc_file(spec, sys, merged, "hosts", &hosts, created)?;
    bind_etc_file(
        spec,
        sys,
        merged,
        "hostname",
        format!("{hostname}\n").as_bytes(),
        created,
    )?;
    // Tasks share the host's network namespace (the helper unshares mount, PID, UTS and IPC
    // only), so the host's resolver configuration works as it is, a loopback resolver such as
    // systemd-resolved's 127.0.0.53 included. In a network namespace of its own a task would
    // need the upstream servers instead (Docker reads /run/systemd/resolve/resolv.conf then).
    match sys.read_host_file(Path::new("/etc/resolv.conf")) {
        Ok(resolv) => bind_etc_file(spec, sys, merged, "resolv.conf", &resolv, created)?,
        // No resolver configuration on the host: the task's is the stack's, as the host's
        // programs fall back to the same defaults.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The task's `/etc/hosts`: the stack's (Docker's localhost lines first where it names no
/// `localhost`), then the task's hostname on 127.0.1.1, as Debian's installer writes it.
fn hosts_file(stack: Option<&[u8]>, hostname: &str) -> Vec<u8> {
    let stack = stack.unwrap_or_default();
    let names_localhost = String::from_utf8_lossy(stack).lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default();
        line.split_whitespace()
            .skip(1)
            .any(|name| name == "localhost")
    });
    let mut content = Vec::new();
    if !names_localhost {
        content.extend_from_slice(DEFAULT_HOSTS.as_bytes());
    }
    content.extend_from_slice(stack);
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(format!("127.0.1.1\t{hostname}\n").as_bytes());
    content
}

/// Binds a copy of `content` over `etc/<name>` of the task's root, making the mount point
/// where the stack has no regular file there.
fn bind_etc_file(
    spec: &SandboxSpec,
    sys: &dyn Syscalls,
    merged: &Path,
    name: &str,
    content: &[u8],
    created: &mut Vec<String>,
) -> std::io::Result<()> {
    let relative = format!("etc/{name}");
    let target = merged.join(&relative);
    match sys.kind(&target) {
        Some(FileKind::File) => {}
        // A directory there: nothing a file can be bound over.
        Some(FileKind::Dir) => return Ok(()),
        kind => {
            // Making the mount point copies `/etc` up into the upper dir: if the task leaves
            // nothing else there, that directory goes too (removed after the files, as
            // `created` is undone from the end).
            if !sys.exists(&spec.upperdir.join("etc")) && !created.iter().any(|c| c == "etc") {
                created.push("etc".into());
            }
            if kind.is_some() {
                // A whiteout in the upper dir, gone with the mount point before the commit.
                sys.remove_file(&target)?;
            }
            sys.create_file(&target)?;
            created.push(relative);
        }
    }
    let copy = spec.scratch.join(name);
    sys.write_file(&copy, content)?;
    sys.bind(&copy, &target, false)
}

/// What happens after `pivot_root`, just before the command runs: the hostname, and the
/// capabilities a task keeps.
pub fn confine(spec: &SandboxSpec, sys: &dyn Syscalls) -> std::io::Result<()> {
    sys.set_hostname(&hostname_for(&spec.task))?;
    if !spec.privileged {
        sys.limit_capabilities(default_capability_mask())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::RecordingSyscalls;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            task: "t".into(),
            base: "/".into(),
            lowerdirs: vec![
                "/c/layers/top".into(),
                "/c/layers/bottom".into(),
                "/c/ws".into(),
            ],
            upperdir: "/s/upper".into(),
            workdir: "/s/work".into(),
            scratch: "/s".into(),
            outputs_dir: "/s/out".into(),
            cwd: "/workspace".into(),
            command: "true".into(),
            env: vec![],
            privileged: false,
            cgroups: vec![],
            background: vec![],
            binds: vec![],
            overlays: vec![],
        }
    }

    /// A fake whose stack has every mount point, `/etc/hosts` and `/etc/hostname`, and the given paths under the
    /// merged root.
    fn fake_with(paths: &[&str]) -> RecordingSyscalls {
        RecordingSyscalls {
            existing: MOUNTPOINTS
                .iter()
                .chain(&["etc"])
                .chain(paths)
                .map(|m| PathBuf::from("/s/merged").join(m))
                .collect(),
            files: vec![
                (
                    "/s/merged/etc/hosts".into(),
                    b"127.0.0.1 localhost".to_vec(),
                ),
                ("/s/merged/etc/hostname".into(), b"image".to_vec()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn stack_order_is_layers_then_base_view() {
        let sys = RecordingSyscalls {
            existing: MOUNTPOINTS
                .iter()
                .map(|m| PathBuf::from("/s/merged").join(m))
                .collect(),
            ..Default::default()
        };
        let (root, created) = setup_root(&spec(), &sys).unwrap();
        assert_eq!(root, PathBuf::from("/s/merged"));
        // The stack has no /etc: the one made for the task's files of /etc goes too.
        assert_eq!(
            created,
            vec!["workspace", "etc", "etc/hosts", "etc/hostname"]
        );
        let calls = sys.calls.borrow();
        let overlays: Vec<&String> = calls.iter().filter(|c| c.starts_with("overlay")).collect();
        assert_eq!(
            overlays,
            vec![
                "overlay /s/base lower=/:/s/empty read-only",
                "overlay /s/merged lower=/c/layers/top:/c/layers/bottom:/c/ws:/s/base upper=/s/upper work=/s/work",
            ]
        );
        // Nothing may propagate back to the host, and that must be settled before any mount.
        assert_eq!(
            calls.iter().position(|c| c.starts_with("make-rprivate /")),
            Some(3)
        );
        assert!(calls.contains(&"proc /s/merged/proc".to_string()));
        assert!(calls.contains(&"bind /sys /s/merged/sys ro".to_string()));
        assert!(calls.contains(&"bind /s/out /s/merged/run/strata".to_string()));
        assert!(calls.contains(&"tmpfs /s/merged/tmp mode=1777".to_string()));
    }

    #[test]
    fn a_task_is_confined_as_docker_confines_a_container() {
        let sys = fake_with(&[
            "proc/sys",
            "proc/sysrq-trigger",
            "proc/kcore",
            "proc/keys",
            "sys/firmware",
        ]);
        setup_root(&spec(), &sys).unwrap();
        confine(&spec(), &sys).unwrap();
        let calls = sys.calls.borrow();
        let has = |c: &str| calls.iter().any(|x| x == c);
        // Device nodes in the task's files are inert; /sys is read-only all the way down.
        assert!(has("nodev /s/merged"));
        assert!(has("nodev /s/merged/run/strata"));
        assert!(has("bind /sys /s/merged/sys ro"));
        assert!(has("readonly /s/merged/proc/sys"));
        assert!(has("readonly /s/merged/proc/sysrq-trigger"));
        assert!(has("mask /s/merged/proc/kcore"));
        assert!(has("mask /s/merged/proc/keys"));
        assert!(has("mask /s/merged/sys/firmware"));
        // What this kernel does not have is not masked (nothing to mount over).
        assert!(!has("mask /s/merged/proc/timer_stats"));
        // Masks come after /proc and /sys are mounted, or the mounts would hide them.
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
        assert!(at("proc /s/merged/proc") < at("readonly /s/merged/proc/sys"));
        assert!(at("bind /sys /s/merged/sys ro") < at("mask /s/merged/sys/firmware"));
        // No /dev/kmsg, no disks: only Docker's device nodes are bound.
        let devices: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with("bind /dev/"))
            .collect();
        assert_eq!(devices.len(), DEVICES.len());
        assert!(!calls.iter().any(|c| c.contains("kmsg")));
        // The hostname resolves, through a copy of the stack's /etc/hosts.
        assert!(has(
            r#"write /s/hosts "127.0.0.1 localhost\n127.0.1.1\tt\n""#
        ));
        assert!(has("bind /s/hosts /s/merged/etc/hosts"));
        // Docker's 14 capabilities: CHOWN .. SETFCAP, and not SYS_ADMIN (21).
        assert_eq!(calls[calls.len() - 2], "hostname t");
        assert_eq!(calls[calls.len() - 1], "capabilities 0xa80425fb");
        assert_eq!(default_capability_mask() & (1 << 21), 0);
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
    }

    #[test]
    fn a_privileged_task_keeps_everything() {
        let sys = fake_with(&["proc/sys", "proc/kcore", "sys/firmware"]);
        let spec = SandboxSpec {
            privileged: true,
            ..spec()
        };
        setup_root(&spec, &sys).unwrap();
        confine(&spec, &sys).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls.contains(&"bind /sys /s/merged/sys".to_string()));
        assert!(calls.contains(&"dev /s/merged/dev".to_string()));
        assert!(!calls.iter().any(|c| c.starts_with("nodev")
            || c.starts_with("mask")
            || c.starts_with("readonly")
            || c.starts_with("capabilities")));
        assert_eq!(calls.last().unwrap(), "hostname t");
    }

    /// The calls that concern the files of `/etc` the task is given.
    fn etc_calls(sys: &RecordingSyscalls) -> Vec<String> {
        sys.calls
            .borrow()
            .iter()
            .filter(|c| {
                ["hosts", "hostname", "resolv.conf", "/s/merged/etc "]
                    .iter()
                    .any(|n| c.contains(n))
                    || c.ends_with("/s/merged/etc")
            })
            .cloned()
            .collect()
    }

    fn host_resolv() -> (PathBuf, Vec<u8>) {
        (
            "/etc/resolv.conf".into(),
            b"nameserver 10.0.0.53\n".to_vec(),
        )
    }

    #[test]
    fn a_stack_without_etc_files_gets_docker_s_and_they_stay_out_of_the_layer() {
        // /etc is there (in a lower layer), none of the three files is.
        let sys = RecordingSyscalls {
            existing: vec!["/s/merged/etc".into()],
            files: vec![host_resolv()],
            ..Default::default()
        };
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        assert_eq!(
            etc_calls(&sys),
            [
                "touch /s/merged/etc/hosts",
                r#"write /s/hosts "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tt\n""#,
                "bind /s/hosts /s/merged/etc/hosts",
                "touch /s/merged/etc/hostname",
                r#"write /s/hostname "t\n""#,
                "bind /s/hostname /s/merged/etc/hostname",
                "touch /s/merged/etc/resolv.conf",
                r#"write /s/resolv.conf "nameserver 10.0.0.53\n""#,
                "bind /s/resolv.conf /s/merged/etc/resolv.conf",
            ]
        );
        // The copied-up /etc before the files in it: they are removed from the last.
        assert_eq!(
            &created[created.len() - 4..],
            ["etc", "etc/hosts", "etc/hostname", "etc/resolv.conf"]
        );
    }

    #[test]
    fn the_stack_s_regular_files_are_bound_over_and_its_hosts_lines_kept() {
        let sys = RecordingSyscalls {
            existing: vec!["/s/merged/etc".into(), "/s/upper/etc".into()],
            files: vec![
                (
                    "/s/merged/etc/hosts".into(),
                    b"10.1.2.3 db # local\n".to_vec(),
                ),
                ("/s/merged/etc/hostname".into(), b"image\n".to_vec()),
                (
                    "/s/merged/etc/resolv.conf".into(),
                    b"nameserver 1.1.1.1\n".to_vec(),
                ),
                host_resolv(),
            ],
            ..Default::default()
        };
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        let calls = etc_calls(&sys);
        // No line of the image's names localhost: Docker's come first, then the image's.
        assert!(calls.contains(
            &r#"write /s/hosts "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3 db # local\n127.0.1.1\tt\n""#
                .to_string()
        ));
        // The host's resolver, not the image's.
        assert!(calls.contains(&r#"write /s/resolv.conf "nameserver 10.0.0.53\n""#.to_string()));
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("touch") || c.starts_with("rm"))
        );
        assert!(!created.iter().any(|c| c.starts_with("etc")));
    }

    #[test]
    fn symlinks_are_replaced_not_followed() {
        // resolv.conf into /run (the task's own tmpfs) and a dangling hosts: neither is read
        // nor followed; each is hidden by a whiteout under the mount point, which goes with it.
        let sys = RecordingSyscalls {
            existing: vec!["/s/merged/etc".into(), "/s/upper/etc".into()],
            files: vec![host_resolv()],
            symlinks: vec![
                "/s/merged/etc/resolv.conf".into(),
                "/s/merged/etc/hosts".into(),
            ],
            ..Default::default()
        };
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        let calls = etc_calls(&sys);
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap();
        assert!(at("rm /s/merged/etc/resolv.conf") < at("touch /s/merged/etc/resolv.conf"));
        assert!(
            at("touch /s/merged/etc/resolv.conf")
                < at("bind /s/resolv.conf /s/merged/etc/resolv.conf")
        );
        assert!(at("rm /s/merged/etc/hosts") < at("bind /s/hosts /s/merged/etc/hosts"));
        // The upper dir had /etc already: only the files are undone.
        assert_eq!(
            &created[created.len() - 3..],
            ["etc/hosts", "etc/hostname", "etc/resolv.conf"]
        );
        assert!(!created.contains(&"etc".to_string()));
    }

    #[test]
    fn a_stack_without_etc_gets_one_and_a_host_without_resolv_conf_none() {
        let sys = RecordingSyscalls::default();
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        let calls = etc_calls(&sys);
        assert_eq!(calls[0], "mkdir /s/merged/etc");
        assert!(calls.contains(&"bind /s/hosts /s/merged/etc/hosts".to_string()));
        assert!(calls.contains(&"bind /s/hostname /s/merged/etc/hostname".to_string()));
        assert!(!calls.iter().any(|c| c.contains("resolv.conf")));
        assert_eq!(
            &created[created.len() - 3..],
            ["etc", "etc/hosts", "etc/hostname"]
        );
    }

    #[test]
    fn an_etc_that_is_a_symlink_is_left_alone() {
        let sys = RecordingSyscalls {
            symlinks: vec!["/s/merged/etc".into()],
            files: vec![host_resolv()],
            ..Default::default()
        };
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        assert_eq!(etc_calls(&sys), Vec::<String>::new());
        assert!(!created.iter().any(|c| c.starts_with("etc")));
    }

    #[test]
    fn hosts_lines_naming_localhost_are_not_repeated() {
        let hosts = hosts_file(Some(b"127.0.0.1 localhost.localdomain localhost"), "t");
        assert_eq!(
            String::from_utf8(hosts).unwrap(),
            "127.0.0.1 localhost.localdomain localhost\n127.0.1.1\tt\n"
        );
        // A comment naming it does not count.
        let hosts = hosts_file(Some(b"# localhost\n"), "t");
        assert!(
            String::from_utf8(hosts)
                .unwrap()
                .starts_with("127.0.0.1\tlocalhost\n")
        );
    }

    #[test]
    fn hostnames_are_valid() {
        assert_eq!(hostname_for("build-linux"), "build-linux");
        assert_eq!(hostname_for("unit_tests"), "unit-tests");
        assert_eq!(hostname_for("pkg.install"), "pkg-install");
        assert_eq!(hostname_for("_x_"), "x");
        assert_eq!(hostname_for("__"), "strata-task");
        assert_eq!(hostname_for(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn host_directories_are_bound_read_write_after_the_stack_and_run() {
        let sys = fake_with(&["var/lib", "workspace"]);
        let spec = SandboxSpec {
            overlays: vec![],
            binds: vec![crate::spec::BindMount {
                source: "/cache/docker/t.data".into(),
                target: "/var/lib/docker".into(),
            }],
            ..spec()
        };
        let (_, created) = setup_root(&spec, &sys).unwrap();
        // The mount point it needed is removed from the upper dir before the commit.
        assert_eq!(created, ["var/lib/docker"]);
        let calls = sys.calls.borrow();
        let at = |call: &str| {
            calls
                .iter()
                .position(|c| c == call)
                .unwrap_or_else(|| panic!("no {call:?} in {calls:#?}"))
        };
        let bind = at("bind /cache/docker/t.data /s/merged/var/lib/docker");
        assert!(bind > at("tmpfs /s/merged/run mode=755"));
    }

    #[test]
    fn missing_mountpoints_are_created_and_reported() {
        let sys = RecordingSyscalls::default();
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        assert_eq!(
            created,
            vec![
                "proc",
                "dev",
                "sys",
                "tmp",
                "run",
                "workspace",
                "etc",
                "etc/hosts",
                "etc/hostname"
            ]
        );
    }
}
