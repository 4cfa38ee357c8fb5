//! Blobs streamed while they are produced. A layer archive's name is its digest, known only once
//! the last byte is written, and S3 has no rename; so a streamed blob goes up as numbered chunk
//! objects while it is built (each a plain PUT, several in flight), and a small chunk list
//! written under its digest at the end publishes it. No server-side assembly is needed (a
//! multipart upload's completion rewrites the whole object on some servers), the size is not
//! capped by S3's single-PUT limit, and a reader can fetch several chunks at once. A blob that
//! fits in one chunk is stored whole, in one request.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use strata_oci::OciDigest;

use super::backend::Names;
use super::client::Client;
use crate::backend::{BackendError, BlobReader, BlobUpload};
use crate::chunks::{BufferPool, ChunkedUpload, Chunks};

/// Chunks are this size but the last. Like the AWS CLI's default part size: large enough that
/// per-request costs vanish, small enough to keep several in flight in little memory.
const CHUNK_SIZE: usize = 8 << 20;
/// How many chunks are sent, or fetched, at once: one connection rarely fills the pipe.
const IN_FLIGHT: usize = 4;
/// The largest chunk a reader accepts (it holds whole chunks in memory).
const MAX_CHUNK: u64 = 64 << 20;

/// `blobs/sha256/<hex>.chunks`: a streamed blob's chunks, in order.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ChunkList {
    size: u64,
    chunks: Vec<ChunkRef>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ChunkRef {
    object: String,
    size: u64,
}

impl ChunkList {
    /// Parses a chunk list; `None` for one that is malformed, names objects outside `dir`, or
    /// does not add up.
    pub fn parse(bytes: &[u8], dir: &str) -> Option<ChunkList> {
        let list: ChunkList = serde_json::from_slice(bytes).ok()?;
        let sane = list
            .chunks
            .iter()
            .all(|c| c.object.starts_with(dir) && c.size <= MAX_CHUNK)
            && list.chunks.iter().map(|c| c.size).sum::<u64>() == list.size;
        sane.then_some(list)
    }

    /// The chunk objects it names.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.chunks.iter().map(|c| c.object.as_str())
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's content: chunks fetched `IN_FLIGHT` at a time, read in order.
    pub fn reader(self, client: Client) -> BlobReader {
        let chunks = Arc::new(self.chunks);
        let (tickets, queue) = sync_channel::<Ticket>(IN_FLIGHT);
        let queue = Arc::new(Mutex::new(queue));
        // Buffers of chunks already read, to fetch the next ones into.
        let pool = BufferPool::new(IN_FLIGHT + 1);
        for _ in 0..IN_FLIGHT.min(chunks.len()) {
            let (client, chunks, queue) = (client.clone(), Arc::clone(&chunks), Arc::clone(&queue));
            let pool = pool.clone();
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().expect("ticket lock").recv();
                    let Ok((index, reply)) = next else { return };
                    let _ = reply.send(fetch(&client, &chunks[index], &pool));
                }
            });
        }
        let mut reader = ChunkReader {
            count: chunks.len(),
            issued: 0,
            tickets: Some(tickets),
            pending: VecDeque::new(),
            current: Chunk::default(),
            pos: 0,
            pool,
        };
        for _ in 0..IN_FLIGHT {
            reader.issue();
        }
        Box::new(Locked(Mutex::new(reader)))
    }
}

/// A chunk to fetch, and where its content goes.
type Ticket = (usize, SyncSender<io::Result<Chunk>>);

/// A chunk's bytes: the first `len` of `buf`.
#[derive(Default)]
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// A whole chunk, tried again when the transfer breaks off (the request itself is retried by
/// the client).
fn fetch(client: &Client, chunk: &ChunkRef, pool: &BufferPool) -> io::Result<Chunk> {
    let missing = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("chunk {} is missing", chunk.object),
        )
    };
    // A buffer given back keeps its length: the bytes up to it are initialized.
    let mut buf = pool.take().unwrap_or_default();
    let fetched = strata_oci::retry::with_retries(
        || {
            let resp = client
                .get(&chunk.object, "read a blob chunk")
                .map_err(io::Error::other)?
                .ok_or_else(missing)?;
            // One byte more than the chunk's size, to see a chunk that is too long. Initialized
            // once per buffer (a reader without `read_buf` would have `read_to_end` zero the
            // spare capacity on every use).
            let want = chunk.size as usize + 1;
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let mut body = resp.into_reader();
            let mut len = 0;
            while len < want {
                match body.read(&mut buf[len..want]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if len as u64 != chunk.size {
                // Short: the transfer broke off (try again); long: the chunk is not what its
                // list says (final).
                let kind = if (len as u64) < chunk.size {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::InvalidData
                };
                return Err(io::Error::new(
                    kind,
                    format!(
                        "chunk {} has {}{} bytes, its list says {}",
                        chunk.object,
                        if len == want { "more than " } else { "" },
                        if len == want { len - 1 } else { len },
                        chunk.size
                    ),
                ));
            }
            Ok(len)
        },
        |e| {
            !matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData | io::ErrorKind::Other
            )
        },
    );
    match fetched {
        Ok(len) => Ok(Chunk { buf, len }),
        Err(e) => {
            pool.give(buf);
            Err(e)
        }
    }
}

struct ChunkReader {
    count: usize,
    issued: usize,
    tickets: Option<SyncSender<Ticket>>,
    /// Replies for the chunks asked for, in order.
    pending: VecDeque<Receiver<io::Result<Chunk>>>,
    current: Chunk,
    pos: usize,
    pool: BufferPool,
}

