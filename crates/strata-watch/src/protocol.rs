//! The watcher's question and answer, over a Unix stream socket; one of each per connection.
//!
//! Question: `strata-watch-v2 since <instance in hex, or -> <generation>\n`.
//! Answer: `strata-watch-v2 <fresh|unknown> <instance> <generation> <dev>:<ino>:<mntns> <count>\n`
//! (the device and inode of the directory watched, the watcher's mount namespace), then for a fresh answer `count` records
//! `<d|f><path>\0` (`d`: an event about the path was about a directory).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use strata_key::{Changed, WatchAnswer, WatchToken};

const VERSION: &str = "strata-watch-v2";

/// How long a capture waits for the watcher before it walks instead.
const PATIENCE: Duration = Duration::from_secs(10);

/// Asks the watcher listening on `socket` what changed since `since`. `None` when there is no
/// watcher, or it does not answer in time or in its language: the capture then walks, as it
/// does without one.
pub fn ask(socket: &Path, since: Option<WatchToken>) -> Option<WatchAnswer> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    stream.set_write_timeout(Some(PATIENCE)).ok()?;
    stream.write_all(question(since).as_bytes()).ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    parse_answer(&reply)
}

pub(crate) fn question(since: Option<WatchToken>) -> String {
    match since {
        Some(t) => format!("{VERSION} since {} {}\n", hex(&t.instance), t.generation),
        None => format!("{VERSION} since - 0\n"),
    }
}

/// The token a question asks about; `Some(None)` for a question without one.
pub(crate) fn parse_question(line: &str) -> Option<Option<WatchToken>> {
    let mut words = line.trim_end_matches('\n').split(' ');
    if words.next()? != VERSION || words.next()? != "since" {
        return None;
    }
    let instance = words.next()?;
    let generation: u64 = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    if instance == "-" {
        return Some(None);
    }
    Some(Some(WatchToken {
        instance: unhex(instance)?,
        generation,
    }))
}

pub(crate) fn answer_bytes(answer: &WatchAnswer) -> Vec<u8> {
    let now = &answer.now;
    let (word, changed): (&str, &[Changed]) = match &answer.changed {
        Some(c) => ("fresh", c),
        None => ("unknown", &[]),
    };
    let mut out = format!(
        "{VERSION} {word} {} {} {}:{}:{} {}\n",
        hex(&now.instance),
        now.generation,
        answer.root.0,
        answer.root.1,
        answer.mount_ns,
        changed.len()
    )
    .into_bytes();
    for c in changed {
        out.push(if c.dir { b'd' } else { b'f' });
        out.extend_from_slice(&c.path);
        out.push(0);
    }
    out
}

pub(crate) fn parse_answer(bytes: &[u8]) -> Option<WatchAnswer> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut words = head.split(' ');
    if words.next()? != VERSION {
        return None;
    }
    let fresh = match words.next()? {
        "fresh" => true,
        "unknown" => false,
        _ => return None,
    };
    let now = WatchToken {
        instance: unhex(words.next()?)?,
        generation: words.next()?.parse().ok()?,
    };
    let mut ids = words.next()?.split(':');
    let root = (ids.next()?.parse().ok()?, ids.next()?.parse().ok()?);
    let mount_ns = ids.next()?.parse().ok()?;
    if ids.next().is_some() {
        return None;
    }
    let count: usize = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    let mut rest = &bytes[newline + 1..];
    let mut changed = Vec::with_capacity(count.min(rest.len() / 2));
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let (kind, path) = rest[..end].split_first()?;
        let dir = match kind {
            b'd' => true,
            b'f' => false,
            _ => return None,
        };
        changed.push(Changed {
            path: path.to_vec(),
            dir,
        });
        rest = &rest[end + 1..];
    }
    if !rest.is_empty() {
        return None;
    }
    Some(WatchAnswer {
        now,
        root,
        mount_ns,
        changed: fresh.then_some(changed),
    })
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = WatchToken> {
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(instance, generation)| WatchToken {
            instance,
            generation,
        })
    }

    proptest! {
        #[test]
        fn questions_and_answers_read_back(
            since in proptest::option::of(token()),
            now in token(),
            root in any::<(u64, u64)>(),
            mount_ns in any::<u64>(),
            changed in proptest::option::of(proptest::collection::vec(
                (proptest::collection::vec(1u8..=255, 1..40), any::<bool>()), 0..20)),
        ) {
            prop_assert_eq!(parse_question(&question(since)), Some(since));
            let answer = WatchAnswer {
                now,
                root,
                mount_ns,
                changed: changed.map(|c| c.into_iter().map(|(path, dir)| Changed { path, dir }).collect()),
            };
            prop_assert_eq!(parse_answer(&answer_bytes(&answer)), Some(answer));
        }

        #[test]
        fn any_bytes_are_an_answer_or_none_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_answer(&bytes);
            let _ = parse_question(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn a_cut_answer_is_no_answer() {
        let answer = WatchAnswer {
            now: WatchToken {
                instance: [7; 16],
                generation: 3,
            },
            root: (2049, 12),
            mount_ns: 4026531841,
            changed: Some(vec![Changed {
                path: b"src/a.rs".to_vec(),
                dir: false,
            }]),
        };
        let bytes = answer_bytes(&answer);
        for cut in 0..bytes.len() {
            assert_eq!(parse_answer(&bytes[..cut]), None, "cut at {cut}");
        }
    }
}
