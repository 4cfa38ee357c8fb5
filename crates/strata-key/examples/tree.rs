//! Times a layer's tree digest: `tree DIR`.
fn main() {
    let dir = std::env::args().nth(1).expect("DIR");
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let d = strata_key::tree_digest(std::path::Path::new(&dir)).unwrap();
        eprintln!("{} in {:?}", d.short(), t.elapsed());
    }
}
