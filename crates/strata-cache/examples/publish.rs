//! Times archiving a directory and sending it to S3, two ways: to a file then one PUT, or
//! streamed as a multipart upload while compressing. `publish DIR ENDPOINT BUCKET`.
use std::io::Write;
use strata_cache::CacheBackend;

fn main() {
    let mut a = std::env::args().skip(1);
    let (dir, endpoint, bucket) = (a.next().unwrap(), a.next().unwrap(), a.next().unwrap());
    let dir = std::path::PathBuf::from(dir);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    for round in 0..3 {
        let prefix = format!("publish/{}-{round}", std::process::id());
        let b = strata_cache::S3Backend::new(
            &endpoint,
            &bucket,
            &prefix,
            "us-east-1",
            true,
            strata_cache::CredentialChain::new(strata_cache::Environment::of_process()),
        )
        .unwrap();
        // File, then one PUT.
        let t = std::time::Instant::now();
        let path = std::env::temp_dir().join(format!("publish-{}.tar.zst", std::process::id()));
        let file =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let w =
            strata_oci::write_layer(&dir, file, strata_oci::Compression::Zstd, threads).unwrap();
        let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
        b.put_own_blob(&w.digest, w.size, &mut f).unwrap();
        std::fs::remove_file(&path).unwrap();
        let file_then_put = t.elapsed();
        // Streamed.
        let b = strata_cache::S3Backend::new(
            &endpoint,
            &bucket,
            &format!("{prefix}-s"),
            "us-east-1",
            true,
            strata_cache::CredentialChain::new(strata_cache::Environment::of_process()),
        )
        .unwrap();
        let t = std::time::Instant::now();
        struct W<'a>(Box<dyn strata_cache::BlobUpload + 'a>);
        impl Write for W<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.write_all(buf).map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut up = W(b.begin_upload().unwrap().unwrap());
        let w =
            strata_oci::write_layer(&dir, &mut up, strata_oci::Compression::Zstd, threads).unwrap();
        up.0.finish(&w.digest, w.size).unwrap();
        let streamed = t.elapsed();
        eprintln!("round {round}: file then PUT {file_then_put:?}, streamed {streamed:?}");
    }
}
