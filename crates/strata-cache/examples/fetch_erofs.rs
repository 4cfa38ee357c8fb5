//! Times a cold restore into an erofs image instead of a directory: the layer blob read from an
//! S3 cache, hashed, decompressed and converted to an image file in one pass, the image mounted,
//! and the layer's tree digest made from the entries the conversion listed (`WALK=1` also walks
//! the mount, to compare):
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
    // The layer's tree digest from the entries the conversion listed (no walk of the mount).
    let listed = converted.layer_digest();
    let from_entries = start.elapsed();
    eprintln!(
        "{} bytes: image written {written:?}, mounted {mounted:?}, tree digest {} from the \
         entries at {from_entries:?}",
        converted.size,
        listed.short(),
    );
    // For comparison (`WALK=1`): walking the mount instead, with the content digests known.
    if std::env::var_os("WALK").is_some() {
        let root = std::path::Path::new(&mountpoint);
        let known = converted
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                strata_oci::erofs::NodeKind::File { content, .. } => Some((
                    root.join(String::from_utf8_lossy(&e.rel[1..]).as_ref()),
                    content,
                )),
                _ => None,
            })
            .collect();
        let t = std::time::Instant::now();
        let walked = strata_key::tree_digest_known(root, &known).expect("walk the mount");
        assert_eq!(listed, walked, "the listed entries' digest is the mount's");
        eprintln!("    walking the mount instead: {:?}", t.elapsed());
    }
}
