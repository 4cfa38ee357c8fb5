//! The system calls the mount sequence makes, behind a trait: the real ones, and a recording
//! fake that lets the sequence be tested without root.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};

pub trait Syscalls {
    fn make_rprivate(&self, target: &Path) -> std::io::Result<()>;
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()>;
    /// An overlay through the new mount API (`lowerdir+` once per layer, so the number of
    /// layers is not limited by the 4096-byte option string). `upper` is (upperdir, workdir).
    fn mount_overlay(
        &self,
        target: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> std::io::Result<()>;
    fn bind(&self, source: &Path, target: &Path, readonly: bool) -> std::io::Result<()>;
    fn mount_proc(&self, target: &Path) -> std::io::Result<()>;
    fn mount_devpts(&self, target: &Path) -> std::io::Result<()>;
    /// Makes `new_root` the root and detaches the old one.
    fn pivot_root(&self, new_root: &Path) -> std::io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()>;
    fn create_file(&self, path: &Path) -> std::io::Result<()>;
    fn symlink(&self, target: &str, link: &Path) -> std::io::Result<()>;
}

pub struct LinuxSyscalls;

fn errno(e: rustix::io::Errno) -> std::io::Error {
    e.into()
}

fn with_context(e: std::io::Error, what: String) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Syscalls for LinuxSyscalls {
    fn make_rprivate(&self, target: &Path) -> std::io::Result<()> {
        rustix::mount::mount_change(
            target,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .map_err(|e| with_context(errno(e), format!("make {} private", target.display())))
    }

    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()> {
        let data = std::ffi::CString::new(options).expect("no NUL in options");
        rustix::mount::mount(
            "tmpfs",
            target,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            data.as_c_str(),
        )
        .map_err(|e| with_context(errno(e), format!("mount tmpfs on {}", target.display())))
    }

    fn mount_overlay(
        &self,
        target: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> std::io::Result<()> {
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(errno)?;
        let result = (|| {
            for lower in lowers {
                rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", lower)?;
            }
            if let Some((upperdir, workdir)) = upper {
                rustix::mount::fsconfig_set_string(fs.as_fd(), "upperdir", upperdir)?;
                rustix::mount::fsconfig_set_string(fs.as_fd(), "workdir", workdir)?;
            }
            // Layers must read the same on any machine: no redirects, index or metacopy.
            for (key, value) in [
                ("redirect_dir", "off"),
                ("index", "off"),
                ("metacopy", "off"),
                ("xino", "off"),
            ] {
                rustix::mount::fsconfig_set_string(fs.as_fd(), key, value)?;
            }
            rustix::mount::fsconfig_create(fs.as_fd())?;
            let mnt = rustix::mount::fsmount(
                fs.as_fd(),
                FsMountFlags::FSMOUNT_CLOEXEC,
                MountAttrFlags::empty(),
            )?;
            rustix::mount::move_mount(
                mnt.as_fd(),
                "",
                rustix::fs::CWD,
                target,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
        })();
        result.map_err(|e| {
            // The kernel explains a refused configuration in the fs context's message log.
            let mut log = String::new();
            let mut buf = [0u8; 512];
            while let Ok(n) = rustix::io::read(&fs, &mut buf) {
                if n == 0 {
                    break;
                }
                log.push_str(String::from_utf8_lossy(&buf[..n]).trim_end());
                log.push_str("; ");
            }
            with_context(
                errno(e),
                format!(
                    "mount overlay ({} lower dirs) on {}{}",
                    lowers.len(),
                    target.display(),
                    if log.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", log.trim_end_matches("; "))
                    }
                ),
            )
        })
    }

    fn bind(&self, source: &Path, target: &Path, readonly: bool) -> std::io::Result<()> {
        let ctx = |e| {
            with_context(
                errno(e),
                format!("bind {} on {}", source.display(), target.display()),
            )
        };
        rustix::mount::mount_bind_recursive(source, target).map_err(ctx)?;
        if readonly {
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(ctx)?;
        }
        Ok(())
    }

    fn mount_proc(&self, target: &Path) -> std::io::Result<()> {
        rustix::mount::mount(
            "proc",
            target,
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|e| with_context(errno(e), format!("mount proc on {}", target.display())))
    }

    fn mount_devpts(&self, target: &Path) -> std::io::Result<()> {
        let data = c"newinstance,ptmxmode=0666,mode=0620";
        rustix::mount::mount(
            "devpts",
            target,
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            data,
        )
        .map_err(|e| with_context(errno(e), format!("mount devpts on {}", target.display())))
    }

    fn pivot_root(&self, new_root: &Path) -> std::io::Result<()> {
        let ctx = |e| with_context(errno(e), format!("pivot_root into {}", new_root.display()));
        rustix::process::chdir(new_root).map_err(ctx)?;
        // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
        // the new root, without needing a directory for the old one inside the layer.
        rustix::process::pivot_root(".", ".").map_err(ctx)?;
        rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(ctx)?;
        rustix::process::chdir("/").map_err(ctx)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn mkdir_all(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
            .map_err(|e| with_context(e, format!("create {}", path.display())))
    }

    fn create_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::File::create(path)
            .map(drop)
            .map_err(|e| with_context(e, format!("create {}", path.display())))
    }

    fn symlink(&self, target: &str, link: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| with_context(e, format!("create symlink {}", link.display())))
    }
}

/// Records every call instead of making it; `exists` answers from a fixed list.
#[derive(Default)]
pub struct RecordingSyscalls {
    pub calls: RefCell<Vec<String>>,
    pub existing: Vec<PathBuf>,
}

impl RecordingSyscalls {
    fn record(&self, call: String) -> std::io::Result<()> {
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

impl Syscalls for RecordingSyscalls {
    fn make_rprivate(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("make-rprivate {}", target.display()))
    }
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()> {
        self.record(format!("tmpfs {} {options}", target.display()))
    }
    fn mount_overlay(
        &self,
        target: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> std::io::Result<()> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let upper = upper.map_or("read-only".to_string(), |(u, w)| {
            format!("upper={} work={}", u.display(), w.display())
        });
        self.record(format!(
            "overlay {} lower={} {upper}",
            target.display(),
            lowers.join(":")
        ))
    }
    fn bind(&self, source: &Path, target: &Path, readonly: bool) -> std::io::Result<()> {
        self.record(format!(
            "bind {} {}{}",
            source.display(),
            target.display(),
            if readonly { " ro" } else { "" }
        ))
    }
    fn mount_proc(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("proc {}", target.display()))
    }
    fn mount_devpts(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("devpts {}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path) -> std::io::Result<()> {
        self.record(format!("pivot-root {}", new_root.display()))
    }
    fn exists(&self, path: &Path) -> bool {
        self.existing.iter().any(|p| p == path)
    }
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()> {
        self.record(format!("mkdir {}", path.display()))
    }
    fn create_file(&self, path: &Path) -> std::io::Result<()> {
        self.record(format!("touch {}", path.display()))
    }
    fn symlink(&self, target: &str, link: &Path) -> std::io::Result<()> {
        self.record(format!("symlink {target} {}", link.display()))
    }
}
