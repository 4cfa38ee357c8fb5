//! A running task's output: read from the sandbox's pipe in large chunks, masked for secrets,
//! written whole to the task's log file, kept as a bounded tail for the failure summary, and
//! shown live as `TaskOutput` lines. Memory stays bounded whatever the task prints: the log is
//! a file, a line shown live is cut at [`MAX_LINE_BYTES`], and live lines wait in queues of at
//! most [`LIVE_BUDGET`] bytes together. When the display cannot keep up (a slow terminal, a flood of
//! tiny lines) the lines that do not fit are dropped from the live view — never from the log —
//! and a `TaskOutputSkipped` event says how much, so the task is never slowed by its display
//! (and the run waits for the display at most [`DRAIN_GRACE`] after a task's output ends).

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, MatchKind};
use strata_store::{LogWriter, StoreError, WrittenLog};

use crate::events::{Event, Reporter};

/// The longest line a `TaskOutput` event carries; the rest of a longer line is only in the log.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// Bytes of output waiting to be shown, all tasks together, beyond which live lines are
/// dropped: a burst of this much is shown whole however slow the display.
pub(crate) const LIVE_BUDGET: usize = 16 * 1024 * 1024;
/// How long the display may go on showing a task's output once the task's output has ended;
/// what is still queued then is dropped, so that a slow display holds up the run this long
/// at most.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How much lower the display thread's priority is than the run's.
const DISPLAY_NICE: i32 = 10;
/// Lines of log shown with a failure.
pub(crate) const TAIL_LINES: usize = 20;
/// The end of the log kept in memory for the failure summary.
const TAIL_BYTES: usize = 256 * 1024;
/// One read from the task's pipe.
const READ_BYTES: usize = 1024 * 1024;
/// The size asked for the task's pipe.
pub(crate) const PIPE_BYTES: usize = 1024 * 1024;

/// Masks secrets in a stream of bytes cut into arbitrary chunks: what could be the start of a
/// secret is held back until the next chunk shows whether it is one. Secrets are masked line by
/// line (a secret of several lines is masked line by line, as `expressions::mask` does), so no
/// match crosses a newline and everything up to the last newline is final at once.
pub(crate) struct StreamMask {
    finder: Option<AhoCorasick>,
    /// The longest secret part, less one: held back at the end of a chunk.
    keep: usize,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl StreamMask {
    pub(crate) fn new(secrets: &[String]) -> StreamMask {
        let parts: Vec<&str> = crate::expressions::secret_parts(secrets).collect();
        let keep = parts.iter().map(|p| p.len()).max().unwrap_or(1) - 1;
        let finder = (!parts.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&parts)
                .expect("secret patterns build")
        });
        StreamMask {
            finder,
            keep,
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Takes the next chunk; returns the masked bytes now final (possibly none).
    pub(crate) fn push<'a>(&'a mut self, chunk: &'a [u8]) -> &'a [u8] {
        let Some(finder) = &self.finder else {
            return chunk;
        };
        self.pending.extend_from_slice(chunk);
        let len = self.pending.len();
        let mut cut = len.saturating_sub(self.keep);
        if let Some(nl) = memchr::memrchr(b'\n', &self.pending) {
            cut = cut.max(nl + 1);
        }
        self.out.clear();
        let mut from = 0;
        for m in finder.find_iter(&self.pending[..]) {
            // A match starting before the cut is whole (the cut leaves `keep` bytes after it).
            if m.start() >= cut {
                break;
            }
            cut = cut.max(m.end());
            self.out.extend_from_slice(&self.pending[from..m.start()]);
            self.out.extend_from_slice(b"***");
            from = m.end();
        }
        self.out.extend_from_slice(&self.pending[from..cut]);
        self.pending.drain(..cut);
        &self.out
    }

    /// The end of the stream: whatever was held back, masked.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        match &self.finder {
            None => rest,
            Some(finder) => {
                finder.replace_all_bytes(&rest, &vec![&b"***"[..]; finder.patterns_len()])
            }
        }
    }
}

/// Splits bytes into lines for display, each cut at [`MAX_LINE_BYTES`] with a note of how much
/// was left out. Holds at most one cut line.
#[derive(Default)]
pub(crate) struct LineCutter {
    partial: Vec<u8>,
    /// Bytes of the current line beyond the cap.
    over: u64,
}

