//! OCI layer archive -> layer directory (overlayfs upper dir format).
//!
//! An archive from a shared cache or a registry is untrusted input. Applying one never writes
//! outside the target directory: every entry path must be relative and free of `..`; an entry may
//! only be created inside a directory that an earlier entry of this same archive created (so a
//! symlink or file in the archive can never be walked through); a hard link must name an earlier
//! regular file of the archive; a name may appear only once (directories excepted); and overlay's
//! own xattrs are refused. The target must be a new, empty directory that nobody else writes to,
//! which is what makes these checks complete: nothing on disk there is not in the archive.
//!
//! The digest of the compressed stream is checked once the whole stream has been read; the caller
//! unpacks into a private directory and publishes it only when this returns `Ok`.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex, mpsc};

use rustix::fs::{FileType, Mode, Timespec, Timestamps};

use super::{Compression, OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, PAX_XATTR_PREFIX, WHITEOUT_PREFIX};
use crate::digest::{DigestReader, OciDigest};

/// What was applied: the digest and size of the stream as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    pub digest: OciDigest,
    pub size: u64,
    /// The BLAKE3 digest of every regular file written, by its path, computed from the bytes
    /// as they were written: hashing the unpacked tree afterwards need not read them again.
    pub contents: HashMap<PathBuf, [u8; 32]>,
}

/// What the archive must hash to. The tar stream is hashed only when its `diff_id` is to be
/// checked (an image's config lists them); for a blob already checked by its digest, that second
/// SHA-256 over the uncompressed stream would prove nothing more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub digest: Option<OciDigest>,
    pub diff_id: Option<OciDigest>,
}

