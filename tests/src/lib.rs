//! Helpers for duractor's whole-system tests: fresh SQLite files, runtimes, polling.

pub mod bounded;
pub mod browser;
pub mod flow;
pub mod policies;
pub mod proxy;
pub mod scale;
pub mod schedules;
pub mod slow_starts;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duractor::{Client, Runtime, RuntimeBuilder};
use duractor_sqlx::SqliteStore;

/// A fresh directory under the system temp folder, removed on drop (kept when the test
/// panics, to look at).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory named after the test.
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{name}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let path = std::env::temp_dir().join("duractor-tests").join(unique);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A runtime on a fresh SQLite file, with its client.
pub struct TestApp {
    pub dir: TempDir,
    pub store: SqliteStore,
    pub runtime: Runtime,
    pub client: Client,
}

impl TestApp {
    /// Starts a runtime with default settings on a fresh database.
    pub async fn start(name: &str) -> TestApp {
        Self::start_with(name, |builder| builder).await
    }

    /// Starts a runtime configured by `configure` on a fresh database.
    pub async fn start_with(
        name: &str,
        configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
    ) -> TestApp {
        init_tracing();
        let dir = TempDir::new(name);
        let store = SqliteStore::open(dir.file("app.db"))
            .await
            .expect("open the store");
        let runtime =
            configure(Runtime::builder(store.clone()).poll_interval(Duration::from_millis(100)))
                .start()
                .await
                .expect("start the runtime");
        let client = runtime.client();
        TestApp {
            dir,
            store,
            runtime,
            client,
        }
    }

    /// Stops the runtime.
    pub async fn stop(self) -> (TempDir, SqliteStore) {
        self.runtime.shutdown().await.expect("shut down");
        (self.dir, self.store)
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` every 10 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing test does
/// not leave workers running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// SIGKILLs the process now and waits for it.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished CLI invocation of an app binary.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs an app binary's command against `database_url` and waits (at most 60 s) for it.
pub fn cli(bin: &str, database_url: &str, args: &[&str]) -> CliOutput {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(bin)
        .args(args)
        .env("DURACTOR_DATABASE_URL", database_url)
        .env_remove("DURACTOR_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the CLI") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{bin} {}` did not finish in 60 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CliOutput {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// An app binary running `serve` on a free port; killed on drop.
pub struct Server {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
}

impl Server {
    /// Starts `bin serve` on `database_url` with extra arguments and environment variables,
    /// and waits until it prints the address it listens on.
    pub fn start(bin: &str, database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        static SERVERS: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join("duractor-tests").join(format!(
            "server-{}-{}.log",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::create_dir_all(log.parent().unwrap_or(Path::new(".")));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0", "--poll-interval-ms", "50"])
            .args(args)
            .env("DURACTOR_DATABASE_URL", database_url)
            .env_remove("DURACTOR_API_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.to_owned());
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => Server { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{bin} serve did not report its address; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    /// Sends an HTTP request to the server.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        http(&self.addr, method, path, headers, body)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], None)
    }

    /// `GET path` with an `Authorization` header.
    pub fn get_authorized(&self, path: &str, authorization: &str) -> HttpResponse {
        self.request("GET", path, &[("Authorization", authorization)], None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, json: &str) -> HttpResponse {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(json.as_bytes()),
        )
    }

    /// Kills the server with SIGKILL (no shutdown at all) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body of a {} response is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    /// Asserts a JSON error response with this status and error code.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{}", self.body);
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), with a 30 s timeout.
/// `Host` is the address unless `headers` name one.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    use std::io::{Read, Write};

    let mut stream = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body))
        .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the response to {method} {path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response to {method} {path}: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        payload = dechunk(&payload);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&payload).to_string(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`
/// (for tests that drive processes, with no async runtime).
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Now, to the millisecond (what the stores keep).
pub fn store_now() -> duractor::chrono::DateTime<duractor::chrono::Utc> {
    duractor::chrono::DateTime::from_timestamp_millis(
        duractor::chrono::Utc::now().timestamp_millis(),
    )
    .expect("now is a valid time")
}

/// A turn of `instance_id` by `owner` appending `events` at history index `start` and
/// consuming the queue messages `consumed`, the instance Running, leased for 30 s; the
/// store tests adjust the rest.
pub fn turn(
    instance_id: &str,
    owner: &str,
    start: u64,
    events: Vec<duractor::Event>,
    consumed: Vec<i64>,
) -> duractor::store::TurnCommit {
    duractor::store::TurnCommit {
        instance_id: instance_id.to_owned(),
        owner: owner.to_owned(),
        history_start: start,
        create: None,
        reset_history: false,
        execution: 0,
        new_events: events,
        consumed,
        completed_activities: Vec::new(),
        finished_calls: Vec::new(),
        activities: Vec::new(),
        cancelled_activities: Vec::new(),
        cancelled_timers: Vec::new(),
        hold_timers: false,
        messages: Vec::new(),
        new_instances: Vec::new(),
        status: Some(duractor::RuntimeStatus::Running),
        output: None,
        failure: None,
        custom_status: None,
        input: None,
        entity: None,
        lease_until: store_now() + duractor::chrono::Duration::seconds(30),
        now: store_now(),
    }
}