impl LineCutter {
    /// Calls `emit` with each line completed by `bytes`, until it returns false. Returns how
    /// many bytes were taken: all of them, unless `emit` stopped it (right after a line).
    pub(crate) fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(String) -> bool) -> usize {
        let mut rest = bytes;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            let go = if self.partial.is_empty() && self.over == 0 {
                emit(shown_line(line, 0))
            } else {
                self.take(line);
                let go = emit(shown_line(&self.partial, self.over));
                self.partial.clear();
                self.over = 0;
                go
            };
            rest = &rest[nl + 1..];
            if !go {
                return bytes.len() - rest.len();
            }
        }
        self.take(rest);
        bytes.len()
    }

    /// The last line, if the output did not end with a newline.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(String) -> bool) {
        if !self.partial.is_empty() || self.over > 0 {
            emit(shown_line(&self.partial, self.over));
        }
        self.partial.clear();
        self.over = 0;
    }

    /// The current line was cut short by dropped bytes: shows what there is of it, noting that
    /// the rest is only in the log.
    fn abandon(&mut self, emit: &mut impl FnMut(String) -> bool) {
        if !self.partial.is_empty() || self.over > 0 {
            let mut line = shown_line(&self.partial, 0);
            line.push_str(
                " … [the display fell behind here: the rest of this line is in the task's log]",
            );
            emit(line);
        }
        self.partial.clear();
        self.over = 0;
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES - self.partial.len();
        let n = room.min(bytes.len());
        self.partial.extend_from_slice(&bytes[..n]);
        self.over += (bytes.len() - n) as u64;
    }
}

/// A line as shown: without its `\r`, invalid UTF-8 replaced, cut at [`MAX_LINE_BYTES`] (on a
/// character boundary) with a note when `over` bytes, or more, were left out.
pub(crate) fn shown_line(line: &[u8], over: u64) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (line, over) = if line.len() > MAX_LINE_BYTES {
        (
            &line[..MAX_LINE_BYTES],
            over + (line.len() - MAX_LINE_BYTES) as u64,
        )
    } else {
        (line, over)
    };
    if over == 0 {
        return String::from_utf8_lossy(line).into_owned();
    }
    // A character cut in two at the cap is left out whole.
    let line = match std::str::from_utf8(line) {
        Err(e) if e.error_len().is_none() => &line[..e.valid_up_to()],
        _ => line,
    };
    let mut text = String::from_utf8_lossy(line).into_owned();
    text.push_str(&format!(
        " … [line cut at 64 KiB: {over} more bytes are in the task's log]"
    ));
    text
}

/// The end of the output, for the failure summary.
#[derive(Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
    /// Whether the kept bytes start in the middle of a line.
    cut: bool,
}

impl Tail {
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        // Of a large chunk only its end can be in the tail.
        if bytes.len() > TAIL_BYTES {
            let start = bytes.len() - TAIL_BYTES;
            self.cut = bytes[start - 1] != b'\n';
            self.bytes.clear();
            bytes = &bytes[start..];
        }
        self.bytes.extend_from_slice(bytes);
        if self.bytes.len() > 2 * TAIL_BYTES {
            let drop = self.bytes.len() - TAIL_BYTES;
            self.cut = self.bytes[drop - 1] != b'\n';
            self.bytes.drain(..drop);
        }
    }

    /// The last [`TAIL_LINES`] lines, each cut as a live line would be (a line whose start is
    /// no longer kept begins with `…`), without the lines that start with one of `prefixes`
    /// (the `[KEY] ` of the task's background processes: a daemon's shutdown log must not push
    /// the command's error out of a failure's summary), unless no other line is kept.
    pub(crate) fn lines_skipping(&self, prefixes: &[String]) -> Vec<String> {
        let text = self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes);
        if text.is_empty() {
            return Vec::new();
        }
        let all: Vec<(usize, &[u8])> = text.split(|b| *b == b'\n').enumerate().collect();
        let own: Vec<(usize, &[u8])> = all
            .iter()
            .filter(|(_, l)| !prefixes.iter().any(|p| l.starts_with(p.as_bytes())))
            .copied()
            .collect();
        let kept = if own.is_empty() { &all } else { &own };
        kept[kept.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|(i, l)| {
                let line = shown_line(l, 0);
                if *i == 0 && self.cut {
                    format!("…{line}")
                } else {
                    line
                }
            })
            .collect()
    }
}

