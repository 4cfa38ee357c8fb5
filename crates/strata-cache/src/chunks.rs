//! A blob being produced, cut into fixed-size chunks that background threads send, so that
//! producing and uploading overlap (S3 multipart parts, registry upload chunks).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::BackendError;

/// A chunk and its number (from 1, in the order written).
pub(crate) type Chunk = (u16, Vec<u8>);

/// Buffers used over and over. A new buffer is memory the process has never touched: each of
/// its pages faults and is zeroed by the kernel (on a fresh VM, also given to the guest by the
/// host). For a 300 MB layer that was a tenth of a cold restore's CPU; a few buffers going
/// round pay it once. Uploads send from them, readers fetch into them.
#[derive(Clone)]
pub(crate) struct BufferPool {
    bufs: Arc<Mutex<Vec<Vec<u8>>>>,
    /// How many idle buffers are kept.
    keep: usize,
}

impl BufferPool {
    pub(crate) fn new(keep: usize) -> BufferPool {
        BufferPool {
            bufs: Arc::default(),
            keep,
        }
    }

    /// An idle buffer, as it was given back (its length included).
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        self.bufs.lock().expect("buffer pool lock").pop()
    }

    pub(crate) fn give(&self, buf: Vec<u8>) {
        let mut bufs = self.bufs.lock().expect("buffer pool lock");
        if bufs.len() < self.keep && buf.capacity() > 0 {
            bufs.push(buf);
        }
    }
}

/// Where sender threads take chunks from, and give their buffers back once sent.
#[derive(Clone)]
pub(crate) struct Chunks {
    queue: Arc<Mutex<Receiver<Chunk>>>,
    spent: BufferPool,
}

impl Chunks {
    /// The next chunk to send; `None` once the blob is complete (or abandoned).
    pub(crate) fn next(&self) -> Option<Chunk> {
        self.queue.lock().expect("chunk lock").recv().ok()
    }

    /// A sent chunk's buffer, for a later chunk.
    pub(crate) fn spent(&self, buf: Vec<u8>) {
        self.spent.give(buf);
    }
}

pub(crate) struct ChunkedUpload<R> {
    size: usize,
    location: String,
    chunk: Vec<u8>,
    next: u16,
    tx: Option<SyncSender<Chunk>>,
    spent: BufferPool,
    senders: Vec<JoinHandle<Result<R, BackendError>>>,
}

impl<R> ChunkedUpload<R> {
    /// Starts `threads` senders (`spawn` starts one); chunks are `size` bytes but the last.
    pub(crate) fn start(
        location: String,
        size: usize,
        threads: usize,
        spawn: impl Fn(Chunks) -> JoinHandle<Result<R, BackendError>>,
    ) -> Self {
        let (tx, rx) = sync_channel(threads);
        let chunks = Chunks {
            queue: Arc::new(Mutex::new(rx)),
            spent: BufferPool::new(threads + 1),
        };
        ChunkedUpload {
            size,
            location,
            chunk: Vec::with_capacity(size),
            next: 1,
            tx: Some(tx),
            spent: chunks.spent.clone(),
            senders: (0..threads).map(|_| spawn(chunks.clone())).collect(),
        }
    }

    pub(crate) fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), BackendError> {
        while !bytes.is_empty() {
            let n = (self.size - self.chunk.len()).min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.chunk.len() == self.size {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Sends the last, partial chunk; with `even_empty`, an empty one when nothing was written
    /// at all (S3 wants at least one part).
    pub(crate) fn flush(&mut self, even_empty: bool) -> Result<(), BackendError> {
        if !self.chunk.is_empty() || (even_empty && self.next == 1) {
            self.send()?;
        }
        Ok(())
    }

    /// How many chunks went to the senders so far.
    pub(crate) fn sent(&self) -> u16 {
        self.next - 1
    }

    /// Everything written, when it all fits in one chunk and nothing was sent yet: a blob that
    /// small is better stored in one request.
    pub(crate) fn take_whole(&mut self) -> Option<Vec<u8>> {
        (self.next == 1).then(|| std::mem::take(&mut self.chunk))
    }

    fn send(&mut self) -> Result<(), BackendError> {
        if self.next == u16::MAX {
            return Err(BackendError::Failed {
                location: self.location.clone(),
                action: "upload a blob".into(),
                message: format!("blobs are limited to {} chunks", u16::MAX - 1),
            });
        }
        let spare = self.spent.take().map(|mut buf| {
            buf.clear();
            buf
        });
        let spare = spare.unwrap_or_else(|| Vec::with_capacity(self.size));
        let chunk = std::mem::replace(&mut self.chunk, spare);
        let number = self.next;
        self.next += 1;
        if self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send((number, chunk)).is_ok())
        {
            return Ok(());
        }
        // Every sender stopped: theirs is the error to report.
        Err(self.join().err().unwrap_or_else(|| BackendError::Failed {
            location: self.location.clone(),
            action: "upload a blob".into(),
            message: "the upload stopped".into(),
        }))
    }

    /// Waits for every chunk to be sent; returns what each sender returned.
    pub(crate) fn join(&mut self) -> Result<Vec<R>, BackendError> {
        self.tx = None;
        let mut results = Vec::new();
        let mut failure = None;
        for h in self.senders.drain(..) {
            match h.join().expect("upload thread panicked") {
                Ok(r) => results.push(r),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }
}
