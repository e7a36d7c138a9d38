//! Activities that can be bounded and stopped: start-to-close, schedule-to-close and heartbeat
//! timeouts (a late result ignored), heartbeats a retry and a redelivery after SIGKILL resume
//! from, and cancellation that reaches running work — from a `select` an activity lost, from
//! a terminate with cascade (parent and children), and on PostgreSQL from another process.
//! The activities report what they observed themselves (statics in this process, a log file
//! across processes).

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duractor::prelude::*;
use duractor::registry::OrchestratorEntry;
use duractor::{Event, Store};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore};
use duractor_tests::bounded::{BoundedJob, BoundedParent, StepSpec};
use duractor_tests::{ChildGuard, TempDir, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn failures(history: &[Event]) -> Vec<(String, Option<serde_json::Value>)> {
    history
        .iter()
        .filter_map(|event| match event {
            Event::TaskFailed {
                failure, heartbeat, ..
            } => Some((
                failure.kind.clone(),
                heartbeat
                    .as_ref()
                    .map(|h| h.decode::<serde_json::Value>().unwrap()),
            )),
            _ => None,
        })
        .collect()
}

fn completions(history: &[Event]) -> Vec<serde_json::Value> {
    history
        .iter()
        .filter_map(|event| match event {
            Event::TaskCompleted { output, .. } => Some(output.decode().unwrap()),
            _ => None,
        })
        .collect()
}

// --- start-to-close: a hanging attempt fails, the retry succeeds, the late result is ignored

static HANG_CALLS: AtomicU32 = AtomicU32::new(0);
static HANG_SAW_CANCEL: Mutex<Option<String>> = Mutex::new(None);

/// Hangs on its first attempt until told to stop, then returns "late" anyway; answers
/// "second" on the next one.
#[activity]
async fn hang_once(ctx: ActivityContext, _: ()) -> Result<String, duractor::Error> {
    if HANG_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        ctx.cancelled().await;
        *HANG_SAW_CANCEL.lock().unwrap() = ctx.cancel_reason().map(|r| format!("{r:?}"));
        return Ok("late".to_owned());
    }
    Ok("second".to_owned())
}

#[orchestrator]
async fn hang_once_job(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let options = ActivityOptions::new()
        .start_to_close(Duration::from_millis(300))
        .retry(RetryPolicy::new(3, Duration::from_millis(20)));
    ctx.call_activity_with(HangOnce, (), &options).await
}

#[tokio::test]
async fn a_hanging_attempt_times_out_the_retry_succeeds_and_the_late_result_is_ignored() {
    let app = TestApp::start("bounded-start-to-close").await;
    let id = app.client.start(HangOnceJob, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "second");
    assert_eq!(
        HANG_SAW_CANCEL.lock().unwrap().as_deref(),
        Some("StartToCloseTimeout"),
        "the hanging attempt is told why it must stop"
    );
    // Give the late "late" every chance to sneak in, then look at history.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let history = app.client.history(&id).await.unwrap();
    assert_eq!(
        failures(&history),
        [("start_to_close_timeout".to_owned(), None)]
    );
    assert_eq!(completions(&history), [serde_json::json!("second")]);
    let metrics = app.runtime.metrics();
    assert_eq!(metrics.activities_timed_out, 1);
    app.stop().await;
}

// --- schedule-to-close bounds the whole call, retries and waits included

static FOREVER_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[activity]
async fn hang_forever(ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    FOREVER_ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    ctx.cancelled().await;
    Err(duractor::Error::msg("stopped"))
}

#[orchestrator]
async fn bounded_forever(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let options = ActivityOptions::new()
        .start_to_close(Duration::from_millis(200))
        .schedule_to_close(Duration::from_millis(900))
        .retry(RetryPolicy::new(100, Duration::from_millis(100)));
    ctx.call_activity_with(HangForever, (), &options).await
}