impl Expected {
    /// Whether the archive that was read, with `digest` and (when it was hashed) `diff_id`, is
    /// the one expected.
    pub(crate) fn check(
        &self,
        digest: OciDigest,
        diff_id: Option<OciDigest>,
    ) -> Result<(), ApplyError> {
        if let Some(expected) = self.digest
            && expected != digest
        {
            return Err(ApplyError::DigestMismatch {
                expected,
                actual: digest,
            });
        }
        if let (Some(expected), Some(actual)) = (self.diff_id, diff_id)
            && expected != actual
        {
            return Err(ApplyError::DiffIdMismatch { expected, actual });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer archive entry `{entry}` is refused: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("layer archive is malformed")]
    Malformed(#[source] io::Error),
    #[error("failed to write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer archive diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        expected: OciDigest,
        actual: OciDigest,
    },
    #[error("layer archive digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        expected: OciDigest,
        actual: OciDigest,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err(path: &Path) -> impl FnOnce(rustix::io::Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Unpacks the layer archive read from `input` into `dest` (a new, empty directory), converting
/// `.wh.` whiteouts to overlay whiteouts. The compressed stream is always hashed; it must have
/// `expected.digest` and, uncompressed, `expected.diff_id`, when they are given.
///
/// Three stages overlap: one thread reads, hashes and decompresses; the calling thread (hashing
/// the tar stream if its `diff_id` is expected) checks every entry and creates directories, links and special files; a few
/// writer threads write file contents and metadata (file creation, not decompression, is what a
/// tree of many small files waits on).
pub fn apply_layer<R: Read + Send>(
    input: R,
    compression: Compression,
    dest: &Path,
    expected: Expected,
) -> Result<AppliedLayer, ApplyError> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let (job_tx, job_rx) = mpsc::sync_channel::<Vec<FileJob>>(8);
    let job_rx = Mutex::new(job_rx);
    let pool = PoolState::default();
    std::thread::scope(|s| {
        let (producer, reader) = decompressing(s, input, compression);
        for _ in 0..workers {
            s.spawn(|| pool.work(&job_rx));
        }
        let consumed = match expected.diff_id {
            Some(_) => {
                let mut plain = DigestReader::new(reader);
                consume(&mut plain, dest, job_tx, &pool).map(|()| Some(plain.finish().0))
            }
            None => consume(&mut { reader }, dest, job_tx, &pool).map(|()| None),
        };
        let produced = producer.join().expect("decompression thread panicked");
        let diff_id = consumed?;
        let (digest, size) = produced.map_err(ApplyError::Malformed)?;
        expected.check(digest, diff_id)?;
        let contents = std::mem::take(&mut *pool.contents.lock().expect("contents lock"));
        Ok(AppliedLayer {
            digest,
            size,
            contents,
        })
    })
}

/// Starts reading, hashing and decompressing `input` on a thread of `scope`. The stream is read
/// from the reader returned; the thread returns the compressed stream's digest and size once it
/// has read it to its end. Drop the reader before joining the thread: the thread stops early
/// only when nobody reads.
pub(crate) fn decompressing<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    input: R,
    compression: Compression,
) -> (
    std::thread::ScopedJoinHandle<'scope, io::Result<(OciDigest, u64)>>,
    ChannelReader,
) {
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    // Read chunks go back to the producer to be filled again.
    let (spent_tx, spent_rx) = mpsc::sync_channel::<Vec<u8>>(8);
    let producer = scope.spawn(move || produce(input, compression, &chunk_tx, &spent_rx));
    (producer, ChannelReader::new(chunk_rx, spent_tx))
}

/// Reads, hashes and decompresses `input` into chunks; returns the compressed stream's digest.
fn produce<R: Read>(
    input: R,
    compression: Compression,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    spent: &mpsc::Receiver<Vec<u8>>,
) -> io::Result<(OciDigest, u64)> {
    let mut compressed = DigestReader::new(input);
    let decompressed = match compression {
        Compression::Zstd => {
            zstd::Decoder::new(&mut compressed).and_then(|decoder| pump(decoder, tx, spent))
        }
        Compression::Gzip => pump(flate2::read::GzDecoder::new(&mut compressed), tx, spent),
        Compression::None => pump(&mut compressed, tx, spent),
    };
    if let Err(e) = decompressed {
        // Said to the reader too (unless it is the one that stopped).
        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
        return Err(e);
    }
    compressed.drain()?;
    Ok(compressed.finish())
}

/// Sends what `decoder` reads, in chunks of up to 1 MiB.
fn pump(
    mut decoder: impl Read,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    spent: &mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let mut buf = spent.try_recv().unwrap_or_default();
        buf.resize(1 << 20, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        if tx.send(Ok(buf)).is_err() {
            // The consumer stopped (a refused entry): its error is the one to report.
            return Err(io::Error::other("the archive was not read to its end"));
        }
    }
}

/// Applies the tar stream, read to its end.
fn consume(
    plain: &mut dyn Read,
    dest: &Path,
    jobs: mpsc::SyncSender<Vec<FileJob>>,
    pool: &PoolState,
) -> Result<(), ApplyError> {
    {
        let mut archive = tar::Archive::new(&mut *plain);
        let pool = Pool {
            jobs,
            state: pool,
            batch: Vec::new(),
            batch_bytes: 0,
        };
        let mut applier = Applier::new(dest, pool);
        for entry in archive.entries().map_err(ApplyError::Malformed)? {
            let entry = entry.map_err(ApplyError::Malformed)?;
            applier.entry(entry)?;
        }
        applier.finish()?;
    }
    io::copy(plain, &mut io::sink()).map_err(ApplyError::Malformed)?;
    Ok(())
}

/// The decompressed stream, as chunks from the decompression thread.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    spent: mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>, spent: mpsc::SyncSender<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            spent,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            let next = match self.rx.recv() {
                Ok(chunk) => chunk?,
                Err(_) => return Ok(0),
            };
            let read = std::mem::replace(&mut self.chunk, next);
            let _ = self.spent.try_send(read);
            self.pos = 0;
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Files up to this size are handed to the writer threads; larger ones are written in place.
const POOLED_FILE_MAX: u64 = 1 << 20;

/// A regular file to create, with its metadata.
struct FileJob {
    path: PathBuf,
    data: Vec<u8>,
    meta: Meta,
}

/// What `owner_and_times` and the xattrs set on an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
    chown: bool,
}

