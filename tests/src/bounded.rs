//! Functions of the bounded-activities tests (timeouts, heartbeats, cancellation), shared by
//! the tests and by the `bounded_worker` process: a stepping activity that heartbeats its
//! progress, resumes from the last heartbeat, stops when cancelled, and writes what it did to
//! a log file (one line per write, so a SIGKILL never tears a line).

use std::io::Write;
use std::time::Duration;

use duractor::prelude::*;

/// What [`BoundedStep`] does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSpec {
    /// The log file to append to.
    pub log: String,
    /// A label written on every line (several calls share one log).
    pub label: String,
    /// How many steps to do.
    pub steps: u64,
    /// How long each step takes.
    pub step_ms: u64,
    /// Per call: the heartbeat timeout (0 for none) and the most attempts.
    pub heartbeat_timeout_ms: u64,
    pub attempts: u32,
}

/// Appends one line to the log in a single write.
pub fn log_line(path: &str, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write the log");
}

/// Steps through `spec.steps`, heartbeating the count after each; starts from the count the
/// last heartbeat recorded; stops (and says so) when cancelled.
#[activity]
pub async fn bounded_step(ctx: ActivityContext, spec: StepSpec) -> Result<u64, duractor::Error> {
    let resume: u64 = ctx.heartbeat_details()?.unwrap_or(0);
    log_line(
        &spec.log,
        &format!(
            "{} start attempt={} resume={resume}",
            spec.label,
            ctx.attempt()
        ),
    );
    let mut done = resume;
    while done < spec.steps {
        tokio::select! {
            () = ctx.cancelled() => {
                let reason = ctx.cancel_reason().map(|r| format!("{r:?}")).unwrap_or_default();
                log_line(&spec.log, &format!("{} cancelled {reason} at={done}", spec.label));
                return Err(duractor::Error::msg("stopped"));
            }
            () = tokio::time::sleep(Duration::from_millis(spec.step_ms)) => {}
        }
        done += 1;
        ctx.heartbeat(&done)?;
        log_line(&spec.log, &format!("{} step {done}", spec.label));
    }
    log_line(&spec.log, &format!("{} done", spec.label));
    Ok(done)
}

/// Calls [`BoundedStep`] with the spec's heartbeat timeout and attempts.
#[orchestrator]
pub async fn bounded_job(
    ctx: OrchestrationContext,
    spec: StepSpec,
) -> Result<u64, duractor::Error> {
    let mut options =
        ActivityOptions::new().retry(RetryPolicy::new(spec.attempts, Duration::from_millis(10)));
    if spec.heartbeat_timeout_ms > 0 {
        options = options.heartbeat_timeout(Duration::from_millis(spec.heartbeat_timeout_ms));
    }
    ctx.call_activity_with(BoundedStep, spec, &options).await
}

/// Runs a [`BoundedStep`] itself and another in a child [`BoundedJob`], at once.
#[orchestrator]
pub async fn bounded_parent(
    ctx: OrchestrationContext,
    spec: StepSpec,
) -> Result<u64, duractor::Error> {
    let mut child = spec.clone();
    child.label = format!("{}-child", spec.label);
    let mut own = spec;
    own.label = format!("{}-parent", own.label);
    let (a, b) = ctx
        .join(
            ctx.call_activity(BoundedStep, own),
            ctx.call_sub_orchestrator(BoundedJob, child),
        )
        .await;
    Ok(a? + b?)
}