#[tokio::test]
async fn schedule_to_close_ends_the_whole_call_however_many_retries_are_left() {
    let app = TestApp::start("bounded-schedule-to-close").await;
    let started = Instant::now();
    let id = app.client.start(BoundedForever, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert!(failure.is_timeout(), "{failure:?}");
    let cause = failure.cause.as_deref().expect("the activity's failure");
    assert_eq!(cause.kind, "schedule_to_close_timeout", "{failure:?}");
    assert!(
        cause.message.contains("schedule-to-close"),
        "{}",
        cause.message
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let attempts = FOREVER_ATTEMPTS.load(Ordering::SeqCst);
    assert!((2..=4).contains(&attempts), "{attempts} attempts in 900 ms");
    app.stop().await;
}

static UNSTARTED_RUNS: AtomicU32 = AtomicU32::new(0);

#[activity]
async fn unstarted(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    UNSTARTED_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[orchestrator]
async fn bounded_unstarted(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let options = ActivityOptions::new().schedule_to_close(Duration::from_millis(600));
    ctx.call_activity_with(Unstarted, (), &options).await
}

/// Bounded by its own default: a plain call of it is bounded too.
#[activity(schedule_to_close = "600ms")]
async fn unstarted_by_default(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    UNSTARTED_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[orchestrator]
async fn plain_unstarted(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    ctx.call_activity(UnstartedByDefault, ()).await
}

#[tokio::test]
async fn schedule_to_close_ends_a_call_that_no_worker_starts() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("bounded-unstarted");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    // This worker runs the orchestration but not the activity: nobody ever starts it.
    let runtime = Runtime::builder(store.clone())
        .auto_register(false)
        .orchestrator(BoundedUnstarted)
        .orchestrator(PlainUnstarted)
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let started = Instant::now();
    let id = client.start(BoundedUnstarted, ()).await.unwrap();
    // A plain call, bounded by the activity's own default, ends the same way.
    let plain = client.start(PlainUnstarted, ()).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    let elapsed = started.elapsed();
    let plain_status = client.wait_for_completion(&plain, WAIT).await.unwrap();
    let plain_failure = plain_status.failure.expect("the plain call failed");
    assert_eq!(
        plain_failure.cause.as_deref().map(|c| c.kind.as_str()),
        Some("schedule_to_close_timeout"),
        "{plain_failure:?}"
    );
    assert!(store.list_activities(&plain).await.unwrap().is_empty());
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    let cause = failure.cause.as_deref().expect("the activity's failure");
    assert_eq!(cause.kind, "schedule_to_close_timeout", "{failure:?}");
    assert!(
        cause
            .message
            .contains("was still waiting for a worker or running"),
        "{}",
        cause.message
    );
    assert!(elapsed >= Duration::from_millis(600), "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The call was cancelled (recorded) and its work item is gone: a worker that has the
    // activity, started now, finds nothing to run.
    let history = client.history(&id).await.unwrap();
    assert!(
        history.iter().any(|event| matches!(
            event,
            Event::CallCancelled { seq: 0, reason } if reason.contains("schedule-to-close")
        )),
        "{history:?}"
    );
    assert!(store.list_activities(&id).await.unwrap().is_empty());
    runtime.shutdown().await.unwrap();
    let worker = Runtime::builder(store)
        .auto_register(false)
        .activity(Unstarted)
        .activity(UnstartedByDefault)
        .poll_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(UNSTARTED_RUNS.load(Ordering::SeqCst), 0);
    worker.shutdown().await.unwrap();
}

#[activity]
async fn quick(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x + 1)
}

/// A bounded call that ends at once, then a wait for an event.
#[orchestrator]
async fn bounded_then_wait(ctx: OrchestrationContext, x: u64) -> Result<u64, duractor::Error> {
    let options = ActivityOptions::new().schedule_to_close(Duration::from_secs(3_600));
    let y = ctx.call_activity_with(Quick, x, &options).await?;
    ctx.wait_for_event::<()>("done").await?;
    Ok(y)
}

#[tokio::test]
async fn a_call_that_ends_in_time_leaves_no_deadline_timer_behind() {
    let app = TestApp::start("bounded-no-stale-timer").await;
    let id = app.client.start(BoundedThenWait, 41).await.unwrap();
    eventually("the call completes", WAIT, || async {
        let history = app.client.history(&id).await.unwrap();
        history
            .iter()
            .any(|e| matches!(e, Event::CallCancelled { seq: 1, .. }))
            .then_some(())
    })
    .await;
    // The deadline timer was cancelled with the call's end: its message is gone, so it will
    // not wake the instance in an hour.
    let stats = app.store.stats().await.unwrap().unwrap();
    assert_eq!(stats.messages_delayed, 0, "{stats:?}");
    app.client.raise_event(&id, "done", &()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 42);
    app.stop().await;
}

// --- heartbeats: a silent attempt times out, the retry resumes from its last details

static SILENT_CALLS: AtomicU32 = AtomicU32::new(0);

/// Attempt 1 heartbeats 1, 2, 3 and then goes silent; attempt 2 returns what it resumed from.
#[activity]
async fn goes_silent(ctx: ActivityContext, _: ()) -> Result<u64, duractor::Error> {
    if SILENT_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        for step in 1..=3u64 {
            ctx.heartbeat(&step)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ctx.cancelled().await;
        return Err(duractor::Error::msg("stopped"));
    }
    Ok(ctx.heartbeat_details::<u64>()?.unwrap_or(0))
}

#[orchestrator]
async fn silent_job(ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    let options = ActivityOptions::new()
        .heartbeat_timeout(Duration::from_millis(400))
        .retry(RetryPolicy::new(2, Duration::from_millis(10)));
    ctx.call_activity_with(GoesSilent, (), &options).await
}

#[tokio::test]
async fn a_missed_heartbeat_times_the_attempt_out_and_the_retry_resumes_from_its_details() {
    let app = TestApp::start("bounded-heartbeat").await;
    let id = app.client.start(SilentJob, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 3);
    let history = app.client.history(&id).await.unwrap();
    assert_eq!(
        failures(&history),
        [("heartbeat_timeout".to_owned(), Some(serde_json::json!(3)))]
    );
    app.stop().await;
}

// --- an activity's own defaults bound a plain call; heartbeats are stored a few at a time;
// --- a retry policy can refuse to retry a timeout

static BUSY_BEATS: AtomicU32 = AtomicU32::new(0);

/// Heartbeats as fast as it can until it is told to stop.
#[activity(start_to_close = "400ms")]
async fn busy_beats(ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    let mut beats = 0u32;
    while !ctx.is_cancelled() {
        beats += 1;
        ctx.heartbeat(&beats)?;
        tokio::task::yield_now().await;
    }
    BUSY_BEATS.store(beats, Ordering::SeqCst);
    Err(duractor::Error::msg("stopped"))
}

#[orchestrator]
async fn busy_job(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let policy = RetryPolicy::new(5, Duration::from_millis(10)).retry_if(|e| !e.is_timeout());
    ctx.call_activity_with_retry(BusyBeats, (), &policy).await
}

#[tokio::test]
async fn defaults_bound_a_plain_call_heartbeats_are_batched_and_retry_if_can_refuse_timeouts() {
    let app = TestApp::start("bounded-defaults").await;
    let id = app.client.start(BusyJob, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let history = app.client.history(&id).await.unwrap();
    // One attempt, stopped by the attribute's start-to-close timeout, not retried.
    let failed = failures(&history);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "start_to_close_timeout");
    let beats = BUSY_BEATS.load(Ordering::SeqCst);
    assert!(beats > 1_000, "only {beats} heartbeats in 400 ms");
    // The failure carries the latest details; the store saw a few of the thousands.
    let last = failed[0].1.as_ref().and_then(|v| v.as_u64()).unwrap();
    assert!(last >= u64::from(beats) - 1, "{last} of {beats}");
    let stored = app.runtime.metrics().activity_heartbeats;
    assert!(
        stored >= 1 && stored * 100 < u64::from(beats),
        "{stored} heartbeats stored for {beats}"
    );
    app.stop().await;
}

// --- attempts are numbered across the retry policy's retries

static FLAKY_ATTEMPTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Fails its first two attempts.
#[activity]
async fn flaky(ctx: ActivityContext, _: ()) -> Result<u32, duractor::Error> {
    let mut seen = FLAKY_ATTEMPTS.lock().unwrap();
    seen.push(ctx.attempt());
    if seen.len() < 3 {
        return Err(duractor::Error::msg("not yet"));
    }
    Ok(ctx.attempt())
}

#[orchestrator]
async fn flaky_job(ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let policy = RetryPolicy::new(5, Duration::from_millis(10));
    ctx.call_activity_with_retry(Flaky, (), &policy).await
}

#[tokio::test]
async fn attempts_are_numbered_across_retries() {
    let app = TestApp::start("bounded-attempts").await;
    let id = app.client.start(FlakyJob, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u32>().unwrap(), 3);
    assert_eq!(*FLAKY_ATTEMPTS.lock().unwrap(), [1, 2, 3]);
    app.stop().await;
}

// --- select: the timer wins, the activity is cancelled and sees it; replay agrees

static SLOW_CANCELLED_AT: Mutex<Option<Instant>> = Mutex::new(None);

#[activity]
async fn slow_report(ctx: ActivityContext, _: ()) -> Result<String, duractor::Error> {
    tokio::select! {
        () = ctx.cancelled() => {
            *SLOW_CANCELLED_AT.lock().unwrap() = Some(Instant::now());
            Err(duractor::Error::msg("cancelled"))
        }
        () = tokio::time::sleep(Duration::from_secs(60)) => Ok("report".to_owned()),
    }
}

#[orchestrator]
async fn report_or_timeout(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let report = ctx.call_activity(SlowReport, ());
    match ctx
        .select(report, ctx.sleep(Duration::from_millis(200)))
        .await
    {
        Either::Left(report) => report,
        Either::Right(()) => Ok("timed out".to_owned()),
    }
}

#[tokio::test]
async fn the_loser_of_a_select_is_cancelled_sees_it_and_replays_the_same() {
    let app = TestApp::start("bounded-select").await;
    let id = app.client.start(ReportOrTimeout, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    let finished = Instant::now();
    assert_eq!(status.output::<String>().unwrap(), "timed out");
    let cancelled_at = eventually("the activity sees the cancellation", WAIT, || async {
        *SLOW_CANCELLED_AT.lock().unwrap()
    })
    .await;
    assert!(
        cancelled_at.saturating_duration_since(finished) < Duration::from_secs(1),
        "the activity saw it {:?} after the orchestration finished",
        cancelled_at.saturating_duration_since(finished)
    );
    let history = app.client.history(&id).await.unwrap();
    assert!(
        history.iter().any(|e| matches!(
            e,
            Event::CallCancelled { seq: 0, reason } if reason == "lost a select"
        )),
        "{history:#?}"
    );
    assert!(!completions(&history).iter().any(|c| c == "report"));
    // Replaying the recorded history makes the same calls, the cancellation included ...
    let entry = OrchestratorEntry::of::<ReportOrTimeout>();
    duractor::replay::check_history(&entry, &id, &history).unwrap();
    // ... and a history recorded before cancellations were recorded still replays.
    let older: Vec<Event> = history
        .iter()
        .filter(|e| !matches!(e, Event::CallCancelled { .. }))
        .cloned()
        .collect();
    duractor::replay::check_history(&entry, &id, &older).unwrap();
    // The work item went with the cancellation.
    assert!(app.store.list_activities(&id).await.unwrap().is_empty());
    app.stop().await;
}

// --- a sub-orchestration that lost a select is terminated

#[orchestrator]
async fn child_or_timeout(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let child = ctx.call_sub_orchestrator(duractor_tests::policies::CollectEvents, 1);
    match ctx
        .select(child, ctx.sleep(Duration::from_millis(200)))
        .await
    {
        Either::Left(items) => items.map(|items| items.join(",")),
        Either::Right(()) => Ok("timed out".to_owned()),
    }
}

#[tokio::test]
async fn a_child_that_lost_a_select_is_terminated() {
    let app = TestApp::start("bounded-child").await;
    let id = app.client.start(ChildOrTimeout, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "timed out");
    let child = format!("{id}:0");
    let child_status = app.client.wait_for_completion(&child, WAIT).await.unwrap();
    assert_eq!(child_status.status, RuntimeStatus::Terminated);
    // A terminated instance's output is its reason.
    let reason: String = child_status.output.unwrap().decode().unwrap();
    assert!(reason.contains("cancelled the call to it"), "{reason}");
    let history = app.client.history(&id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e, Event::CallCancelled { seq: 0, .. })),
        "{history:#?}"
    );
    app.stop().await;
}

// --- terminate with cascade stops running activities of the parent and its children

fn spec(dir: &TempDir, label: &str, steps: u64) -> StepSpec {
    StepSpec {
        log: dir.file("steps.log").to_string_lossy().into_owned(),
        label: label.to_owned(),
        steps,
        step_ms: 50,
        heartbeat_timeout_ms: 0,
        attempts: 1,
    }
}

fn log_of(spec: &StepSpec) -> String {
    std::fs::read_to_string(&spec.log).unwrap_or_default()
}

#[tokio::test]
async fn terminate_with_cascade_stops_the_activities_of_the_parent_and_its_children() {
    let app = TestApp::start("bounded-terminate").await;
    let spec = spec(&app.dir, "t", 100_000);
    let id = app.client.start(BoundedParent, spec.clone()).await.unwrap();
    eventually("both activities run", WAIT, || async {
        let log = log_of(&spec);
        (log.contains("t-parent step 2") && log.contains("t-child step 2")).then_some(())
    })
    .await;
    let terminated = Instant::now();
    app.client
        .terminate(&id, "enough")
        .cascade(true)
        .await
        .unwrap();
    eventually("both activities stop", Duration::from_secs(1), || async {
        let log = log_of(&spec);
        (log.contains("t-parent cancelled Cancelled")
            && log.contains("t-child cancelled Cancelled"))
        .then_some(())
    })
    .await;
    let took = terminated.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // And they stay stopped: no step is logged after the cancellation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = log_of(&spec);
    let after = log.split("cancelled").last().unwrap_or_default();
    assert!(!after.contains("step"), "{log}");
    let child = format!("{id}:1");
    for instance in [&id, &child] {
        let status = app.client.status(instance).await.unwrap();
        assert_eq!(status.status, RuntimeStatus::Terminated, "{instance}");
    }
    assert!(app.runtime.metrics().activities_cancelled >= 2);
    app.stop().await;
}

// --- bad input: each a clear error

#[orchestrator]
async fn zero_timeout(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let options = ActivityOptions::new().start_to_close(Duration::ZERO);
    ctx.call_activity_with(HangOnce, (), &options).await
}

#[orchestrator]
async fn huge_timeout(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let options = ActivityOptions::new().heartbeat_timeout(Duration::from_secs(10 * 365 * 86_400));
    ctx.call_activity_with(HangOnce, (), &options).await
}

#[activity]
async fn big_heartbeat(ctx: ActivityContext, bytes: usize) -> Result<(), duractor::Error> {
    ctx.heartbeat(&"x".repeat(bytes))
}

#[orchestrator]
async fn big_heartbeat_job(ctx: OrchestrationContext, bytes: usize) -> Result<(), duractor::Error> {
    ctx.call_activity(BigHeartbeat, bytes).await
}

#[tokio::test]
async fn bad_timeouts_and_oversized_heartbeats_are_clear_errors() {
    let app = TestApp::start("bounded-bad-input").await;
    let zero = app.client.start(ZeroTimeout, ()).await.unwrap();
    let status = app.client.wait_for_completion(&zero, WAIT).await.unwrap();
    let message = status.failure.unwrap().message;
    assert!(
        message.contains("activity `hang_once`: the start-to-close timeout is 0ns; a timeout must be at least 1 ms"),
        "{message}"
    );
    let huge = app.client.start(HugeTimeout, ()).await.unwrap();
    let status = app.client.wait_for_completion(&huge, WAIT).await.unwrap();
    let message = status.failure.unwrap().message;
    assert!(message.contains("the heartbeat timeout is"), "{message}");
    assert!(
        message.contains("longer than the most allowed (366 days)"),
        "{message}"
    );

    let limit = duractor::Limits::default().max_payload_bytes;
    let big = app.client.start(BigHeartbeatJob, limit + 10).await.unwrap();
    let status = app.client.wait_for_completion(&big, WAIT).await.unwrap();
    let failure = status.failure.unwrap();
    let cause = failure.cause.expect("the activity's failure");
    assert!(
        cause
            .message
            .contains("the heartbeat details of activity `big_heartbeat`"),
        "{cause:?}"
    );
    // Details within the limit are fine.
    let small = app.client.start(BigHeartbeatJob, 100).await.unwrap();
    let status = app.client.wait_for_completion(&small, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    app.stop().await;
}

// --- across processes

fn spawn_worker(url: &str, schema: &str, role: &str, lease_ms: u64) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_bounded_worker"))
            .args([url, schema, role, &lease_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bounded_worker"),
    )
}

/// A runtime in this process that runs the orchestrations only: the activities go to the
/// worker processes.
async fn orchestrations_only(store: impl Store) -> Runtime {
    Runtime::builder(store)
        .auto_register(false)
        .orchestrator(BoundedJob)
        .orchestrator(BoundedParent)
        .lease_duration(Duration::from_millis(1_500))
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_activity_killed_with_its_worker_resumes_from_its_last_heartbeat_on_another() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("bounded-sigkill");
    let db = dir.file("app.db").to_string_lossy().into_owned();
    // A SQLite file has one worker process at a time: this process is a client only.
    let store = SqliteStore::open(&db).await.unwrap();
    let client = Client::new(store.clone());
    let first = spawn_worker(&db, "-", "all", 1_500);
    let mut spec = spec(&dir, "k", 40);
    spec.step_ms = 100;
    let id = client.start(BoundedJob, spec.clone()).await.unwrap();
    eventually("the first worker stores a heartbeat", WAIT, || async {
        let items = store.list_activities(&id).await.unwrap();
        let beat = items.first()?.heartbeat.as_ref()?.decode::<u64>().ok()?;
        (beat >= 5).then_some(beat)
    })
    .await;
    first.kill();
    let _second = spawn_worker(&db, "-", "all", 1_500);
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 40);
    let log = log_of(&spec);
    let resumed = log
        .lines()
        .find_map(|line| line.strip_prefix("k start attempt=2 resume="))
        .unwrap_or_else(|| panic!("no second delivery in:\n{log}"));
    let resumed: u64 = resumed.parse().unwrap();
    assert!(resumed >= 5, "resumed from {resumed}:\n{log}");
    // The second delivery did not redo what the first one had heartbeated.
    assert_eq!(log.lines().filter(|l| *l == "k step 1").count(), 1, "{log}");
}

#[tokio::test]
async fn terminate_reaches_an_activity_running_in_another_process_on_postgresql() {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!(
            "DURACTOR_TEST_POSTGRES_URL is not set: skipping the cross-process cancellation test"
        );
        return;
    };
    duractor_tests::init_tracing();
    let dir = TempDir::new("bounded-pg");
    let schema = format!("bounded_{}", std::process::id());
    let options = PostgresStoreOptions {
        schema: schema.clone(),
        ..Default::default()
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let runtime = orchestrations_only(store.clone()).await;
    let client = runtime.client();
    let _worker = spawn_worker(&url, &schema, "activities", 1_500);
    let spec = spec(&dir, "p", 100_000);
    let id = client.start(BoundedParent, spec.clone()).await.unwrap();
    eventually(
        "both activities run in the worker process",
        WAIT,
        || async {
            let log = log_of(&spec);
            (log.contains("p-parent step 2") && log.contains("p-child step 2")).then_some(())
        },
    )
    .await;
    let terminated = Instant::now();
    client.terminate(&id, "enough").cascade(true).await.unwrap();
    eventually("both activities stop", Duration::from_secs(2), || async {
        let log = log_of(&spec);
        (log.contains("p-parent cancelled Cancelled")
            && log.contains("p-child cancelled Cancelled"))
        .then_some(())
    })
    .await;
    let took = terminated.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // They stay stopped, and both instances are terminated.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = log_of(&spec);
    for label in ["p-parent", "p-child"] {
        let after = log
            .split(&format!("{label} cancelled"))
            .nth(1)
            .unwrap_or_default();
        assert!(!after.contains(&format!("{label} step")), "{log}");
    }
    let child = format!("{id}:1");
    for instance in [&id, &child] {
        let status = client.status(instance).await.unwrap();
        assert_eq!(status.status, RuntimeStatus::Terminated, "{instance}");
    }
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_activity_only_worker_leaves_orchestrations_to_workers_that_have_them() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("bounded-activity-only");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    let activities = Runtime::builder(store.clone())
        .auto_register(false)
        .activity(duractor_tests::bounded::BoundedStep)
        .poll_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let client = activities.client();
    let spec = spec(&dir, "o", 2);
    let id = client.start(BoundedJob, spec.clone()).await.unwrap();
    // Many polls of the activity-only worker: the instance is not claimed, so not failed
    // as an unknown orchestrator.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = client.status(&id).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Pending, "{status:?}");
    activities.shutdown().await.unwrap();

    // A worker that has the orchestrator runs it.
    let app = Runtime::builder(store).start().await.unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    app.shutdown().await.unwrap();
}

// --- what the API and the command line show

#[test]
fn the_api_and_the_command_line_show_calls_in_flight_and_count_what_stopped() {
    use duractor_tests::{Server, cli, wait_until};
    const APP: &str = env!("CARGO_BIN_EXE_bounded_app");
    let dir = TempDir::new("bounded-visible");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(APP, &db, &[], &[]);
    let mut spec = spec(&dir, "v", 100_000);
    spec.heartbeat_timeout_ms = 5_000;
    let body = serde_json::to_string(&spec).unwrap();
    let started = server.post("/orchestrators/bounded_job/visible-1", &body);
    assert_eq!(started.status, 202, "{}", started.body);

    // The call in flight: its attempt, the worker running it, its timeouts, its heartbeat.
    let activity = wait_until("a stored heartbeat", WAIT, || {
        let answer = server.get("/instances/visible-1/activities").json();
        let activity = answer["activities"].get(0)?.clone();
        (activity["lastHeartbeat"].as_u64()? >= 2).then_some(activity)
    });
    assert_eq!(activity["name"], "bounded_step");
    assert_eq!(activity["seq"], 0);
    assert_eq!(activity["attempt"], 1);
    assert_eq!(activity["heartbeatTimeoutMs"], 5_000);
    assert!(activity["startToCloseMs"].is_null());
    assert!(activity["worker"].is_string(), "{activity}");
    assert!(activity["lastHeartbeatTime"].is_string(), "{activity}");
    let listed = cli(APP, &db, &["activities", "visible-1", "--json"]).expect_code(0);
    assert_eq!(listed.json()[0]["name"], "bounded_step");
    let table = cli(APP, &db, &["activities", "visible-1"]).expect_code(0);
    assert!(table.stdout.contains("heartbeat 5s"), "{}", table.stdout);
    server
        .get("/instances/nobody/activities")
        .expect_error(404, "instance_not_found");

    // Terminated: the attempt stops, the call leaves the list, the metrics count it.
    let terminated = server.post("/instances/visible-1/terminate?reason=enough", "");
    assert_eq!(terminated.status, 202, "{}", terminated.body);
    wait_until("the activity to stop", WAIT, || {
        log_of(&spec)
            .contains("v cancelled Cancelled")
            .then_some(())
    });
    let answer = server.get("/instances/visible-1/activities").json();
    assert_eq!(answer["activities"], serde_json::json!([]));
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("duractor_activity_attempts_stopped_total{reason=\"cancelled\"} 1"),
        "{metrics}"
    );
    let beats = metrics
        .lines()
        .find_map(|line| line.strip_prefix("duractor_activity_heartbeats_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(beats >= 1, "{metrics}");
}
