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

/// The monitor's loop on the test kit: hourly checks over a day take milliseconds.
#[cfg(test)]
mod tests {
    use super::*;
    use duractor::testing::TestRuntime;

    const HOUR: Duration = Duration::from_secs(3_600);

    fn watch(max_checks: u32) -> Watch {
        Watch {
            path: "/data/report.csv".into(),
            interval_ms: HOUR.as_millis() as u64,
            max_checks,
            checks: 0,
        }
    }

    #[duractor::test]
    async fn alerts_when_the_file_appears_at_the_fifth_check(t: TestRuntime) {
        let checks = std::sync::atomic::AtomicU32::new(0);
        let check = t.mock_activity(CheckFile, move |_path| {
            let n = checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok((n == 5).then_some(42))
        });
        let alert = t.mock_activity(SendAlert, Ok);
        let id = t.start(Monitor, watch(100)).await;

        let result = t.output(Monitor, &id).await;

        assert!(result.found, "{result:?}");
        assert_eq!(result.checks, 5);
        assert_eq!(check.call_count(), 5);
        assert_eq!(
            alert.calls(),
            ["`/data/report.csv` appeared (42 bytes), seen at check 5"]
        );
        assert_eq!(t.elapsed(), 4 * HOUR, "four waits between five checks");
    }

    #[duractor::test]
    async fn gives_up_after_a_day_of_hourly_checks(t: TestRuntime) {
        let check = t.mock_activity(CheckFile, |_path| Ok(None));
        let id = t.start(Monitor, watch(24)).await;

        let result = t.output(Monitor, &id).await;

        assert_eq!(
            result,
            WatchResult {
                found: false,
                checks: 24,
                message: "`/data/report.csv` did not appear in 24 checks".into(),
            }
        );
        assert_eq!(check.call_count(), 24);
        assert_eq!(t.elapsed(), 23 * HOUR);
    }
}
