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
    /// Binds `source` on `target` (not its submounts) with its files of owner `uid`:`gid`
    /// shown as root's (`idmap.rs`).
    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()>;
    /// A recursive bind; `readonly` makes it read-only all the way down (every submount too).
    fn bind(&self, source: &Path, target: &Path, readonly: bool) -> std::io::Result<()>;
    /// Binds `target` onto itself, read-only all the way down.
    fn bind_readonly_in_place(&self, target: &Path) -> std::io::Result<()>;
    /// Hides `target`: an empty read-only tmpfs over a directory, `/dev/null` over a file.
    fn mask(&self, target: &Path) -> std::io::Result<()>;
    /// Sets or clears `nodev` on the mount at `target` (not its submounts).
    fn set_nodev(&self, target: &Path, nodev: bool) -> std::io::Result<()>;
    fn mount_proc(&self, target: &Path) -> std::io::Result<()>;
    fn mount_devpts(&self, target: &Path) -> std::io::Result<()>;
    /// Makes `new_root` the root and detaches the old one.
    fn pivot_root(&self, new_root: &Path) -> std::io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// What is at `path`, the last component not followed (`lstat`); `None` if nothing is.
    fn kind(&self, path: &Path) -> Option<FileKind>;
    fn mkdir_all(&self, path: &Path) -> std::io::Result<()>;
    fn create_file(&self, path: &Path) -> std::io::Result<()>;
    fn symlink(&self, target: &str, link: &Path) -> std::io::Result<()>;
    /// Removes a file, symlink or other non-directory.
    fn remove_file(&self, path: &Path) -> std::io::Result<()>;
    /// A regular file's content; a symlink or anything else is an error.
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// A file of the host's own root, read before `pivot_root`, symlinks followed (the host's
    /// `/etc/resolv.conf` is often one into `/run`).
    fn read_host_file(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    fn write_file(&self, path: &Path, contents: &[u8]) -> std::io::Result<()>;
    /// Sets the hostname of the UTS namespace.
    fn set_hostname(&self, name: &str) -> std::io::Result<()>;
    /// Limits the process and everything it executes to the capabilities in `keep` (a bit per
    /// `CAP_*` number): the bounding set, then effective and permitted; inheritable and ambient
    /// are emptied.
    fn limit_capabilities(&self, keep: u64) -> std::io::Result<()>;
}