impl ChunkReader {
    fn issue(&mut self) {
        if self.issued == self.count {
            self.tickets = None;
            return;
        }
        let (reply, rx) = sync_channel(1);
        if let Some(tickets) = &self.tickets {
            // The fetchers live as long as the ticket queue; a send cannot fail while we hold it.
            let _ = tickets.send((self.issued, reply));
        }
        self.pending.push_back(rx);
        self.issued += 1;
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len {
            let Some(next) = self.pending.pop_front() else {
                return Ok(0);
            };
            let next = next
                .recv()
                .map_err(|_| io::Error::other("a chunk fetcher stopped"))??;
            self.pool
                .give(std::mem::replace(&mut self.current, next).buf);
            self.pos = 0;
            self.issue();
        }
        let n = buf.len().min(self.current.len - self.pos);
        buf[..n].copy_from_slice(&self.current.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader shareable between threads (as `BlobReader` must be) though its channels are not;
/// only ever locked by the one thread reading it.
struct Locked<R>(Mutex<R>);

impl<R: Read> Read for Locked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.get_mut().expect("reader lock").read(buf)
    }
}

/// A blob being streamed up: full chunks go to sender threads as they fill.
pub(super) struct StreamedBlob {
    client: Client,
    names: Names,
    /// `<prefix>/chunks/<upload>/`: this upload's chunk objects are `<dir><n>`.
    dir: String,
    /// Each sender returns the (number, size) of the chunks it stored.
    chunks: ChunkedUpload<Vec<(u16, u64)>>,
    published: bool,
}

impl StreamedBlob {
    pub fn start(client: Client, names: Names) -> StreamedBlob {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = names.chunks_dir(&format!(
            "{nanos:x}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let chunks = ChunkedUpload::start(
            client.location.clone(),
            CHUNK_SIZE,
            IN_FLIGHT,
            |queue: Chunks| {
                let (client, dir) = (client.clone(), dir.clone());
                std::thread::spawn(move || {
                    let mut stored = Vec::new();
                    loop {
                        let Some((number, bytes)) = queue.next() else {
                            return Ok(stored);
                        };
                        let size = bytes.len() as u64;
                        let action = format!("upload chunk {number}");
                        client.put_bytes(&format!("{dir}{number}"), &bytes, &action)?;
                        stored.push((number, size));
                        queue.spent(bytes);
                    }
                })
            },
        );
        StreamedBlob {
            client,
            names,
            dir,
            chunks,
            published: false,
        }
    }
}

impl BlobUpload for StreamedBlob {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.chunks.write_all(bytes)
    }

    fn finish(mut self: Box<Self>, digest: &OciDigest, size: u64) -> Result<(), BackendError> {
        if let Some(whole) = self.chunks.take_whole() {
            self.chunks.join()?;
            let object = self.names.blob(digest);
            debug_assert_eq!(whole.len() as u64, size);
            self.client.put_bytes(&object, &whole, "write a blob")?;
            self.published = true;
            return Ok(());
        }
        self.chunks.flush(false)?;
        let mut stored: Vec<(u16, u64)> = self.chunks.join()?.into_iter().flatten().collect();
        stored.sort();
        let complete = stored
            .iter()
            .enumerate()
            .all(|(i, (n, _))| *n as usize == i + 1)
            && stored.iter().map(|(_, s)| s).sum::<u64>() == size;
        if !complete {
            return Err(BackendError::Failed {
                location: self.client.location.clone(),
                action: "upload a blob".into(),
                message: format!(
                    "{} chunks stored do not add up to {size} bytes",
                    stored.len()
                ),
            });
        }
        let list = ChunkList {
            size,
            chunks: stored
                .iter()
                .map(|(n, size)| ChunkRef {
                    object: format!("{}{n}", self.dir),
                    size: *size,
                })
                .collect(),
        };
        let url = self.client.put_url(&self.names.chunk_list(digest))?;
        let body = serde_json::to_vec(&list).expect("chunk lists serialize");
        match self
            .client
            .agent
            .put(&url)
            .set("If-None-Match", "*")
            .set("Content-Type", "application/json")
            .send_bytes(&body)
        {
            Ok(_) => {
                self.published = true;
                Ok(())
            }
            // Another machine published the same blob first; ours is surplus (dropping it
            // deletes its chunks).
            Err(ureq::Error::Status(412, _)) => Ok(()),
            Err(e) => Err(self.client.error("publish a blob", e)),
        }
    }
}

impl Drop for StreamedBlob {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // Unfinished, failed or surplus: take back the chunks sent so far.
        let _ = self.chunks.join();
        for n in 1..=self.chunks.sent() {
            self.client.delete(&format!("{}{n}", self.dir));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(chunks: &[(&str, u64)], size: u64) -> Vec<u8> {
        serde_json::to_vec(&ChunkList {
            size,
            chunks: chunks
                .iter()
                .map(|(o, s)| ChunkRef {
                    object: o.to_string(),
                    size: *s,
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_chunk_list_must_add_up_and_stay_in_its_directory() {
        let dir = "p/chunks/";
        let good = list(&[("p/chunks/u/1", 10), ("p/chunks/u/2", 5)], 15);
        assert_eq!(ChunkList::parse(&good, dir).unwrap().chunks.len(), 2);
        let short = list(&[("p/chunks/u/1", 10)], 15);
        assert!(ChunkList::parse(&short, dir).is_none());
        let elsewhere = list(&[("p/entries/k.json", 10)], 10);
        assert!(ChunkList::parse(&elsewhere, dir).is_none());
        let huge = list(&[("p/chunks/u/1", MAX_CHUNK + 1)], MAX_CHUNK + 1);
        assert!(ChunkList::parse(&huge, dir).is_none());
        assert!(ChunkList::parse(b"{\"size\": 1", dir).is_none());
    }
}
