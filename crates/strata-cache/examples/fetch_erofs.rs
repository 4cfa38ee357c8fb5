//! Times a cold restore into an erofs image instead of a directory: the layer blob read from an
//! S3 cache, hashed, decompressed and converted to an image file in one pass, the image mounted,
//! and the layer's tree digest taken over the mount (with the content digests taken during the
//! conversion, so file contents are not read again):
//! `fetch_erofs ENDPOINT BUCKET PREFIX DIGEST IMAGE MOUNTPOINT` (as root).
fn main() {
    let mut a = std::env::args().skip(1);
    let mut next = |what: &str| a.next().unwrap_or_else(|| panic!("{what}"));
    let (endpoint, bucket, prefix, digest) = (
        next("ENDPOINT"),
        next("BUCKET"),
        next("PREFIX"),
        next("DIGEST"),
    );
    let (image, mountpoint) = (next("IMAGE"), next("MOUNTPOINT"));
    use strata_cache::CacheBackend;
    let b = strata_cache::S3Backend::new(
        &endpoint,
        &bucket,
        &prefix,
        "us-east-1",
        true,
        strata_cache::CredentialChain::new(strata_cache::Environment::of_process()),
    )
    .expect("backend");
    let digest = strata_oci::OciDigest::parse(&digest).expect("DIGEST");
    let start = std::time::Instant::now();
    let blob = b.get_blob(&digest).expect("get").expect("present");
    let out = std::fs::File::create_new(&image).expect("create IMAGE");
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let expected = strata_oci::Expected {
        digest: Some(digest),
        diff_id: None,
    };
    let (converted, out) =
        strata_oci::erofs::convert_layer(blob, strata_oci::Compression::Zstd, out, expected)
            .expect("convert");
    drop(out);
    let written = start.elapsed();
    // mount(2) from the file itself: the kernel reads the image through the page cache of
    // the file (no loop device, which mount(8) would set up).
    rustix::mount::mount(
        image.as_str(),
        mountpoint.as_str(),
        "erofs",
        rustix::mount::MountFlags::RDONLY,
        None,
    )
    .expect("mount -t erofs");
    let mounted = start.elapsed();
    let root = std::path::Path::new(&mountpoint);
    let known = converted
        .contents
        .iter()
        .map(|(rel, digest)| (root.join(rel), *digest))
        .collect();
    let tree = strata_key::tree_digest_known(root, &known);
    eprintln!(
        "{} bytes: image written {written:?}, mounted {mounted:?}, tree digest {} at {:?}",
        converted.size,
        tree.map(|d| d.short().to_string())
            .unwrap_or_else(|e| e.to_string()),
        start.elapsed()
    );
}
