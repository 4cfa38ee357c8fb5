//! A blob being produced, cut into fixed-size chunks that background threads send, so that
//! producing and uploading overlap (S3 multipart parts, registry upload chunks).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::BackendError;

/// A chunk and its number (from 1, in the order written).
pub(crate) type Chunk = (u16, Vec<u8>);

/// Where sender threads take chunks from, and give their buffers back once sent: a new 8 MiB
/// buffer per chunk is memory never touched, whose every page faults and is zeroed by the
/// kernel; a few buffers used over and over pay that once.
#[derive(Clone)]
pub(crate) struct Chunks {
    queue: Arc<Mutex<Receiver<Chunk>>>,
    spent: Spent,
}

type Spent = Arc<Mutex<Vec<Vec<u8>>>>;

impl Chunks {
    /// The next chunk to send; `None` once the blob is complete (or abandoned).
    pub(crate) fn next(&self) -> Option<Chunk> {
        self.queue.lock().expect("chunk lock").recv().ok()
    }

    /// A sent chunk's buffer, for a later chunk.
    pub(crate) fn spent(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spent = self.spent.lock().expect("spent chunks lock");
        if spent.len() < 4 {
            spent.push(buf);
        }
    }
}

pub(crate) struct ChunkedUpload<R> {
    size: usize,
    location: String,
    chunk: Vec<u8>,
    next: u16,
    tx: Option<SyncSender<Chunk>>,
    spent: Spent,
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
            spent: Spent::default(),
        };
        ChunkedUpload {
            size,
            location,
            chunk: Vec::with_capacity(size),
            next: 1,
            tx: Some(tx),
            spent: Arc::clone(&chunks.spent),
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
        let spare = self.spent.lock().expect("spent chunks lock").pop();
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
