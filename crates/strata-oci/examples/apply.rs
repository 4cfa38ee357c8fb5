//! Applies a zstd OCI layer archive to a new directory and times it: `apply ARCHIVE DIR`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (archive, dir) = (args.next().expect("ARCHIVE"), args.next().expect("DIR"));
    let start = std::time::Instant::now();
    let file = std::fs::File::open(&archive).expect("open ARCHIVE");
    std::fs::create_dir(&dir).expect("create DIR");
    let applied = strata_oci::apply_layer(
        std::io::BufReader::with_capacity(1 << 20, file),
        strata_oci::Compression::Zstd,
        std::path::Path::new(&dir),
        strata_oci::Expected::default(),
    )
    .expect("apply");
    eprintln!("{} bytes in {:?}", applied.size, start.elapsed());
}
