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
        let mut watcher = Watcher {
            root,
            exclude,
            inotify,
            dirs: HashMap::new(),
            instance,
            generation: 0,
            floor: 0,
            changed: HashMap::new(),
            listener,
            socket: socket.to_path_buf(),
            cookies,
            cookie_wd,
            next_cookie: 0,
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
        };
        watcher.watch_tree(Vec::new())?;
        Ok(watcher)
    }

    /// How many directories are watched.
    pub fn directories(&self) -> usize {
        self.dirs.len()
    }

    /// Takes in events and answers questions until `stop` is set (looked at every 200 ms).
    pub fn serve(&mut self, stop: &AtomicBool) -> Result<(), WatchError> {
        while !stop.load(Ordering::Relaxed) {
            let (events, asked) = {
                let mut fds = [
                    PollFd::new(&self.inotify, PollFlags::IN),
                    PollFd::new(&self.listener, PollFlags::IN),
                ];
                let timeout = Timespec {
                    tv_sec: 0,
                    tv_nsec: 200_000_000,
                };
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(io("cannot wait on", &self.root)(e.into())),
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
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
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let mut line = Vec::with_capacity(128);
        let mut byte = [0u8];
        while line.len() < 256 {
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
                    .filter(|(_, (g, _))| *g > t.generation)
                    .map(|(path, (_, dir))| Changed {
                        path: path.clone(),
                        dir: *dir,
                    })
                    .collect();
                list.sort_unstable_by(|a, b| a.path.cmp(&b.path));
                list
            });
        let _ = stream.write_all(&protocol::answer_bytes(&WatchAnswer { now, changed }));
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
            self.lose_track();
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
            if mask.contains(ReadFlags::MOVED_FROM) {
                self.unwatch_tree(&path);
            }
            if mask.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
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
                Err(e) => return Err(io("cannot watch", &path)(e.into())),
            };
            self.dirs.insert(wd, rel.clone());
            let Ok(entries) = std::fs::read_dir(&path) else {
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

    /// Stops watching directory `rel` and what is under it (it was moved: their paths are no
    /// longer theirs; where it went, if inside, is watched anew).
    fn unwatch_tree(&mut self, rel: &[u8]) {
        let under = |d: &[u8]| d == rel || (d.starts_with(rel) && d.get(rel.len()) == Some(&b'/'));
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, d)| under(d))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = inotify::remove_watch(&self.inotify, wd);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir_all(&self.cookies);
    }
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
