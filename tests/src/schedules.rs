//! Functions of the schedule tests, shared by the tests and the `bounded_app` app.

use std::io::Write;
use std::time::Duration;

use duractor::prelude::*;
use serde::{Deserialize, Serialize};

/// What a scheduled run does: log its instance id to a file, wait, log its end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TickSpec {
    /// The file the runs append to (`-`: none).
    pub log: String,
    /// How long each run takes (a durable timer).
    pub run_ms: u64,
}

/// A scheduled run: records `start ID` and, after `run_ms`, `end ID`.
#[orchestrator]
pub async fn scheduled_run(
    ctx: OrchestrationContext,
    spec: TickSpec,
) -> Result<(), duractor::Error> {
    let id = ctx.instance_id().to_owned();
    ctx.call_activity(RecordRun, (spec.log.clone(), format!("start {id}")))
        .await?;
    if spec.run_ms > 0 {
        ctx.sleep(Duration::from_millis(spec.run_ms)).await;
    }
    ctx.call_activity(RecordRun, (spec.log, format!("end {id}")))
        .await?;
    Ok(())
}

/// Appends a line to a log file.
#[activity]
pub async fn record_run(
    _ctx: ActivityContext,
    (log, line): (String, String),
) -> Result<(), duractor::Error> {
    if log == "-" {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| duractor::Error::msg(format!("open {log}: {e}")))?;
    writeln!(file, "{line}").map_err(|e| duractor::Error::msg(format!("write {log}: {e}")))?;
    Ok(())
}
