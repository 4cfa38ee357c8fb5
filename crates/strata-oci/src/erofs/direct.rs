//! A new image file written around the page cache (`O_DIRECT`), from a thread of its own.
//!
//! An image restored from the shared cache is written once and then read only in part: a task
//! reads a few of a toolchain's files, not all 45k. Written through the page cache, every byte
//! would first be copied into a new page, and on a fresh VM each new page is memory the
//! hypervisor has not yet given the guest: writing 745 MB that way took 2.2–2.4 s of system
//! time here, against 0.1 s direct (BENCHMARKS.md, issue 13, sixth session). Written direct, the
//! bytes go from one of a few reused buffers to the disk, and only what is read later takes
//! pages.
//!
//! The image writer writes almost only at the end of the file; those writes are gathered into
//! aligned chunks that a second thread writes while the first goes on. A write elsewhere (the
//! superblock, last) reads, patches and rewrites the aligned blocks it falls in. Where the file
//! system refuses direct I/O, the same file is written through the page cache instead.

use std::alloc::{self, Layout};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};

/// Offsets, lengths and buffer addresses of direct I/O are multiples of this (the largest
/// logical block size a disk has).
const ALIGN: usize = 4096;
/// The size of one write handed to the writing thread.
const CHUNK: usize = 1 << 20;
/// Chunks written or waiting while the next fills: memory is `(IN_FLIGHT + 1) * CHUNK`.
const IN_FLIGHT: usize = 3;

/// A buffer whose address is aligned for direct I/O.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: `Aligned` owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(cap: usize) -> Aligned {
        let layout = Layout::from_size_align(cap, ALIGN).expect("a valid layout");
        // SAFETY: `cap` is not zero (callers pass multiples of `ALIGN`).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Aligned { ptr, len: 0, cap }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialized (the allocation is zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn whole_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `cap` bytes, all initialized.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("a valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// A new file written direct where the file system allows it (see the module's notes). Call
/// [`ImageFile::finish`] to learn whether every write reached the file.
pub struct ImageFile {
    file: Arc<File>,
    direct: bool,
    /// The chunk being filled; its first byte belongs at `start` (a multiple of `ALIGN`).
    buf: Aligned,
    start: u64,
    /// Where the next `write` goes.
    pos: u64,
    /// The file's length as written (direct writes of whole blocks may leave it longer, until
    /// it is cut back to this).
    len: u64,
    /// Chunks to the writing thread, and back once written (or the first error).
    to_writer: Option<SyncSender<(Aligned, u64)>>,
    from_writer: Receiver<io::Result<Aligned>>,
    in_flight: usize,
    spare: Vec<Aligned>,
    writer: Option<JoinHandle<()>>,
    /// A write failed: the file is incomplete, and every later call says so.
    failed: bool,
}

impl ImageFile {
    /// Creates the file at `path` (which must not exist).
    pub fn create_new(path: &Path) -> io::Result<ImageFile> {
        ImageFile::create(path, true)
    }

