//! Archives a directory as a zstd OCI layer and times it: `archive DIR OUT`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (dir, out) = (args.next().expect("DIR"), args.next().expect("OUT"));
    let start = std::time::Instant::now();
    let file = std::fs::File::create(&out).expect("create OUT");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let written = strata_oci::write_layer(
        std::path::Path::new(&dir),
        std::io::BufWriter::with_capacity(1 << 20, file),
        strata_oci::Compression::Zstd,
        threads,
    )
    .expect("archive");
    eprintln!(
        "{} bytes in {:?} ({})",
        written.size,
        start.elapsed(),
        written.digest
    );
}
