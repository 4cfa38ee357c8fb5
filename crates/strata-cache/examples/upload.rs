//! Uploads a file as a blob to an S3 endpoint and times it: `upload ENDPOINT BUCKET FILE`.
use strata_cache::CacheBackend;
fn main() {
    let mut a = std::env::args().skip(1);
    let (endpoint, bucket, file) = (a.next().unwrap(), a.next().unwrap(), a.next().unwrap());
    let b = strata_cache::S3Backend::new(
        &endpoint,
        &bucket,
        "up",
        "us-east-1",
        true,
        strata_cache::CredentialChain::new(strata_cache::Environment::of_process()),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let bytes = std::fs::read(&file).unwrap();
    let digest = strata_oci::OciDigest::of(&bytes);
    eprintln!("hash {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut f = std::fs::File::open(&file).unwrap();
    b.put_blob(&digest, bytes.len() as u64, &mut f).unwrap();
    eprintln!("upload {:?}", t.elapsed());
}