    fn create(path: &Path, try_direct: bool) -> io::Result<ImageFile> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o644);
        let tried = match try_direct {
            true => rustix::fs::open(path, flags | OFlags::DIRECT, mode),
            false => Err(rustix::io::Errno::INVAL),
        };
        let (fd, direct) = match tried {
            Ok(fd) => (fd, true),
            // A file system without direct I/O (tmpfs before 6.6, some FUSE ones).
            Err(rustix::io::Errno::INVAL) => (rustix::fs::open(path, flags, mode)?, false),
            Err(e) => return Err(e.into()),
        };
        let file = Arc::new(File::from(fd));
        let (to_writer, chunks) = mpsc::sync_channel::<(Aligned, u64)>(IN_FLIGHT);
        let (written, from_writer) = mpsc::sync_channel::<io::Result<Aligned>>(IN_FLIGHT + 1);
        let writing = Arc::clone(&file);
        let writer = std::thread::Builder::new()
            .name("image-writer".into())
            .spawn(move || {
                for (chunk, at) in chunks {
                    let done = write_at(&writing, chunk.bytes(), at).map(|()| chunk);
                    if written.send(done).is_err() {
                        return;
                    }
                }
            })?;
        Ok(ImageFile {
            file,
            direct,
            buf: Aligned::new(CHUNK),
            start: 0,
            pos: 0,
            len: 0,
            to_writer: Some(to_writer),
            from_writer,
            in_flight: 0,
            spare: Vec::new(),
            writer: Some(writer),
            failed: false,
        })
    }

    /// Whether the file is written direct (the file system allowed it).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes what is left and waits for every write.
    pub fn finish(mut self) -> io::Result<()> {
        self.check()?;
        self.flush_all()?;
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            writer
                .join()
                .map_err(|_| io::Error::other("the image writing thread panicked"))?;
        }
        Ok(())
    }

    fn end(&self) -> u64 {
        self.start + self.buf.len as u64
    }

    /// Waits for one chunk in flight; keeps its buffer for reuse.
    fn receive_one(&mut self) -> io::Result<()> {
        let written = self.from_writer.recv();
        self.in_flight -= 1;
        match written {
            Ok(Ok(chunk)) => {
                self.spare.push(chunk);
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail(io::Error::other("the image writing thread stopped"))),
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = true;
        e
    }

    /// Refuses to go on after a failed write: what follows would land in an incomplete file.
    fn check(&self) -> io::Result<()> {
        match self.failed {
            true => Err(io::Error::other(
                "an earlier write to the image file failed",
            )),
            false => Ok(()),
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        Ok(())
    }

    /// Hands the first `len` bytes of the chunk (a multiple of `ALIGN`) to the writing thread;
    /// the rest (less than a block) stays at the start of the next chunk.
    fn send(&mut self, len: usize) -> io::Result<()> {
        if self.in_flight == IN_FLIGHT {
            self.receive_one()?;
        }
        let mut next = self.spare.pop().unwrap_or_else(|| Aligned::new(CHUNK));
        let rest = self.buf.len - len;
        next.whole_mut()[..rest].copy_from_slice(&self.buf.bytes()[len..]);
        next.len = rest;
        let mut full = std::mem::replace(&mut self.buf, next);
        full.len = len;
        let at = self.start;
        self.start += len as u64;
        self.to_writer
            .as_ref()
            .expect("writing until finished")
            .send((full, at))
            .map_err(|_| io::Error::other("the image writing thread stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Writes every byte so far. A tail shorter than a block is written as a whole block of
    /// its own (zero-padded past the tail) and kept to be written again with what follows; the
    /// file is cut back to its true length.
    fn flush_all(&mut self) -> io::Result<()> {
        self.check()?;
        let flushed = self.flush_inner();
        self.failed |= flushed.is_err();
        flushed
    }

    fn flush_inner(&mut self) -> io::Result<()> {
        let whole = self.buf.len / ALIGN * ALIGN;
        if whole > 0 {
            self.send(whole)?;
        }
        self.drain()?;
        let tail = self.buf.len;
        if tail > 0 {
            let padded = if self.direct { ALIGN } else { tail };
            let mut block = self.spare.pop().unwrap_or_else(|| Aligned::new(CHUNK));
            block.whole_mut()[..padded].fill(0);
            block.whole_mut()[..tail].copy_from_slice(self.buf.bytes());
            block.len = padded;
            write_at(&self.file, block.bytes(), self.start)?;
            self.spare.push(block);
        }
        if self.file.metadata()?.len() != self.len {
            self.file.set_len(self.len)?;
        }
        Ok(())
    }

    /// Writes `data` at `at`, below the chunk being filled. Direct, the aligned blocks it
    /// touches are read, patched and written again.
    fn patch(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        self.drain()?;
        if !self.direct {
            return self.file.write_all_at(data, at);
        }
        let first = at / ALIGN as u64 * ALIGN as u64;
        let last = (at + data.len() as u64).div_ceil(ALIGN as u64) * ALIGN as u64;
        let len = (last - first) as usize;
        let mut blocks = Aligned::new(len);
        let mut filled = 0;
        while filled < len {
            // Past the file's end, the blocks stay zero.
            match self
                .file
                .read_at(&mut blocks.whole_mut()[filled..], first + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let offset = (at - first) as usize;
        blocks.whole_mut()[offset..offset + data.len()].copy_from_slice(data);
        blocks.len = len;
        write_at(&self.file, blocks.bytes(), first)
    }
}

/// Writes `bytes` at `at`. A file system that took `O_DIRECT` at open but refuses a direct write
/// (an alignment larger than `ALIGN`) has the file switched to plain writes, and the write made
/// again: every write of this module is correct either way.
fn write_at(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    match file.write_all_at(bytes, at) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            let flags = rustix::fs::fcntl_getfl(file)?;
            if !flags.contains(OFlags::DIRECT) {
                return Err(e);
            }
            rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
            file.write_all_at(bytes, at)
        }
        done => done,
    }
}

impl Write for ImageFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let written = self.write_some(data);
        self.failed |= written.is_err();
        written
    }

    /// Waits until everything written so far is in the file.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_all()
    }
}

impl ImageFile {
    fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.pos < self.start {
            // Below the chunk: at most up to it, read-modify-written.
            let n = data.len().min((self.start - self.pos) as usize);
            self.patch(self.pos, &data[..n])?;
            self.pos += n as u64;
            self.len = self.len.max(self.pos);
            return Ok(n);
        }
        // Past the end: the skipped bytes read as zeroes, as in a file. While nothing is
        // gathered, the chunk just starts at the last block boundary before the write (a hole
        // before it); zeroes fill the rest.
        while self.pos > self.end() {
            if self.buf.len == 0 {
                self.start = self.pos / ALIGN as u64 * ALIGN as u64;
                if self.pos == self.start {
                    break;
                }
            }
            let (end, len) = (self.end(), self.buf.len);
            let gap = (self.pos - end).min((CHUNK - len) as u64) as usize;
            self.buf.whole_mut()[len..len + gap].fill(0);
            self.buf.len += gap;
            if self.buf.len == CHUNK {
                self.send(CHUNK)?;
            }
        }
        // Within or at the end of the chunk being filled.
        let offset = (self.pos - self.start) as usize;
        let n = data.len().min(CHUNK - offset);
        self.buf.whole_mut()[offset..offset + n].copy_from_slice(&data[..n]);
        self.buf.len = self.buf.len.max(offset + n);
        self.pos += n as u64;
        self.len = self.len.max(self.pos);
        if self.buf.len == CHUNK {
            self.send(CHUNK)?;
        }
        Ok(n)
    }
}

