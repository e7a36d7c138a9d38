//! Quick activities ("Quick activities" in docs/architecture.md): once an activity's last
//! eight attempts each finished in their first poll, its calls run where their instance runs
//! (the runtime's thread, `duractor-runtime`); an attempt that waits goes on there, bounded
//! and cancellable as on the activity worker, and sends the activity back to the worker; the
//! second that blocks the thread sends it back for good; `quick_activities(false)` keeps
//! every call on the worker. The activity reports the threads it started and ended on.

use std::sync::Mutex;
use std::time::Duration;

use duractor::prelude::*;
use duractor_tests::{TestApp, eventually};
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(30);

/// The runtime's thread, where instances run.
const RUNTIME_THREAD: &str = "duractor-runtime";

/// How many quick calls an orchestration makes at most while waiting for its activity to
/// run on the runtime's thread (eight make it quick; a few more allow for a first poll that
/// a busy machine slowed past the quick bound).
const MAX_PROMOTING_CALLS: usize = 40;

/// What an attempt of [`step`] does.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Do {
    /// Returns at once.
    Quick,
    /// Waits this many milliseconds (an `.await` that is not ready at once).
    Sleep(u64),
    /// Blocks its thread this many milliseconds.
    Block(u64),
    /// Waits until told to stop, and records why.
    UntilStopped,
    /// Spawns a task (`tokio::spawn`) and waits for it; ends on the thread it ran on.
    Spawn,
    /// Panics.
    Panic,
}

/// Where an attempt started and ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ran {
    started: String,
    ended: String,
}

impl Ran {
    fn here(&self) -> bool {
        self.started == RUNTIME_THREAD
    }
}

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// Why attempts of `Do::UntilStopped` stopped, with the thread each started on.
static STOPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

#[activity]
async fn step(ctx: ActivityContext, what: Do) -> Result<Ran, duractor::Error> {
    let started = thread_name();
    match what {
        Do::Quick => {}
        Do::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Do::Block(ms) => std::thread::sleep(Duration::from_millis(ms)),
        Do::UntilStopped => {
            ctx.cancelled().await;
            let reason = ctx.cancel_reason().map(|r| format!("{r:?}"));
            STOPPED
                .lock()
                .unwrap()
                .push((started, reason.unwrap_or_default()));
            return Err(duractor::Error::msg("stopped"));
        }
        Do::Panic => panic!("a quick step broke"),
        Do::Spawn => {
            let spawned = tokio::spawn(async { thread_name() }).await.unwrap();
            return Ok(Ran {
                started,
                ended: spawned,
            });
        }
    }
    Ok(Ran {
        started,
        ended: thread_name(),
    })
}

