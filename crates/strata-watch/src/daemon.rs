//! The watcher: inotify watches over the workspace's directories, a record of which paths
//! changed at which generation, and the socket that answers.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use strata_key::{Changed, WatchAnswer, WatchToken};

use crate::protocol;

/// Past this many changed paths since the last time nothing was lost, the watcher forgets them
/// and answers "unknown" to older tokens: a walk is then cheaper than the list.
const MAX_CHANGED: usize = 200_000;

/// How long the watcher waits for its own cookie before it answers "unknown".
const SYNC_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a watcher is already answering on {} (stop it first, or use another cache directory)",
        socket.display()
    )]
    AlreadyWatching { socket: PathBuf },
    #[error(
        "cannot watch {}: the limit of inotify watches is reached (raise the sysctl fs.inotify.max_user_watches)",
        path.display()
    )]
    TooManyWatches { path: PathBuf },
    #[error("the workspace {} was removed or moved away", root.display())]
    WorkspaceGone { root: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WatchError + 'a {
    move |source| WatchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A workspace's watcher, its watches set up and its socket bound.
pub struct Watcher {
    root: PathBuf,
    /// Relative, `/`-separated paths not watched (the cache, when it is inside).
    exclude: Vec<Vec<u8>>,
    inotify: OwnedFd,
    /// Each watch's directory, relative to the root (empty for the root).
    dirs: HashMap<i32, Vec<u8>>,
    instance: [u8; 16],
    /// Events taken in so far.
    generation: u64,
    /// Tokens from before this generation get "unknown": events may have been lost since.
    floor: u64,
    /// Each changed path: the generation of its latest event, and whether any was about a
    /// directory.
    changed: HashMap<Vec<u8>, (u64, bool)>,
    /// Directories that could not be watched (no permission, a path too long): named as
    /// changed in every answer, so a capture that would descend into one walks.
    unwatched: std::collections::BTreeSet<Vec<u8>>,
    /// The root's device and inode, said in every answer.
    root_id: (u64, u64),
    /// The watcher's mount namespace, said in every answer.
    mount_ns: u64,
    /// Set by an event that leaves the watches' paths uncertain (a directory moved, events
    /// lost): every watch is set up again from the root once the events at hand are taken in.
    rescan: bool,
    /// The mount table, polled for changes: a filesystem mounted or unmounted inside the
    /// workspace changes files without an event.
    mountinfo: std::fs::File,
    /// The mount points inside the workspace (but not in an excluded directory).
    mounts: Vec<Vec<u8>>,
    listener: UnixListener,
    socket: PathBuf,
    cookies: PathBuf,
    cookie_wd: i32,
    next_cookie: u64,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watcher {
    /// Watches every directory under `root` but those in `exclude` (absolute), and listens on
    /// `socket`.
    pub fn start(root: &Path, exclude: &[PathBuf], socket: &Path) -> Result<Watcher, WatchError> {
        let root = std::fs::canonicalize(root).map_err(io("cannot open workspace", root))?;
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        }
        if UnixStream::connect(socket).is_ok() {
            return Err(WatchError::AlreadyWatching {
                socket: socket.to_path_buf(),
            });
        }
        // A socket left by a watcher that was killed.
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(io("cannot listen on", socket))?;
        listener
            .set_nonblocking(true)
            .map_err(io("cannot listen on", socket))?;
        let cookies = crate::cookie_dir(socket);
        let _ = std::fs::remove_dir_all(&cookies);
        std::fs::create_dir_all(&cookies).map_err(io("cannot create", &cookies))?;
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(|e| io("cannot start inotify for", &root)(e.into()))?;
        let cookie_wd = inotify::add_watch(&inotify, &cookies, WatchFlags::CREATE)
            .map_err(|e| io("cannot watch", &cookies)(e.into()))?;
        let mut instance = [0; 16];
        getrandom::fill(&mut instance).map_err(|e| {
            io("cannot choose an instance id for", &root)(std::io::Error::other(e.to_string()))
        })?;
        let exclude = exclude
            .iter()
            .filter_map(|x| x.strip_prefix(&root).ok())
            .map(|rel| rel.as_os_str().as_bytes().to_vec())
            .filter(|rel| !rel.is_empty())
            .collect();
        let root_meta = std::fs::metadata(&root).map_err(io("cannot open workspace", &root))?;
        let mountinfo = std::fs::File::open("/proc/self/mountinfo")
            .map_err(io("cannot read", Path::new("/proc/self/mountinfo")))?;
        let mut watcher = Watcher {
            root,
            exclude,
            inotify,
            dirs: HashMap::new(),
            instance,
            generation: 0,
            floor: 0,
            changed: HashMap::new(),
            unwatched: Default::default(),
            root_id: (
                std::os::unix::fs::MetadataExt::dev(&root_meta),
                std::os::unix::fs::MetadataExt::ino(&root_meta),
            ),
            rescan: false,
            mount_ns: strata_key::mount_ns().unwrap_or(0),
            mountinfo,
            mounts: Vec::new(),
            listener,
            socket: socket.to_path_buf(),
            cookies,
            cookie_wd,
            next_cookie: 0,
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
        };
        watcher.mounts = watcher.mounts_inside()?;
        watcher.watch_all()?;
        Ok(watcher)
    }

    /// How many directories are watched.
    pub fn directories(&self) -> usize {
        self.dirs.len()
    }

    /// Takes in events and answers questions until `stop` is set (looked at every 200 ms).
    pub fn serve(&mut self, stop: &AtomicBool) -> Result<(), WatchError> {
        while !stop.load(Ordering::Relaxed) {
            let (events, asked, mounted) = {
                let mut fds = [
                    PollFd::new(&self.inotify, PollFlags::IN),
                    PollFd::new(&self.listener, PollFlags::IN),
                    PollFd::new(&self.mountinfo, PollFlags::PRI),
                ];
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(io("cannot wait on", &self.root)(e.into())),
                }
                (
                    !fds[0].revents().is_empty(),
                    !fds[1].revents().is_empty(),
                    !fds[2].revents().is_empty(),
                )
            };
            if mounted {
                self.check_mounts()?;
            }
            if events {
                self.take_in(None)?;
            }
            if asked {
                while let Ok((stream, _)) = self.listener.accept() {
                    self.answer(stream)?;
                }
            }
        }
        Ok(())
    }

    /// Reads one question from `stream` and answers it, after taking in every event queued
    /// before it. A client that misbehaves gets nothing; only the watcher's own failures end it.
    fn answer(&mut self, mut stream: UnixStream) -> Result<(), WatchError> {
        // The question is one short line; a client gets a second in all to send it, so one that
        // stalls delays the others (and the events) that long at most.
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut line = Vec::with_capacity(128);
        let mut byte = [0u8];
        while line.len() < 256 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return Ok(());
            }
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => return Ok(()),
            }
        }
        let Some(since) = std::str::from_utf8(&line)
            .ok()
            .and_then(protocol::parse_question)
        else {
            return Ok(());
        };
        // A mount made just before the question may not have woken the loop yet.
        self.check_mounts()?;
        let synced = self.sync()?;
        let now = WatchToken {
            instance: self.instance,
            generation: self.generation,
        };
        let changed = since
            .filter(|t| synced && t.instance == self.instance && t.generation >= self.floor)
            .map(|t| {
                let mut list: Vec<Changed> = self
                    .changed
                    .iter()
                    .filter(|(path, (g, _))| *g > t.generation && !self.unwatched.contains(*path))
                    .map(|(path, (_, dir))| Changed {
                        path: path.clone(),
                        dir: *dir,
                    })
                    .collect();
                // Directories not watched, and mount points: a filesystem mounted inside the
                // workspace may show the same files under another path too (a bind mount of one
                // of its own directories or files), whose events name one path only. A capture
                // that keeps one of these walks.
                let always = self
                    .unwatched
                    .iter()
                    .chain(self.mounts.iter().filter(|m| !m.is_empty()));
                list.extend(always.map(|path| Changed {
                    path: path.clone(),
                    dir: true,
                }));
                list.sort_unstable_by(|a, b| a.path.cmp(&b.path));
                list
            });
        let answer = WatchAnswer {
            now,
            root: self.root_id,
            mount_ns: self.mount_ns,
            changed,
        };
        let _ = stream.write_all(&protocol::answer_bytes(&answer));
        Ok(())
    }

    /// Takes in every event queued before now: creates a cookie and reads events until the
    /// cookie's arrives. `false` when it did not arrive in time.
    fn sync(&mut self) -> Result<bool, WatchError> {
        self.next_cookie += 1;
        let name = format!("c{}", self.next_cookie);
        let path = self.cookies.join(&name);
        std::fs::File::create(&path).map_err(io("cannot create", &path))?;
        let deadline = Instant::now() + SYNC_PATIENCE;
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            seen = self.take_in(Some(name.as_bytes()))?;
            if !seen {
                let mut fds = [PollFd::new(&self.inotify, PollFlags::IN)];
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                let _ = poll(&mut fds, Some(&timeout));
            }
        }
        let _ = std::fs::remove_file(&path);
        Ok(seen)
    }

    /// Takes in the events queued now; whether the cookie `cookie` was among them.
    fn take_in(&mut self, cookie: Option<&[u8]>) -> Result<bool, WatchError> {
        let mut found = false;
        // Events are copied out of the buffer before they are acted on (acting adds watches).
        let mut batch: Vec<(i32, ReadFlags, Option<Vec<u8>>)> = Vec::new();
        loop {
            batch.clear();
            {
                let mut reader = inotify::Reader::new(&self.inotify, &mut self.buf);
                loop {
                    match reader.next() {
                        Ok(e) => {
                            let name = e.file_name().map(|n| n.to_bytes().to_vec());
                            batch.push((e.wd(), e.events(), name));
                            if reader.is_buffer_empty() {
                                break;
                            }
                        }
                        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => break,
                        Err(e) => return Err(io("cannot read events of", &self.root)(e.into())),
                    }
                }
            }
            if batch.is_empty() {
                if std::mem::take(&mut self.rescan) {
                    self.watch_all()?;
                }
                return Ok(found);
            }
            for (wd, mask, name) in std::mem::take(&mut batch) {
                if wd == self.cookie_wd {
                    found |= cookie.is_some() && name.as_deref() == cookie;
                    continue;
                }
                self.event(wd, mask, name)?;
            }
        }
    }

    /// Acts on one event.
    fn event(&mut self, wd: i32, mask: ReadFlags, name: Option<Vec<u8>>) -> Result<(), WatchError> {
        if mask.contains(ReadFlags::QUEUE_OVERFLOW) {
            // Directories may have been made or moved unseen: watch everything again.
            self.lose_track();
            self.rescan = true;
            return Ok(());
        }
        if mask.contains(ReadFlags::IGNORED) {
            self.dirs.remove(&wd);
            return Ok(());
        }
        let Some(dir) = self.dirs.get(&wd) else {
            return Ok(());
        };
        if mask.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF) {
            if dir.is_empty() {
                return Err(WatchError::WorkspaceGone {
                    root: self.root.clone(),
                });
            }
            // The parent's own event names it.
            return Ok(());
        }
        let Some(name) = name else {
            return Ok(());
        };
        let path = join(dir, &name);
        let is_dir = mask.contains(ReadFlags::ISDIR);
        self.generation += 1;
        let entry = self.changed.entry(path.clone()).or_insert((0, false));
        *entry = (self.generation, entry.1 || is_dir);
        if is_dir {
            if mask.intersects(ReadFlags::MOVED_FROM | ReadFlags::MOVED_TO) {
                // The watches under a moved directory (or two exchanged ones) keep the paths
                // they had: all are set up again, by path, once the batch is taken in.
                self.rescan = true;
            } else if mask.contains(ReadFlags::CREATE) {
                self.watch_tree(path)?;
            }
        }
        if self.changed.len() > MAX_CHANGED {
            self.lose_track();
        }
        Ok(())
    }

    /// Forgets the changed paths: tokens from before now get "unknown".
    fn lose_track(&mut self) {
        self.changed.clear();
        self.generation += 1;
        self.floor = self.generation;
    }

    /// Looks at the mount table after it changed: a mount made or removed inside the workspace
    /// changes its files without an event, so then every change is unknown and the watches are
    /// set up again.
    fn check_mounts(&mut self) -> Result<(), WatchError> {
        let now = self.mounts_inside()?;
        if now != self.mounts {
            self.mounts = now;
            self.lose_track();
            self.watch_all()?;
        }
        Ok(())
    }

    /// Sets every watch up again from the root, by path (forgetting which were set up before).
    fn watch_all(&mut self) -> Result<(), WatchError> {
        self.dirs.clear();
        self.unwatched.clear();
        self.watch_tree(Vec::new())
    }

    /// The mount points inside the workspace, sorted, from the mount table read afresh.
    fn mounts_inside(&mut self) -> Result<Vec<Vec<u8>>, WatchError> {
        use std::io::Seek;
        let mut table = Vec::new();
        self.mountinfo
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| self.mountinfo.read_to_end(&mut table))
            .map_err(io("cannot read", Path::new("/proc/self/mountinfo")))?;
        let root = self.root.as_os_str().as_bytes();
        let mut inside: Vec<Vec<u8>> = table
            .split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b' ').nth(4))
            .map(unescape_octal)
            .filter_map(|point| {
                let rel = if point == root {
                    Vec::new()
                } else {
                    point.strip_prefix(root)?.strip_prefix(b"/")?.to_vec()
                };
                let excluded = self
                    .exclude
                    .iter()
                    .any(|x| rel == *x || (rel.starts_with(x) && rel.get(x.len()) == Some(&b'/')));
                (!excluded).then_some(rel)
            })
            .collect();
        inside.sort_unstable();
        Ok(inside)
    }

    /// Whether directory `rel` is watched: not excluded, and not inside a `.git` but for the
    /// `.git` itself and its `info/`.
    fn wanted(&self, rel: &[u8]) -> bool {
        if self.exclude.iter().any(|x| x == rel) {
            return false;
        }
        let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        match parts.iter().position(|p| *p == b".git") {
            None => true,
            Some(i) => parts.len() == i + 1 || (parts.len() == i + 2 && parts[i + 1] == b"info"),
        }
    }

    /// Watches directory `rel` and every wanted directory under it. A directory created while
    /// this runs is named by an event of its parent's watch, which is set up first.
    fn watch_tree(&mut self, rel: Vec<u8>) -> Result<(), WatchError> {
        let flags = WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR
            | WatchFlags::DONT_FOLLOW
            | WatchFlags::EXCL_UNLINK;
        let mut stack = vec![rel];
        while let Some(rel) = stack.pop() {
            if !self.wanted(&rel) {
                continue;
            }
            let path = self.root.join(OsStr::from_bytes(&rel));
            let wd = match inotify::add_watch(&self.inotify, &path, flags) {
                Ok(wd) => wd,
                // Gone already, or no longer a directory: its parent's events say so.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => continue,
                Err(rustix::io::Errno::NOSPC) => return Err(WatchError::TooManyWatches { path }),
                // Not watchable (no permission, a path too long): every answer names it.
                Err(_) => {
                    self.unwatched.insert(rel);
                    continue;
                }
            };
            // The same directory under two paths (a bind mount inside the workspace): one watch,
            // whose events would name one path only. Both are named in every answer instead.
            if let Some(other) = self.dirs.insert(wd, rel.clone())
                && other != rel
            {
                self.unwatched.insert(other);
                self.unwatched.insert(rel.clone());
            }
            let Ok(entries) = std::fs::read_dir(&path) else {
                // Its subdirectories cannot be found, so not watched: every answer names it.
                self.unwatched.insert(rel);
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(join(&rel, entry.file_name().as_bytes()));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir_all(&self.cookies);
    }
}

/// A mount point as the mount table writes it: space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}