impl Seek for ImageFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let end = self.len;
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(by) => end.checked_add_signed(by),
            SeekFrom::Current(by) => self.pos.checked_add_signed(by),
        };
        // As lseek(2): no offset past what `off_t` holds.
        self.pos = target
            .filter(|&at| i64::try_from(at).is_ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek out of range"))?;
        Ok(self.pos)
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use proptest::prelude::*;

    use super::*;

    /// A directory on a disk's file system (on tmpfs the page cache is the file itself): the
    /// tests look at what direct I/O does.
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/var/tmp").unwrap()
    }

    /// Writes at positions `ops` (seek, then bytes) into a file and into a `Vec`, the model.
    fn write_both(
        direct: bool,
        ops: &[(u64, Vec<u8>)],
        flush_between: bool,
    ) -> (Vec<u8>, Vec<u8>, bool) {
        let dir = disk_dir();
        let path = dir.path().join("image");
        let mut file = ImageFile::create(&path, direct).unwrap();
        let used_direct = file.is_direct();
        let mut model = Vec::new();
        for (at, bytes) in ops {
            file.seek(SeekFrom::Start(*at)).unwrap();
            file.write_all(bytes).unwrap();
            let end = *at as usize + bytes.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*at as usize..end].copy_from_slice(bytes);
            if flush_between {
                file.flush().unwrap();
            }
        }
        file.finish().unwrap();
        (std::fs::read(&path).unwrap(), model, used_direct)
    }

    #[test]
    fn an_image_shaped_write_is_written_direct_and_read_back_whole() {
        // As the image writer writes: contents from block 1 on, in pieces of any size, then the
        // superblock in block 0 last.
        let mut ops = Vec::new();
        let mut at = 4096u64;
        for i in 0..700u64 {
            let len = (i * 7919 % 9000) as usize + 1;
            ops.push((at, vec![(i % 251) as u8 + 1; len]));
            at += len as u64;
        }
        ops.push((1024, vec![0xE2; 128]));
        let (file, model, direct) = write_both(true, &ops, false);
        assert!(
            direct,
            "this test's directory is on a file system with direct I/O"
        );
        assert_eq!(file.len(), model.len());
        assert!(file == model, "the file differs from what was written");
    }

    /// How many of the file's pages are in the page cache.
    fn cached_pages(path: &Path) -> usize {
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: a read-only shared mapping of a file held open, unmapped before return; `vec`
        // has one byte per page of it.
        unsafe {
            use std::os::fd::AsRawFd;
            let at = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(at, libc::MAP_FAILED);
            assert_eq!(libc::mincore(at, len, vec.as_mut_ptr()), 0);
            libc::munmap(at, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn what_is_written_direct_takes_no_page_cache() {
        let dir = disk_dir();
        let path = dir.path().join("image");
        let mut file = ImageFile::create_new(&path).unwrap();
        assert!(
            file.is_direct(),
            "this test's directory is on a file system with direct I/O"
        );
        file.seek(SeekFrom::Start(4096)).unwrap();
        let content = vec![7u8; 16 << 20];
        file.write_all(&content).unwrap();
        file.seek(SeekFrom::Start(1024)).unwrap();
        file.write_all(&[1; 128]).unwrap();
        file.finish().unwrap();
        let cached = cached_pages(&path);
        // Written through the page cache, its 4097 pages would be there.
        assert!(cached <= 1, "{cached} of the image's pages are cached");
        let back = std::fs::read(&path).unwrap();
        assert!(back[4096..] == content[..] && back[1024..1152] == [1; 128]);
    }

    #[test]
    fn a_direct_write_the_file_system_refuses_is_made_again_through_the_page_cache() {
        let dir = disk_dir();
        let path = dir.path().join("f");
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::DIRECT;
        let file = File::from(rustix::fs::open(&path, flags, Mode::from_raw_mode(0o644)).unwrap());
        // Three bytes at offset 5, from an unaligned buffer: no file system takes that direct.
        write_at(&file, b"abc", 5).unwrap();
        assert!(
            !rustix::fs::fcntl_getfl(&file)
                .unwrap()
                .contains(OFlags::DIRECT)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0\0\0abc");
    }

    #[test]
    fn a_write_far_past_the_end_leaves_a_hole_not_a_gigabyte_of_zeroes() {
        let dir = disk_dir();
        let path = dir.path().join("sparse");
        let mut file = ImageFile::create_new(&path).unwrap();
        file.write_all(b"head").unwrap();
        file.seek(SeekFrom::Start((1 << 30) + 7)).unwrap();
        file.write_all(b"tail").unwrap();
        file.finish().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), (1 << 30) + 11);
        use std::os::unix::fs::MetadataExt;
        // At most the rest of the chunk "head" is in is filled with zeroes.
        assert!(
            meta.blocks() * 512 <= (CHUNK + 2 * ALIGN) as u64,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let file = File::open(&path).unwrap();
        let mut buf = [0u8; 11];
        file.read_exact_at(&mut buf, 1 << 30).unwrap();
        assert_eq!(&buf, b"\0\0\0\0\0\0\0tail");
        file.read_exact_at(&mut buf[..4], 0).unwrap();
        assert_eq!(&buf[..4], b"head");
    }

    #[test]
    fn a_seek_past_what_an_offset_holds_is_refused_as_lseek_refuses_it() {
        let dir = disk_dir();
        let mut file = ImageFile::create_new(&dir.path().join("f")).unwrap();
        let err = file.seek(SeekFrom::Start(u64::MAX - 10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(file.stream_position().unwrap(), 0);
        file.write_all(b"ok").unwrap();
        file.finish().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_writes_leave_the_file_a_plain_file_would_have(
            ops in proptest::collection::vec(
                (0u64..3 * CHUNK as u64, proptest::collection::vec(any::<u8>(), 1..20_000)),
                1..12,
            ),
            direct in any::<bool>(),
            flush_between in any::<bool>(),
        ) {
            let (file, model, _) = write_both(direct, &ops, flush_between);
            prop_assert_eq!(file.len(), model.len());
            prop_assert!(file == model, "the file differs from what was written");
        }
    }
}
