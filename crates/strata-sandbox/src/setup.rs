//! The mount sequence that turns a spec into the task's root filesystem.

use std::path::{Path, PathBuf};

use crate::spec::SandboxSpec;
use crate::syscalls::Syscalls;

/// Written by the helper into the scratch dir: mount points it had to create inside the upper
/// dir (one relative path per line), to be removed before the upper dir is committed.
pub const MOUNTPOINTS_FILE: &str = "created-mountpoints";
/// Written by the helper into the scratch dir when it cannot set up the sandbox.
pub const SETUP_ERROR_FILE: &str = "setup-error";

/// Directories the sandbox mounts over; created in the task's root if the stack lacks them.
const MOUNTPOINTS: &[&str] = &["proc", "dev", "sys", "tmp", "run"];
/// Device nodes bound from the host into the sandbox's fresh `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

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

    sys.mount_proc(&merged.join("proc"))?;
    let dev = merged.join("dev");
    sys.mount_tmpfs(&dev, "mode=755,size=65536k")?;
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
    sys.bind(Path::new("/sys"), &merged.join("sys"), true)?;
    sys.mount_tmpfs(&merged.join("tmp"), "mode=1777")?;
    sys.mount_tmpfs(&merged.join("run"), "mode=755")?;
    let outputs = merged.join(SandboxSpec::OUTPUTS_DIR.trim_start_matches('/'));
    sys.mkdir_all(&outputs)?;
    sys.bind(&spec.outputs_dir, &outputs, false)?;
    Ok((merged, created))
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
        assert_eq!(created, vec!["workspace"]);
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
    fn missing_mountpoints_are_created_and_reported() {
        let sys = RecordingSyscalls::default();
        let (_, created) = setup_root(&spec(), &sys).unwrap();
        assert_eq!(
            created,
            vec!["proc", "dev", "sys", "tmp", "run", "workspace"]
        );
    }
}