/// The kinds of file [`Syscalls::kind`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A device node, FIFO or socket.
    Other,
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
                // Unmounting an overlay with an upper dir syncs the whole file system under it,
                // so a task's end waited for every dirty page of that disk (seconds after a
                // large write by anything). The upper dir is never mounted again: strata hashes
                // and commits it, and its own durability notes cover the layer until it is
                // flushed (`settle-cache`), so the overlay need not sync.
                rustix::mount::fsconfig_set_flag(fs.as_fd(), "volatile")?;
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

    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()> {
        crate::idmap::bind(source, target, uid, gid).map_err(|e| {
            with_context(
                e,
                format!(
                    "bind {} on {} with owner {uid}:{gid} as root",
                    source.display(),
                    target.display()
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
            // A remount with MS_RDONLY only reaches the top mount: /sys/fs/cgroup, /sys/kernel/*
            // would stay writable under a read-only /sys.
            mount_setattr(target, true, MOUNT_ATTR_RDONLY, 0)
                .map_err(|e| with_context(e, format!("make {} read-only", target.display())))?;
        }
        Ok(())
    }

    fn bind_readonly_in_place(&self, target: &Path) -> std::io::Result<()> {
        self.bind(target, target, true)
    }

    fn mask(&self, target: &Path) -> std::io::Result<()> {
        let ctx = |e| with_context(errno(e), format!("mask {}", target.display()));
        if std::fs::metadata(target).is_ok_and(|m| m.is_dir()) {
            rustix::mount::mount(
                "tmpfs",
                target,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"size=0",
            )
            .map_err(ctx)
        } else {
            rustix::mount::mount_bind(Path::new("/dev/null"), target).map_err(ctx)?;
            mount_setattr(target, false, MOUNT_ATTR_RDONLY, 0)
                .map_err(|e| with_context(e, format!("mask {}", target.display())))
        }
    }

    fn set_nodev(&self, target: &Path, nodev: bool) -> std::io::Result<()> {
        let (set, clear) = if nodev {
            (MOUNT_ATTR_NODEV, 0)
        } else {
            (0, MOUNT_ATTR_NODEV)
        };
        mount_setattr(target, false, set, clear)
            .map_err(|e| with_context(e, format!("set nodev={nodev} on {}", target.display())))
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

    fn kind(&self, path: &Path) -> Option<FileKind> {
        let kind = std::fs::symlink_metadata(path).ok()?.file_type();
        Some(if kind.is_file() {
            FileKind::File
        } else if kind.is_dir() {
            FileKind::Dir
        } else if kind.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
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

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
            .map_err(|e| with_context(e, format!("remove {}", path.display())))
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        // Paths inside the task's root are read before pivot_root: a symlink there would be
        // resolved against the host's root.
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| with_context(e, format!("read {}", path.display())))?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        std::fs::read(path).map_err(|e| with_context(e, format!("read {}", path.display())))
    }

    fn read_host_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| with_context(e, format!("read {}", path.display())))
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, contents)
            .map_err(|e| with_context(e, format!("write {}", path.display())))
    }

    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        rustix::system::sethostname(name.as_bytes())
            .map_err(|e| with_context(errno(e), format!("set the hostname to {name}")))
    }

    fn limit_capabilities(&self, keep: u64) -> std::io::Result<()> {
        use rustix::thread::{CapabilitySet, CapabilitySets};
        // Every capability this kernel knows, whether or not rustix has a name for it: the
        // bounding set is what a setuid program (sudo) or root's execve can get back.
        for cap in 0..64u32 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break; // past the last capability of this kernel
                }
                return Err(with_context(e, format!("drop capability {cap}")));
            }
        }
        let keep = CapabilitySet::from_bits_retain(keep);
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: keep,
                permitted: keep,
                inheritable: CapabilitySet::empty(),
            },
        )
        .map_err(|e| with_context(errno(e), "set capabilities".into()))?;
        rustix::thread::clear_ambient_capability_set()
            .map_err(|e| with_context(errno(e), "clear ambient capabilities".into()))
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of `mount_setattr(2)` (not in rustix yet).
#[repr(C)]
pub(crate) struct MountAttr {
    pub(crate) attr_set: u64,
    pub(crate) attr_clr: u64,
    pub(crate) propagation: u64,
    pub(crate) userns_fd: u64,
}

/// `mount_setattr(2)`: changes mount attributes, of every submount too with `recursive`.
fn mount_setattr(target: &Path, recursive: bool, set: u64, clear: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: a valid C string and a properly sized mount_attr that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Records every call instead of making it; `exists` answers from a fixed list, `read_file`
/// and `read_host_file` from a fixed map (a missing file is `NotFound`), `kind` from the map
/// (files), `symlinks` and the list (directories).
#[derive(Default)]
pub struct RecordingSyscalls {
    pub calls: RefCell<Vec<String>>,
    pub existing: Vec<PathBuf>,
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub symlinks: Vec<PathBuf>,
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
    fn idmapped_bind(
        &self,
        source: &Path,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> std::io::Result<()> {
        self.record(format!(
            "idmapped {} {} {uid}:{gid}",
            source.display(),
            target.display()
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
    fn kind(&self, path: &Path) -> Option<FileKind> {
        if self.files.iter().any(|(p, _)| p == path) {
            Some(FileKind::File)
        } else if self.symlinks.iter().any(|p| p == path) {
            Some(FileKind::Symlink)
        } else if self.exists(path) {
            Some(FileKind::Dir)
        } else {
            None
        }
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
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.record(format!("rm {}", path.display()))
    }
    fn bind_readonly_in_place(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("readonly {}", target.display()))
    }
    fn mask(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("mask {}", target.display()))
    }
    fn set_nodev(&self, target: &Path, nodev: bool) -> std::io::Result<()> {
        self.record(format!(
            "{} {}",
            if nodev { "nodev" } else { "dev" },
            target.display()
        ))
    }
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn read_host_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read_file(path)
    }
    fn write_file(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        self.record(format!(
            "write {} {:?}",
            path.display(),
            String::from_utf8_lossy(contents)
        ))
    }
    fn set_hostname(&self, name: &str) -> std::io::Result<()> {
        self.record(format!("hostname {name}"))
    }
    fn limit_capabilities(&self, keep: u64) -> std::io::Result<()> {
        self.record(format!("capabilities {keep:#x}"))
    }
}
