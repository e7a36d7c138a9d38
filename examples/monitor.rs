//! Monitor: an eternal orchestration that polls for a condition with durable timers and
//! `continue_as_new`, and acts once it holds. Here it watches for a file to appear (a stand-in
//! for polling a job's status endpoint); its history stays short however long it watches.
//!
//! ```text
//! cargo run --example monitor -- serve &
//! cargo run --example monitor -- start monitor --id watch-report --input '{"path": "report.csv", "interval_ms": 2000}'
//! touch report.csv                                       # the next check finds it
//! cargo run --example monitor -- status watch-report
//! ```

use std::time::Duration;

use duractor::prelude::*;

/// What to watch, and the state carried from one execution to the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watch {
    /// The file to wait for.
    pub path: String,
    /// Time between checks, in milliseconds (default 5,000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Give up after this many checks (default 100).
    #[serde(default = "default_max_checks")]
    pub max_checks: u32,
    /// Checks made so far (0 when starting).
    #[serde(default)]
    pub checks: u32,
}

fn default_interval_ms() -> u64 {
    5_000
}

fn default_max_checks() -> u32 {
    100
}

/// How the watch ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResult {
    /// Whether the file appeared.
    pub found: bool,
    /// How many checks were made.
    pub checks: u32,
    /// What was reported.
    pub message: String,
}

/// The file's size, if it exists.
#[activity]
async fn check_file(_ctx: ActivityContext, path: String) -> Result<Option<u64>, duractor::Error> {
    match std::fs::metadata(&path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(duractor::Error::msg(format!("cannot check `{path}`: {e}"))),
    }
}

/// Sends an alert (here: prints it on stderr).
#[activity]
async fn send_alert(_ctx: ActivityContext, message: String) -> Result<String, duractor::Error> {
    eprintln!("ALERT: {message}");
    Ok(message)
}

/// One check; then either the end, or a durable timer and a fresh execution for the next.
#[orchestrator]
async fn monitor(ctx: OrchestrationContext, watch: Watch) -> Result<WatchResult, duractor::Error> {
    let checks = watch.checks + 1;
    ctx.set_custom_status(&checks);
    if let Some(size) = ctx.call_activity(CheckFile, watch.path.clone()).await? {
        let message = format!(
            "`{}` appeared ({size} bytes), seen at check {checks}",
            watch.path
        );
        let message = ctx.call_activity(SendAlert, message).await?;
        return Ok(WatchResult {
            found: true,
            checks,
            message,
        });
    }
    if checks >= watch.max_checks {
        return Ok(WatchResult {
            found: false,
            checks,
            message: format!("`{}` did not appear in {checks} checks", watch.path),
        });
    }
    ctx.sleep(Duration::from_millis(watch.interval_ms.max(10)))
        .await;
    ctx.continue_as_new(Watch { checks, ..watch }).await
}

#[duractor::main]
async fn main() {}