#[derive(Default)]
struct PoolState {
    pending: Mutex<usize>,
    idle: Condvar,
    error: Mutex<Option<ApplyError>>,
    /// The content digest of each file written (see [`AppliedLayer::contents`]).
    contents: Mutex<HashMap<PathBuf, [u8; 32]>>,
}

/// Files go to the writers in batches of up to this many files or bytes: handing over each
/// small file on its own costs a thread wake-up per file.
const BATCH_FILES: usize = 64;
const BATCH_BYTES: usize = 1 << 20;

impl PoolState {
    fn work(&self, rx: &Mutex<mpsc::Receiver<Vec<FileJob>>>) {
        loop {
            let batch = rx.lock().expect("job queue lock").recv();
            let Ok(batch) = batch else { return };
            let mut written = Vec::with_capacity(batch.len());
            for job in &batch {
                if let Err(e) = write_file(job) {
                    self.error.lock().expect("error lock").get_or_insert(e);
                    break;
                }
                written.push((job.path.clone(), *blake3::hash(&job.data).as_bytes()));
            }
            self.contents.lock().expect("contents lock").extend(written);
            let mut pending = self.pending.lock().expect("pending lock");
            *pending -= 1;
            if *pending == 0 {
                self.idle.notify_all();
            }
        }
    }
}

struct Pool<'a> {
    jobs: mpsc::SyncSender<Vec<FileJob>>,
    state: &'a PoolState,
    /// Files not yet handed over.
    batch: Vec<FileJob>,
    batch_bytes: usize,
}

impl Pool<'_> {
    fn failed(&self) -> Result<(), ApplyError> {
        match self.state.error.lock().expect("error lock").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn submit(&mut self, job: FileJob) -> Result<(), ApplyError> {
        self.batch_bytes += job.data.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), ApplyError> {
        self.failed()?;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        *self.state.pending.lock().expect("pending lock") += 1;
        self.jobs
            .send(batch)
            .map_err(|_| ApplyError::Malformed(io::Error::other("file writers stopped")))
    }

    /// Waits until every submitted file is written.
    fn flush(&mut self) -> Result<(), ApplyError> {
        self.send()?;
        let mut pending = self.state.pending.lock().expect("pending lock");
        while *pending > 0 {
            pending = self.state.idle.wait(pending).expect("pending lock");
        }
        drop(pending);
        self.failed()
    }
}

/// Writes to `inner` and hashes what was written.
struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: &'a mut blake3::Hasher,
    /// Whether a write failed (as opposed to the read that feeds it).
    write_failed: bool,
}

impl<W: io::Write> io::Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(buf)
            .inspect_err(|_| self.write_failed = true)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_file(job: &FileJob) -> Result<(), ApplyError> {
    let path = &job.path;
    let mut file = create_file(path)?;
    io::Write::write_all(&mut file, &job.data).map_err(io_err(path))?;
    apply_meta(Target::File(&file, path), &job.meta)
}

fn create_file(path: &Path) -> Result<File, ApplyError> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))
}

/// What metadata is set on: a file just written, through its descriptor (no more path
/// lookups), or anything else by path, without following a symlink.
#[derive(Clone, Copy)]
enum Target<'a> {
    File(&'a File, &'a Path),
    Path { path: &'a Path, symlink: bool },
}

impl Target<'_> {
    fn path(&self) -> &Path {
        match self {
            Target::File(_, path) | Target::Path { path, .. } => path,
        }
    }
}

