//! Real servers for integration tests: an S3-compatible server (`s3s-fs`) and an OCI registry
//! (Debian's `docker-registry`), each started on a free loopback port in its own temporary
//! directory and killed when dropped. `scripts/test` installs both; a test that cannot start one
//! fails loudly, never skips.
//!
//! Test support only: no strata crate depends on this outside `[dev-dependencies]`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const S3_ACCESS_KEY: &str = "strata-test";
pub const S3_SECRET_KEY: &str = "strata-test-secret";

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    /// How it was started, so that it can be started again on the same port and data.
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

fn find_binary(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/local/bin"),
            PathBuf::from("/root/.cargo/bin"),
        ]);
    for dir in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed; `scripts/test` installs it (this test needs the real server)"
    );
}

fn wait_for_port(port: u16, child: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited with {status} before listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} did not listen on port {port} within 20 s");
}

fn start(program: &Path, args: &[std::ffi::OsString], port: u16) -> Child {
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    wait_for_port(port, &mut child, &name);
    child
}

fn base_dir() -> &'static Path {
    // Not /tmp: some tests pivot or mount there; /var/tmp is on the root filesystem.
    Path::new("/var/tmp")
}

impl Server {
    /// `s3s-fs` serving one bucket, `bucket`, with the test credentials.
    pub fn s3(bucket: &str) -> Server {
        let bin = find_binary("s3s-fs");
        let dir = tempfile::Builder::new()
            .prefix("strata-s3-")
            .tempdir_in(base_dir())
            .expect("temp dir");
        std::fs::create_dir(dir.path().join(bucket)).expect("bucket dir");
        let port = free_port();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
        ]
        .into_iter()
        .map(Into::into)
        .chain([dir.path().as_os_str().to_owned()])
        .collect();
        Server::spawn(bin, args, port, dir)
    }

    /// moto in server mode (AWS's APIs on loopback: STS, S3, IAM; no authentication), its
    /// request log (every request line, with its query) kept for [`Server::log`].
    pub fn moto() -> Server {
        let bin = find_binary("moto_server");
        let dir = tempfile::Builder::new()
            .prefix("strata-moto-")
            .tempdir_in(base_dir())
            .expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("moto log");
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start moto_server: {e}"));
        wait_for_port(port, &mut child, "moto_server");
        Server {
            child,
            program: bin,
            args: Vec::new(),
            port,
            dir,
        }
    }

    /// What a server started with a log ([`Server::moto`]) has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Debian's `docker-registry` (distribution 2.8) on loopback, storing in a temp dir.
    pub fn registry() -> Server {
        Server::registry_with(None)
    }

    /// The same, accepting only `user`/`password` (HTTP basic auth from an htpasswd file).
    pub fn registry_with_auth(user: &str, password: &str) -> Server {
        Server::registry_with(Some((user, password)))
    }

    /// The same, with token authentication as Docker Hub and GHCR do it: a client is sent to
    /// `realm` for a bearer token of `service`, which the registry accepts if it is signed by
    /// the certificate in `root_cert` (PEM) and issued by `issuer`.
    pub fn registry_with_token_auth(realm: &str, issuer: &str, root_cert: &Path) -> Server {
        Server::registry_with_config(|_| {
            format!(
                "auth:\n  token:\n    realm: {realm}\n    service: strata-registry\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert.display()
            )
        })
    }

    fn registry_with(auth: Option<(&str, &str)>) -> Server {
        Server::registry_with_config(|dir| {
            let Some((user, password)) = auth else {
                return String::new();
            };
            let htpasswd = dir.join("htpasswd");
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                htpasswd.display()
            )
        })
    }

    /// `auth` gives the `auth:` section of the configuration, given the server's directory.
    fn registry_with_config(auth: impl FnOnce(&Path) -> String) -> Server {
        let bin = find_binary("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir_in(base_dir())
            .expect("temp dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        text.push_str(&auth(dir.path()));
        std::fs::write(&config, text).expect("registry config");
        Server::spawn(
            bin,
            vec!["serve".into(), config.into_os_string()],
            port,
            dir,
        )
    }

    fn spawn(
        program: PathBuf,
        args: Vec<std::ffi::OsString>,
        port: u16,
        dir: tempfile::TempDir,
    ) -> Server {
        let child = start(&program, &args, port);
        Server {
            child,
            program,
            args,
            port,
            dir,
        }
    }

    /// Kills the server (SIGKILL) and waits for it, keeping its data: for faults that need a
    /// server gone in the middle of a transfer.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again after [`Server::kill`], on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.child = start(&self.program, &self.args, self.port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the server keeps what it stores (for tests that watch an upload arrive).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Sets the AWS variables the S3 backend reads to the test server's credentials.
pub fn use_s3_credentials() {
    // SAFETY: tests call this before starting threads that read the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    }
}

/// An HTTP server on loopback that answers one request per connection with the next of
/// `replies` (status, body), then stops; joining the handle gives the methods it saw. For
/// testing how clients react to failures a real server will not produce on demand.
pub fn scripted_http(
    replies: Vec<(u16, &'static str)>,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, body) in replies {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            seen.push(line.split(' ').next().unwrap_or_default().to_string());
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).expect("header");
                if header == "\r\n" || header.is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().expect("content length");
                }
            }
            let mut content = vec![0; length];
            reader.read_exact(&mut content).expect("body");
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("reply");
        }
        seen
    });
    (endpoint, handle)
}

/// A request as [`HttpServer`] saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A small HTTP/1.1 server on loopback answering every request with `handler`, for endpoints
/// no packaged server provides (a cloud's metadata service); stopped when dropped.
pub struct HttpServer {
    endpoint: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(
        handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
    ) -> HttpServer {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Some(request) = serve_one(stream, handler.as_ref()) {
                        seen.lock().expect("requests lock").push(request);
                    }
                }
            })
        };
        HttpServer {
            endpoint,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().expect("requests lock").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: TcpStream, handler: &Handler) -> Option<Request> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((n, v)) = header.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let request = Request {
        method,
        path,
        headers,
        body,
    };
    let (status, reply) = handler(&request);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    Some(request)
}

/// Detaches every mount at or under `dir` (deepest first), so that a temporary directory that
/// held a local cache can be removed: strata keeps layer images mounted under the cache's
/// `mounts/` (until a prune), and a test's cache outlives no test. Returns how many it detached.
pub fn unmount_all_under(dir: &Path) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; a point mounted twice is detached twice.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
        .iter()
        .filter(|p| {
            Command::new("umount")
                .arg("--lazy")
                .arg(p)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// `mountinfo` writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