/// Bytes sent to the display threads of this process's tasks and not yet shown (a process
/// runs one run).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What the live display is sent.
enum Live {
    Bytes(Vec<u8>),
    /// Bytes dropped because the display fell behind.
    Skipped(u64),
}

/// What reading a task's output left: its log, and the tail for a failure.
pub(crate) struct Collected {
    pub(crate) log: Result<WrittenLog, StoreError>,
    pub(crate) tail: Tail,
}

/// Reads `pipe` to its end: the masked output goes to `log` and to the live display through
/// `reporter`, from a thread of `scope` so that a slow display never slows the reading.
pub(crate) fn collect<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    mut pipe: impl Read,
    mut log: LogWriter,
    secrets: &[String],
    task: &'env str,
    reporter: &'env dyn Reporter,
) -> Collected {
    let in_flight = &IN_FLIGHT;
    let (tx, rx) = mpsc::channel::<Live>();
    let ended = Arc::new(OnceLock::new());
    let display = {
        let ended = Arc::clone(&ended);
        scope.spawn(move || show(rx, in_flight, &ended, task, reporter))
    };
    let mut mask = StreamMask::new(secrets);
    let mut tail = Tail::default();
    let mut skipped = 0u64;
    let mut failed: Option<StoreError> = None;
    let mut buf = vec![0u8; READ_BYTES];
    let mut pass = |bytes: &[u8], skipped: &mut u64, failed: &mut Option<StoreError>| {
        if bytes.is_empty() {
            return;
        }
        if failed.is_none()
            && let Err(e) = log.write_all(bytes)
        {
            *failed = Some(e);
        }
        tail.push(bytes);
        if in_flight.load(Ordering::Acquire) + bytes.len() > LIVE_BUDGET {
            *skipped += bytes.len() as u64;
            return;
        }
        if *skipped > 0 {
            let _ = tx.send(Live::Skipped(std::mem::take(skipped)));
        }
        in_flight.fetch_add(bytes.len(), Ordering::AcqRel);
        let _ = tx.send(Live::Bytes(bytes.to_vec()));
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let masked = mask.push(&buf[..n]);
        pass(masked, &mut skipped, &mut failed);
    }
    let rest = mask.finish();
    pass(&rest, &mut skipped, &mut failed);
    if skipped > 0 {
        let _ = tx.send(Live::Skipped(skipped));
    }
    let _ = ended.set(Instant::now());
    drop(tx);
    let _ = display.join();
    Collected {
        log: match failed {
            Some(e) => Err(e),
            None => Ok(log.finish()),
        },
        tail,
    }
}

/// The live display's side: lines to events, and a note where bytes were dropped — because
/// the queue was full, or because the output ended more than [`DRAIN_GRACE`] ago.
fn show(
    rx: mpsc::Receiver<Live>,
    in_flight: &AtomicUsize,
    ended: &OnceLock<Instant>,
    task: &str,
    reporter: &dyn Reporter,
) {
    // The display takes only the CPU the tasks leave: on a busy machine it falls behind and
    // drops lines rather than slow them down (Linux applies a priority set for a thread id to
    // that thread alone).
    let me = rustix::thread::gettid();
    if let Ok(nice) = rustix::process::getpriority_process(Some(me)) {
        let _ = rustix::process::setpriority_process(Some(me), (nice + DISPLAY_NICE).min(19));
    }
    let too_late = || ended.get().is_some_and(|at| at.elapsed() > DRAIN_GRACE);
    let mut lines = LineCutter::default();
    let mut shown = 0u64;
    // Goes on while it is not too late (the clock is read every 64 lines).
    let mut emit = |line: String| {
        reporter.event(&Event::TaskOutput {
            task: task.to_string(),
            line,
        });
        shown += 1;
        !(shown.is_multiple_of(64) && too_late())
    };
    let skipped = |bytes: u64| {
        reporter.event(&Event::TaskOutputSkipped {
            task: task.to_string(),
            bytes,
        })
    };
    // After a drop, the rest of the cut line is not shown either.
    let mut resync = false;
    // Bytes left unshown because the output ended too long ago.
    let mut late = 0u64;
    for live in rx {
        match live {
            Live::Bytes(bytes) => {
                if late > 0 || too_late() {
                    late += bytes.len() as u64;
                } else {
                    let mut from = &bytes[..];
                    if resync {
                        match memchr::memchr(b'\n', from) {
                            Some(nl) => {
                                from = &from[nl + 1..];
                                resync = false;
                            }
                            None => from = &[],
                        }
                    }
                    let taken = lines.push(from, &mut emit);
                    late += (from.len() - taken) as u64;
                }
                in_flight.fetch_sub(bytes.len(), Ordering::AcqRel);
            }
            Live::Skipped(bytes) if late > 0 || too_late() => late += bytes,
            Live::Skipped(bytes) => {
                lines.abandon(&mut emit);
                resync = true;
                skipped(bytes);
            }
        }
    }
    if late > 0 {
        lines.abandon(&mut emit);
        skipped(late);
    } else if !resync {
        lines.finish(&mut emit);
    }
}

