//! A worker process for the crash tests of retries and continue-as-new: runs one instance on
//! the database given as the second argument until it completes, then exits 0.
//!
//! * `feature_worker retry DB COUNTER`: an activity fails its first 3 attempts (counted in the
//!   file COUNTER, across processes), retried with 1 s durable backoff timers.
//! * `feature_worker eternal DB`: counts to 30, continuing-as-new after every step, with a
//!   short durable timer in each execution.
//!
//! The tests SIGKILL it during backoffs and continue-as-new and start it again.

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

static COUNTER: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Appends a line to the counter file and returns how many lines it has.
fn count_attempt() -> Result<usize, duractor::Error> {
    use std::io::Write;
    let path = COUNTER
        .get()
        .ok_or_else(|| duractor::Error::msg("no counter file"))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(duractor::Error::msg)?;
    writeln!(file, "attempt").map_err(duractor::Error::msg)?;
    file.sync_all().map_err(duractor::Error::msg)?;
    let text = std::fs::read_to_string(path).map_err(duractor::Error::msg)?;
    Ok(text.lines().count())
}

#[activity]
async fn unreliable(_ctx: ActivityContext, _: ()) -> Result<usize, duractor::Error> {
    let attempt = count_attempt()?;
    if attempt <= 3 {
        Err(duractor::Error::msg(format!("attempt {attempt} failed")))
    } else {
        Ok(attempt)
    }
}

#[orchestrator]
async fn patient(ctx: OrchestrationContext, _: ()) -> Result<usize, duractor::Error> {
    let policy = RetryPolicy::new(10, Duration::from_secs(1));
    ctx.call_activity_with_retry(Unreliable, (), &policy).await
}

#[orchestrator]
async fn counter(ctx: OrchestrationContext, n: u32) -> Result<u32, duractor::Error> {
    if n == 30 {
        return Ok(n);
    }
    ctx.sleep(Duration::from_millis(20)).await;
    ctx.continue_as_new(n + 1).await
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, db) = match args.as_slice() {
        [mode, db, ..] => (mode.as_str(), db.as_str()),
        _ => {
            eprintln!("usage: feature_worker retry|eternal DATABASE [COUNTER]");
            std::process::exit(2);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Some(counter) = args.get(2) {
        let _ = COUNTER.set(counter.into());
    }
    let store = SqliteStore::open(db).await?;
    let runtime = Runtime::builder(store)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await?;
    let client = runtime.client();
    // Start the instance once: a finished one with the same id would be replaced.
    if client.status("the-instance").await.is_err() {
        let started = match mode {
            "retry" => client.start(Patient, ()).instance_id("the-instance").await,
            "eternal" => client.start(Counter, 0).instance_id("the-instance").await,
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        };
        match started {
            Ok(_) | Err(duractor::Error::InstanceExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let status = client
        .wait_for_completion("the-instance", Duration::from_secs(120))
        .await?;
    println!("{} {:?}", status.status, status.output);
    runtime.shutdown().await
}
