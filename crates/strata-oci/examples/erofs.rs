//! Writes a directory as an erofs image and times it: `erofs DIR IMAGE`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (dir, image) = (args.next().expect("DIR"), args.next().expect("IMAGE"));
    let start = std::time::Instant::now();
    let out = std::fs::File::create_new(&image).expect("create IMAGE");
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    strata_oci::erofs::write_image_from_dir(std::path::Path::new(&dir), out).expect("write");
    eprintln!("{image} in {:?}", start.elapsed());
}