/// For tests: the lines `LineCutter` makes of `chunks`.
#[cfg(test)]
fn cut_lines(chunks: &[&[u8]]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cutter = LineCutter::default();
    for c in chunks {
        cutter.push(c, &mut |l| {
            out.push(l);
            true
        });
    }
    cutter.finish(&mut |l| {
        out.push(l);
        true
    });
    out
}

/// Kept for tests of the tail: the lines of a whole output.
#[cfg(test)]
fn tail_of(chunks: &[&[u8]]) -> Vec<String> {
    let mut tail = Tail::default();
    for c in chunks {
        tail.push(c);
    }
    tail.lines_skipping(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_in_chunks(secrets: &[&str], input: &[u8], chunk: usize) -> Vec<u8> {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let mut mask = StreamMask::new(&secrets);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            out.extend_from_slice(mask.push(c));
        }
        out.extend(mask.finish());
        out
    }

    #[test]
    fn a_secret_straddling_any_chunk_boundary_is_masked() {
        let input = b"start token=hunter2222 and again hunter2222\nhunter2222 tail hunter22";
        let expected = b"start token=*** and again ***\n*** tail hunter22".to_vec();
        for chunk in 1..input.len() + 1 {
            assert_eq!(
                masked_in_chunks(&["hunter2222"], input, chunk),
                expected,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn the_longest_secret_wins_and_short_ones_are_left_alone() {
        let input = b"abcdef abc ab xy\n";
        for chunk in 1..input.len() + 1 {
            assert_eq!(
                masked_in_chunks(&["abc", "abcdef", "ab"], input, chunk),
                b"*** *** ab xy\n".to_vec(),
                "chunks of {chunk}"
            );
        }
        // A secret of several lines is masked line by line.
        assert_eq!(
            masked_in_chunks(&["line-one\nline-two"], b"x line-two y\nline-one\n", 3),
            b"x *** y\n***\n".to_vec()
        );
    }

    #[test]
    fn without_secrets_nothing_is_held_back() {
        let mut mask = StreamMask::new(&[]);
        assert_eq!(mask.push(b"partial"), b"partial");
        assert!(mask.finish().is_empty());
        // With a secret, a line's end is final at once and only a possible prefix waits.
        let mut mask = StreamMask::new(&["hunter2222".to_string()]);
        assert_eq!(mask.push(b"done\nhunt"), b"done\n");
        assert_eq!(mask.push(b"ing\n"), b"hunting\n");
    }

    #[test]
    fn lines_are_cut_at_64_kib_with_a_note() {
        let long = vec![b'x'; MAX_LINE_BYTES + 1000];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\r\nlast");
        for chunk in [1000, 4096, MAX_LINE_BYTES, input.len()] {
            let pieces: Vec<&[u8]> = input.chunks(chunk).collect();
            let lines = cut_lines(&pieces);
            assert_eq!(lines.len(), 3, "chunks of {chunk}");
            assert!(lines[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
            assert!(
                lines[0].ends_with("[line cut at 64 KiB: 1000 more bytes are in the task's log]"),
                "{}",
                &lines[0][MAX_LINE_BYTES..]
            );
            assert_eq!(lines[1], "short");
            assert_eq!(lines[2], "last");
        }
        // A character cut in two at the cap is left out whole, not shown broken.
        let mut wide = vec![b'a'; MAX_LINE_BYTES - 1];
        wide.extend_from_slice("é and more".as_bytes());
        let lines = cut_lines(&[&wide]);
        assert!(lines[0].starts_with(&"a".repeat(MAX_LINE_BYTES - 1)));
        assert!(!lines[0].contains('\u{fffd}'), "no replacement character");
    }

    #[test]
    fn the_tail_keeps_the_last_lines_in_bounded_memory() {
        let mut input = Vec::new();
        for i in 0..100_000 {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let pieces: Vec<&[u8]> = input.chunks(7777).collect();
        let lines = tail_of(&pieces);
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 99980");
        assert_eq!(lines[TAIL_LINES - 1], "line 99999");
        // One huge last line: kept only in part, marked as such.
        let huge = vec![b'y'; 3 * TAIL_BYTES];
        let lines = tail_of(&[b"before\n", &huge]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("…yyy"));
        assert!(lines[0].contains("line cut at 64 KiB"));
    }

    #[test]
    fn a_failure_s_tail_leaves_out_background_lines_unless_there_is_nothing_else() {
        let mut tail = Tail::default();
        tail.push(b"[dockerd] starting\nbuilding\nerror: no such command\n");
        for i in 0..30 {
            tail.push(format!("[dockerd] shutting down {i}\n").as_bytes());
        }
        let prefixes = ["[dockerd] ".to_string()];
        assert_eq!(
            tail.lines_skipping(&prefixes),
            ["building", "error: no such command"]
        );
        assert_eq!(tail.lines_skipping(&[]).len(), TAIL_LINES);
        let mut only = Tail::default();
        only.push(b"[dockerd] failed to start\n");
        assert_eq!(
            only.lines_skipping(&prefixes),
            ["[dockerd] failed to start"]
        );
    }

    /// A reporter as slow as a bad terminal: 1 ms per event.
    #[derive(Default)]
    struct SlowDisplay {
        lines: std::sync::Mutex<Vec<String>>,
        skipped: std::sync::Mutex<u64>,
    }

    impl Reporter for SlowDisplay {
        fn event(&self, event: &Event) {
            std::thread::sleep(Duration::from_millis(1));
            match event {
                Event::TaskOutput { line, .. } => self.lines.lock().unwrap().push(line.clone()),
                Event::TaskOutputSkipped { bytes, .. } => *self.skipped.lock().unwrap() += bytes,
                _ => {}
            }
        }
    }

    #[test]
    fn a_slow_display_neither_slows_the_reading_nor_loses_the_log() {
        let mut output = Vec::new();
        for i in 0..100_000 {
            output.extend_from_slice(format!("line {i:06}\n").as_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let log = LogWriter::create(&dir.path().join("log")).unwrap();
        let display = SlowDisplay::default();
        let start = Instant::now();
        let collected = std::thread::scope(|s| collect(s, &output[..], log, &[], "t", &display));
        // Shown at 1 ms a line, the output would take 100 s; the display gets half a second
        // once the output has ended.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let written = collected.log.unwrap();
        assert_eq!(written.len(), output.len() as u64);
        assert_eq!(std::fs::read(written.path()).unwrap(), output);
        let lines = display.lines.into_inner().unwrap();
        let skipped = display.skipped.into_inner().unwrap();
        assert!(
            !lines.is_empty() && lines.len() < 100_000,
            "{}",
            lines.len()
        );
        assert_eq!(lines[0], "line 000000");
        // What was shown and what was reported skipped account for the whole output (a line
        // cut by the drop is shown in part, with a note).
        let shown: u64 = lines
            .iter()
            .filter(|l| !l.contains("display fell behind"))
            .map(|l| l.len() as u64 + 1)
            .sum();
        assert!(shown + skipped <= output.len() as u64);
        assert!(
            shown + skipped + 12 >= output.len() as u64,
            "{shown} + {skipped}"
        );
        assert_eq!(
            collected.tail.lines_skipping(&[]).last().unwrap(),
            "line 099999"
        );
    }
}
