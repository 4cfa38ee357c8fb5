//! A directory owned by another user shown as root's: an idmapped bind mount. A checkout cloned
//! by the CI's own user (`runner`) is given to a task whose files must be root's, as every
//! layer's are: a layer's owners must not depend on who cloned the repository.
//!
//! An idmapped mount needs a user namespace whose map says how: `UID 0 1` shows UID's files as
//! root's. Making one takes a process that enters a new user namespace while another writes its
//! maps through `/proc/PID`: the helper does this before it leaves the host's PID namespace
//! (where the PID it forked is the one `/proc` knows), once per owner, and keeps the namespace
//! as a file descriptor for PID 1 to mount with.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use crate::spec::SandboxSpec;

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// The user namespaces made for this helper, by owner.
static NAMESPACES: Mutex<Vec<((u32, u32), OwnedFd)>> = Mutex::new(Vec::new());

/// Makes the user namespace of every owner the spec's overlays map. Called by the helper while
/// it is single-threaded and still in the host's PID namespace.
pub(crate) fn prepare(spec: &SandboxSpec) -> Result<(), String> {
    for overlay in &spec.overlays {
        for m in &overlay.idmapped {
            let mut made = NAMESPACES.lock().expect("not poisoned");
            if made.iter().any(|(owner, _)| *owner == (m.uid, m.gid)) {
                continue;
            }
            let fd = user_namespace(m.uid, m.gid)
                .map_err(|e| format!("user namespace for owner {}:{}: {e}", m.uid, m.gid))?;
            made.push(((m.uid, m.gid), fd));
        }
    }
    Ok(())
}

/// A user namespace mapping `uid`/`gid` to root, as a file descriptor.
fn user_namespace(uid: u32, gid: u32) -> std::io::Result<OwnedFd> {
    let (ready_r, ready_w) = rustix::pipe::pipe()?;
    let (hold_r, hold_w) = rustix::pipe::pipe()?;
    // SAFETY: the helper is single-threaded; the child makes only system calls, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ready_r);
        drop(hold_w);
        // SAFETY: plain system calls on descriptors this process owns.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte = [u8::from(ok)];
            libc::write(ready_w.as_raw_fd(), byte.as_ptr().cast(), 1);
            let mut buf = [0u8; 1];
            // Until the parent has opened the namespace and closes its end.
            libc::read(hold_r.as_raw_fd(), buf.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        let mut byte = [0u8; 1];
        let n = rustix::io::read(&ready_r, &mut byte)?;
        if n != 1 || byte[0] != 1 {
            return Err(std::io::Error::other("unshare(CLONE_NEWUSER) failed"));
        }
        // An idmapped mount reads an on-disk id as an id *inside* the namespace and shows
        // what it maps to outside: `UID 0 1` shows UID's files as root's.
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("{uid} 0 1\n"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("{gid} 0 1\n"))?;
        let file = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(file))
    })();
    drop(hold_w);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

/// Binds `source` on `target`, its files of owner `uid`:`gid` shown as root's.
pub(crate) fn bind(source: &Path, target: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let made = NAMESPACES.lock().expect("not poisoned");
    let userns = made
        .iter()
        .find(|(owner, _)| *owner == (uid, gid))
        .map(|(_, fd)| fd.as_raw_fd())
        .ok_or_else(|| std::io::Error::other(format!("no user namespace for {uid}:{gid}")))?;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = crate::syscalls::MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    // SAFETY: a valid descriptor, an empty C string and a properly sized mount_attr that
    // outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const crate::syscalls::MountAttr,
            std::mem::size_of::<crate::syscalls::MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}