/// Owner, then mode (chown clears set-id bits), then xattrs (chown drops
/// `security.capability`), then mtime.
fn apply_meta(target: Target<'_>, meta: &Meta) -> Result<(), ApplyError> {
    use rustix::fs::{AtFlags, CWD, Gid, Uid, XattrFlags};
    let path = target.path();
    let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
    let mode = Mode::from_raw_mode(meta.mode);
    let t = Timespec {
        tv_sec: meta.mtime as i64,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    match target {
        Target::File(file, _) => {
            if meta.chown {
                rustix::fs::fchown(file, Some(uid), Some(gid)).map_err(sys_err(path))?;
            }
            rustix::fs::fchmod(file, mode).map_err(sys_err(path))?;
            for (name, value) in &meta.xattrs {
                let name = xattr_name(path, name)?;
                rustix::fs::fsetxattr(file, name.as_c_str(), value, XattrFlags::empty())
                    .map_err(sys_err(path))?;
            }
            rustix::fs::futimens(file, &times).map_err(sys_err(path))
        }
        Target::Path { symlink, .. } => {
            if meta.chown {
                rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys_err(path))?;
            }
            if !symlink {
                rustix::fs::chmod(path, mode).map_err(sys_err(path))?;
            }
            for (name, value) in &meta.xattrs {
                let name = xattr_name(path, name)?;
                rustix::fs::lsetxattr(path, name.as_c_str(), value, XattrFlags::empty())
                    .map_err(sys_err(path))?;
            }
            rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(sys_err(path))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Other,
}

struct Applier<'a> {
    root: &'a Path,
    /// Every path created so far (relative), and what it is.
    seen: HashMap<PathBuf, Kind>,
    /// Directories whose mtime is set at the end (creating children changes it).
    dir_times: Vec<(PathBuf, u64)>,
    is_root: bool,
    pool: Pool<'a>,
}

impl<'a> Applier<'a> {
    fn new(root: &'a Path, pool: Pool<'a>) -> Self {
        let mut seen = HashMap::new();
        seen.insert(PathBuf::new(), Kind::Dir);
        Applier {
            root,
            seen,
            dir_times: Vec::new(),
            is_root: rustix::process::geteuid().is_root(),
            pool,
        }
    }

    fn meta(
        &self,
        header: &tar::Header,
        xattrs: Vec<(String, Vec<u8>)>,
    ) -> Result<Meta, ApplyError> {
        Ok(Meta {
            uid: header.uid().map_err(ApplyError::Malformed)? as u32,
            gid: header.gid().map_err(ApplyError::Malformed)? as u32,
            mode: header.mode().map_err(ApplyError::Malformed)? & 0o7777,
            mtime: header.mtime().unwrap_or(0),
            xattrs,
            chown: self.is_root,
        })
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| ApplyError::Unsafe {
            entry: shown.clone(),
            reason,
        };
        let rel = clean_path(&raw).map_err(unsafe_entry)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let Some(name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            // The root itself (`./`): its metadata is not part of a layer.
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        self.ensure_dir(&parent).map_err(unsafe_entry)?;

        if name == OPAQUE_MARKER.as_bytes() {
            let dir = self.root.join(&parent);
            set_xattr(&dir, OVERLAY_OPAQUE_XATTR, b"y")?;
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(unsafe_entry("malformed whiteout name"));
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            self.claim(&target, Kind::Other).map_err(unsafe_entry)?;
            let path = self.root.join(&target);
            let mode = header.mode().map_err(ApplyError::Malformed)? & 0o7777;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                FileType::CharacterDevice,
                Mode::from_raw_mode(mode),
                0,
            )
            .map_err(sys_err(&path))?;
            let meta = self.meta(&header, Vec::new())?;
            let symlink = false;
            return apply_meta(
                Target::Path {
                    path: &path,
                    symlink,
                },
                &meta,
            );
        }

        let pax = read_pax_xattrs(&mut entry)?;
        if pax.iter().any(|(n, _)| n.starts_with("trusted.overlay.")) {
            return Err(unsafe_entry("it sets an overlayfs xattr"));
        }
        let path = self.root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                if self.seen.get(&rel) == Some(&Kind::Dir) {
                    // A directory listed again (or first created implicitly): metadata only.
                } else {
                    self.claim(&rel, Kind::Dir).map_err(unsafe_entry)?;
                    std::fs::create_dir(&path).map_err(io_err(&path))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.claim(&rel, Kind::File).map_err(unsafe_entry)?;
                let size = header.size().map_err(ApplyError::Malformed)?;
                if size <= POOLED_FILE_MAX {
                    let mut data = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut data)
                        .map_err(ApplyError::Malformed)?;
                    let meta = self.meta(&header, pax)?;
                    return self.pool.submit(FileJob { path, data, meta });
                }
                let mut file = create_file(&path)?;
                let mut hasher = blake3::Hasher::new();
                let mut writer = HashingWriter {
                    inner: &mut file,
                    hasher: &mut hasher,
                    write_failed: false,
                };
                if let Err(e) = io::copy(&mut entry, &mut writer) {
                    // Reading the archive (a stream that ended early, a bad frame) is the
                    // archive's fault; writing the file is this machine's.
                    return Err(if writer.write_failed {
                        io_err(&path)(e)
                    } else {
                        ApplyError::Malformed(e)
                    });
                }
                let meta = self.meta(&header, pax)?;
                apply_meta(Target::File(&file, &path), &meta)?;
                self.pool
                    .state
                    .contents
                    .lock()
                    .expect("contents lock")
                    .insert(path, *hasher.finalize().as_bytes());
                return Ok(());
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("symlink without a target"))?
                    .into_owned();
                self.claim(&rel, Kind::Other).map_err(unsafe_entry)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("hard link without a target"))?
                    .into_owned();
                let target = clean_path(&target)
                    .map_err(|_| unsafe_entry("hard link to a path outside the layer"))?;
                if self.seen.get(&target) != Some(&Kind::File) {
                    return Err(unsafe_entry(
                        "hard link to something that is not an earlier file of this layer",
                    ));
                }
                self.claim(&rel, Kind::File).map_err(unsafe_entry)?;
                // The file it names may still be with a writer thread.
                self.pool.flush()?;
                let from = self.root.join(&target);
                std::fs::hard_link(&from, &path).map_err(io_err(&path))?;
                // A hard link shares its metadata with the file it names.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.claim(&rel, Kind::Other).map_err(unsafe_entry)?;
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                rustix::fs::mknodat(rustix::fs::CWD, &path, ft, Mode::empty(), dev)
                    .map_err(sys_err(&path))?;
            }
            _ => return Err(unsafe_entry("unsupported entry type")),
        }
        let meta = self.meta(&header, pax)?;
        let symlink = kind == tar::EntryType::Symlink;
        apply_meta(
            Target::Path {
                path: &path,
                symlink,
            },
            &meta,
        )?;
        if kind == tar::EntryType::Directory {
            let mtime = header.mtime().unwrap_or(0);
            self.dir_times.push((path, mtime));
        }
        Ok(())
    }

    /// Makes sure `dir` (relative) is a directory of this layer, creating missing ancestors as
    /// plain directories. Refuses to go through anything that is not a directory.
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), &'static str> {
        let mut at = PathBuf::new();
        for part in dir.components() {
            at.push(part);
            match self.seen.get(&at) {
                Some(Kind::Dir) => {}
                Some(_) => return Err("its path goes through a non-directory of the layer"),
                None => {
                    std::fs::create_dir(self.root.join(&at))
                        .map_err(|_| "its parent directory cannot be created")?;
                    self.seen.insert(at.clone(), Kind::Dir);
                }
            }
        }
        Ok(())
    }

    fn claim(&mut self, rel: &Path, kind: Kind) -> Result<(), &'static str> {
        if self.seen.contains_key(rel) {
            return Err("the layer already has an entry with this name");
        }
        self.seen.insert(rel.to_path_buf(), kind);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ApplyError> {
        self.pool.flush()?;
        // Deepest first is not needed: setting a directory's mtime does not touch its parent.
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }
}

/// An entry path as a clean relative path: no root, no `..`; `.` components dropped.
fn clean_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
            Component::ParentDir => return Err("its path contains `..`"),
        }
    }
    Ok(out)
}

fn read_pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(String, Vec<u8>)>, ApplyError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Malformed)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Malformed)?;
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX)
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn xattr_name(path: &Path, name: &str) -> Result<CString, ApplyError> {
    CString::new(name).map_err(|_| ApplyError::Unsafe {
        entry: path.display().to_string(),
        reason: "an xattr name contains NUL",
    })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ApplyError> {
    let name = xattr_name(path, name)?;
    rustix::fs::lsetxattr(
        path,
        name.as_c_str(),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(sys_err(path))
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), ApplyError> {
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(sys_err(path))
}