/// Calls `Do::Quick` until one runs on the runtime's thread (at most
/// [`MAX_PROMOTING_CALLS`]), adding each to `log`; says whether one did.
#[orchestration_helper]
async fn promote(
    ctx: &OrchestrationContext,
    log: &mut Vec<(String, Ran)>,
) -> Result<bool, duractor::Error> {
    for _ in 0..MAX_PROMOTING_CALLS {
        let ran = ctx.call_activity(Step, Do::Quick).await?;
        let here = ran.here();
        log.push(("quick".to_owned(), ran));
        if here {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes the activity quick, then runs `then` and eight quick calls after it, up to five
/// times until `then` started on the runtime's thread; returns every call in order.
#[orchestrator]
async fn quick_then(
    ctx: OrchestrationContext,
    then: Do,
) -> Result<Vec<(String, Ran)>, duractor::Error> {
    let mut log = Vec::new();
    for _ in 0..5 {
        if !promote(&ctx, &mut log).await? {
            return Ok(log);
        }
        let ran = ctx.call_activity(Step, then.clone()).await?;
        let here = ran.here();
        log.push((format!("{then:?}"), ran));
        for _ in 0..8 {
            let ran = ctx.call_activity(Step, Do::Quick).await?;
            log.push(("after".to_owned(), ran));
        }
        if here {
            break;
        }
    }
    Ok(log)
}

/// The calls of `log` after the first `then` that started on the runtime's thread.
fn after_the_one_here<'a>(log: &'a [(String, Ran)], then: &str) -> (&'a Ran, &'a [(String, Ran)]) {
    let at = log
        .iter()
        .position(|(what, ran)| what == then && ran.here())
        .unwrap_or_else(|| panic!("no {then} call started on the runtime's thread: {log:#?}"));
    (&log[at].1, &log[at + 1..])
}

async fn run_quick_then(app: &TestApp, then: Do) -> Vec<(String, Ran)> {
    let id = app.client.start(QuickThen, then).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    status.output().unwrap()
}

#[tokio::test]
async fn a_quick_activity_runs_where_its_instance_runs_and_a_call_that_waits_goes_on_there() {
    let app = TestApp::start("quick-waits").await;
    let log = run_quick_then(&app, Do::Sleep(30)).await;
    // The first eight calls run on the activity worker: they are what makes it quick.
    assert!(
        log[..8].iter().all(|(_, ran)| !ran.here()),
        "the first calls ran on the worker: {log:#?}"
    );
    assert!(
        log.iter().any(|(what, ran)| what == "quick" && ran.here()),
        "{log:#?}"
    );
    let (waited, after) = after_the_one_here(&log, "Sleep(30)");
    assert_eq!(
        waited.ended, RUNTIME_THREAD,
        "the call that waited went on where it started"
    );
    assert!(
        !after[0].1.here(),
        "a call that was not done at once sends its activity back to the worker: {log:#?}"
    );
    // Every attempt counted, none left running in the worker's books.
    let calls = log.len() as u64;
    let here = log.iter().filter(|(_, ran)| ran.here()).count() as u64;
    assert_eq!(app.runtime.metrics().activities_quick, here);
    eventually(
        "the adopted attempt leaves the worker's books",
        WAIT,
        || async {
            let metrics = app.runtime.metrics();
            (metrics.activities_completed == calls && metrics.activities_running == 0).then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_quick_call_that_runs_long_is_listed_in_flight_like_any_other() {
    let app = TestApp::start("quick-listed").await;
    let id = app.client.start(QuickThen, Do::Sleep(1_500)).await.unwrap();
    // Past a sync period, the worker gives the call it adopted a work item, leased to it.
    let listed = eventually("the long quick call is listed in flight", WAIT, || async {
        let calls = app.client.activities(&id).await.unwrap();
        calls.into_iter().find(|call| call.name == "step")
    })
    .await;
    assert_eq!(listed.locked_by.as_deref(), Some(app.runtime.worker_id()));
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    let log: Vec<(String, Ran)> = status.output().unwrap();
    let (slept, _) = after_the_one_here(&log, "Sleep(1500)");
    assert_eq!(slept.ended, RUNTIME_THREAD, "{log:#?}");
    assert!(app.client.activities(&id).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn what_a_quick_call_spawns_runs_on_the_activity_worker() {
    let app = TestApp::start("quick-spawns").await;
    let log = run_quick_then(&app, Do::Spawn).await;
    let (spawned, _) = after_the_one_here(&log, "Spawn");
    assert!(
        spawned.ended != RUNTIME_THREAD && spawned.ended == log[0].1.started,
        "a task spawned by an attempt started where the instance runs runs on the worker's thread, as the first attempts did: {log:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_second_call_that_blocks_the_runtime_thread_sends_its_activity_back_for_good() {
    let app = TestApp::start("quick-blocks").await;
    // Each block sends it back to the worker, for eight quick calls at least ...
    for strike in 1..=2 {
        let log = run_quick_then(&app, Do::Block(5)).await;
        let (_, after) = after_the_one_here(&log, "Block(5)");
        assert_eq!(after.len(), 8, "strike {strike}: {log:#?}");
        assert!(
            after.iter().all(|(_, ran)| !ran.here()),
            "strike {strike}: the eight quick calls after the block ran on the worker: {log:#?}"
        );
    }
    // ... and after the second, however many quick calls follow.
    let log = run_quick_then(&app, Do::Quick).await;
    assert_eq!(log.len(), MAX_PROMOTING_CALLS, "{log:#?}");
    assert!(log.iter().all(|(_, ran)| !ran.here()), "{log:#?}");
    app.stop().await;
}

/// Makes the activity quick, then: a call that lost a select, one that ran past its
/// start-to-close timeout, one that panicked; each outcome as text, with where it started.
#[orchestrator]
async fn quick_ones_stopped(
    ctx: OrchestrationContext,
    _: (),
) -> Result<Vec<(String, bool)>, duractor::Error> {
    let mut log = Vec::new();
    let mut outcomes = Vec::new();
    let here = promote(&ctx, &mut log).await?;
    let call = ctx.call_activity(Step, Do::UntilStopped);
    let lost = match ctx
        .select(call, ctx.sleep(Duration::from_millis(100)))
        .await
    {
        Either::Left(result) => format!("{result:?}"),
        Either::Right(()) => "lost the select".to_owned(),
    };
    outcomes.push((lost, here));
    let here = promote(&ctx, &mut log).await?;
    let options = ActivityOptions::new()
        .start_to_close(Duration::from_millis(150))
        .retry(RetryPolicy::new(1, Duration::from_millis(10)));
    let timed_out = ctx
        .call_activity_with(Step, Do::UntilStopped, &options)
        .await;
    outcomes.push((format!("{:?}", timed_out.map(|_| ())), here));
    let here = promote(&ctx, &mut log).await?;
    let options = ActivityOptions::new().retry(RetryPolicy::new(1, Duration::from_millis(10)));
    let panicked = ctx.call_activity_with(Step, Do::Panic, &options).await;
    outcomes.push((format!("{:?}", panicked.map(|_| ())), here));
    Ok(outcomes)
}

#[tokio::test]
async fn a_quick_call_is_cancelled_timed_out_and_caught_panicking_as_on_the_worker() {
    // A promoting call whose own first poll a busy machine slowed past the quick bound
    // leaves the next call to the worker: the outcomes must be right either way, and one of
    // a few runs must have both waiting calls start where the instance runs.
    for run in 1..=5 {
        STOPPED.lock().unwrap().clear();
        let app = TestApp::start(&format!("quick-stopped-{run}")).await;
        let id = app.client.start(QuickOnesStopped, ()).await.unwrap();
        let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
        let outcomes: Vec<(String, bool)> = status.output().unwrap();
        assert!(
            outcomes.iter().all(|(_, here)| *here),
            "each call followed a quick one on the runtime's thread: {outcomes:#?}"
        );
        assert_eq!(outcomes[0].0, "lost the select");
        assert!(
            outcomes[1].0.contains("timed out"),
            "the start-to-close timeout fails the call: {outcomes:#?}"
        );
        assert!(
            outcomes[2].0.contains("panicked") && outcomes[2].0.contains("a quick step broke"),
            "the panic is caught and named: {outcomes:#?}"
        );
        let stopped = eventually("both waiting attempts hear why they stop", WAIT, || async {
            let stopped = STOPPED.lock().unwrap().clone();
            (stopped.len() == 2).then_some(stopped)
        })
        .await;
        let reasons: Vec<&str> = stopped.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(reasons, ["Cancelled", "StartToCloseTimeout"], "{stopped:?}");
        eventually("no attempt is left in the worker's books", WAIT, || async {
            let metrics = app.runtime.metrics();
            (metrics.activities_running == 0
                && metrics.activities_cancelled == 1
                && metrics.activities_timed_out == 1)
                .then_some(())
        })
        .await;
        app.stop().await;
        if stopped.iter().all(|(thread, _)| thread == RUNTIME_THREAD) {
            return;
        }
        println!("run {run}: a waiting call started on the worker: {stopped:?}");
    }
    panic!("in no run did both waiting calls start where the instance runs");
}

#[tokio::test]
async fn with_quick_activities_off_every_call_runs_on_the_worker() {
    let app = TestApp::start_with("quick-off", |builder| builder.quick_activities(false)).await;
    let log = run_quick_then(&app, Do::Quick).await;
    assert_eq!(log.len(), MAX_PROMOTING_CALLS, "{log:#?}");
    assert!(log.iter().all(|(_, ran)| !ran.here()), "{log:#?}");
    assert_eq!(app.runtime.metrics().activities_quick, 0);
    app.stop().await;
}
