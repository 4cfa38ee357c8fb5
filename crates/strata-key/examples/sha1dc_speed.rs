//! Throughput of the hashes a workspace file's id could use, on buffers in memory (one core):
//! `sha1dc_speed [SECONDS_PER_ROW]`. Collision-detecting SHA-1 as `sha1-checked` computes it,
//! as strata's `FileId` computes it now, plain SHA-1 (SHA-NI where the CPU has it), and BLAKE3,
//! on 4 KiB, 64 KiB and 16 MiB inputs. Prints MB/s of CPU time (this thread's user+system),
//! so that other load on the machine does not count.
use std::path::Path;
use std::time::Duration;

use sha1::Digest;

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS_PER_ROW"))
        .unwrap_or(1.0);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..16 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    type Hash = fn(&[u8]);
    let hashes: [(&str, Hash); 4] = [
        ("sha1-checked", |b| {
            let mut h = sha1_checked::Sha1::builder().safe_hash(false).build();
            sha1_checked::Digest::update(&mut h, b);
            std::hint::black_box(h.try_finalize());
        }),
        ("strata FileId (sha1dc)", |b| {
            std::hint::black_box(strata_key::FileId::of_bytes(b, Path::new("x")).unwrap());
        }),
        ("sha1 (no detection)", |b| {
            std::hint::black_box(sha1::Sha1::digest(b));
        }),
        ("blake3", |b| {
            std::hint::black_box(blake3::hash(b));
        }),
    ];
    for size in [4 << 10, 64 << 10, 16 << 20] {
        for (name, hash) in hashes {
            let chunks: Vec<&[u8]> = data.chunks_exact(size).collect();
            let start = thread_cpu();
            let mut bytes = 0usize;
            while (thread_cpu() - start).as_secs_f64() < seconds {
                for c in &chunks {
                    hash(c);
                    bytes += c.len();
                }
            }
            let cpu = (thread_cpu() - start).as_secs_f64();
            println!(
                "{:>8} {name:<24} {:>6.0} MB/s",
                format!("{} KiB", size >> 10),
                bytes as f64 / cpu / 1e6
            );
        }
    }
}
