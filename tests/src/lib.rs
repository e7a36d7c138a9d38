//! Helpers for duractor's whole-system tests: fresh SQLite files, runtimes, polling.

pub mod scale;

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
