//! Times reading a blob from an S3 cache and discarding it: `fetch ENDPOINT BUCKET PREFIX DIGEST`.
fn main() {
    let mut a = std::env::args().skip(1);
    let (endpoint, bucket, prefix, digest) = (
        a.next().expect("ENDPOINT"),
        a.next().expect("BUCKET"),
        a.next().expect("PREFIX"),
        a.next().expect("DIGEST"),
    );
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
    let mut blob = b.get_blob(&digest).expect("get").expect("present");
    let n = std::io::copy(&mut blob, &mut std::io::sink()).expect("read");
    eprintln!("{n} bytes in {:?}", start.elapsed());
}
