//! A worker process for the crash test: runs `COUNT` orchestrations of `STEPS` sequential
//! activities on the database given as the first argument, logging every activity execution
//! to the file given as the second, and exits 0 once all are Completed.
//!
//! The crash test SIGKILLs it at random moments and starts it again on the same files.

use std::io::Write;
use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// Enough that the first kills land while the workload runs (about a second of work here).
pub const COUNT: u64 = 600;
pub const STEPS: u64 = 10;

/// Where activities log their executions (one `instance seq` line each).
static LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

#[activity]
async fn step(ctx: ActivityContext, (value, k): (u64, u64)) -> Result<u64, duractor::Error> {
    if let Some(log) = LOG.get() {
        let mut log = log
            .lock()
            .map_err(|_| duractor::Error::msg("log poisoned"))?;
        // One write of the whole line: `writeln!` writes the pieces of its format one by one,
        // and a SIGKILL between them left a torn line ("crash-61crash-56 7") in the log.
        let line = format!("{} {}\n", ctx.instance_id(), k);
        log.write_all(line.as_bytes())
            .and_then(|()| log.flush())
            .map_err(duractor::Error::msg)?;
    }
    // Some activities take a moment, so kills land mid-activity too.
    if k % 4 == 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(value.wrapping_mul(31).wrapping_add(k + 1))
}

#[orchestrator]
async fn ten_steps(ctx: OrchestrationContext, seed: u64) -> Result<u64, duractor::Error> {
    let mut value = seed;
    for k in 0..STEPS {
        value = ctx.call_activity(Step, (value, k)).await?;
    }
    Ok(value)
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(log)) = (args.next(), args.next()) else {
        eprintln!("usage: crash_worker DATABASE ACTIVITY_LOG");
        std::process::exit(2);
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(duractor::Error::msg)?;
    let _ = LOG.set(std::sync::Mutex::new(log));

    let store = SqliteStore::open(&db).await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();
    for i in 0..COUNT {
        // Start each instance once: a finished one with the same id would be replaced.
        let id = format!("crash-{i}");
        if client.status(&id).await.is_err() {
            match client.start(TenSteps, i).instance_id(id).await {
                Ok(_) | Err(duractor::Error::InstanceExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for i in 0..COUNT {
        let status = client
            .wait_for_completion(&format!("crash-{i}"), Duration::from_secs(120))
            .await?;
        if status.status != RuntimeStatus::Completed {
            eprintln!(
                "instance crash-{i} is {}: {:?}",
                status.status, status.failure
            );
            std::process::exit(1);
        }
    }
    println!("all {COUNT} instances completed");
    runtime.shutdown().await
}
