//! The test kit (`duractor::testing`): its virtual clock reaches every time the engine reads
//! (a wall-clock path would make these tests hang or take days), mocks, waits that explain
//! why they cannot finish, readable assertion failures, and replays of recorded histories.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use duractor::chrono::{DateTime, Utc};
use duractor::prelude::*;
use duractor::testing::{TestRuntime, failing_first, replay_history, replay_history_file};
use duractor_tests::TempDir;

const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

#[activity]
async fn kit_charge(_ctx: ActivityContext, cents: u64) -> Result<String, duractor::Error> {
    Ok(format!("real receipt {cents}"))
}

#[activity]
async fn kit_ship(_ctx: ActivityContext, order: String) -> Result<String, duractor::Error> {
    Ok(format!("shipped {order}"))
}

/// Charges with an hourly back-off between attempts.
#[orchestrator]
async fn kit_checkout(ctx: OrchestrationContext, cents: u64) -> Result<String, duractor::Error> {
    let retry = RetryPolicy::new(4, HOUR);
    ctx.call_activity_with_retry(KitCharge, cents, &retry).await
}

/// Sleeps `days`, then reports the turn's time.
#[orchestrator]
async fn kit_sleeper(
    ctx: OrchestrationContext,
    days: u64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), duractor::Error> {
    let before = ctx.now();
    ctx.sleep(DAY * days as u32).await;
    Ok((before, ctx.now()))
}

/// Waits a week for `go`; `None` on the timeout.
#[orchestrator]
async fn kit_waiter(ctx: OrchestrationContext, _: ()) -> Result<Option<u32>, duractor::Error> {
    ctx.wait_for_event_timeout::<u32>("go", 7 * DAY).await
}

/// Waits for `go` forever.
#[orchestrator]
async fn kit_patient(ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    ctx.wait_for_event::<u32>("go").await
}

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct KitCounter {
    value: u64,
}

#[entity]
impl KitCounter {
    fn add(&mut self, _ctx: &EntityContext, amount: u64) -> Result<u64, duractor::Error> {
        self.value += amount;
        Ok(self.value)
    }
}

#[duractor::test]
async fn a_thirty_day_timer_fires_in_virtual_time_and_ctx_now_follows(t: TestRuntime) {
    let id = t.start(KitSleeper, 30).await;
    let (before, after) = t.output(KitSleeper, &id).await;
    assert_eq!(before, t.start_time());
    assert_eq!(after - before, duractor::chrono::TimeDelta::days(30));
    assert_eq!(t.elapsed(), 30 * DAY);
    assert_eq!(t.timers(&id).await, [30 * DAY]);
}

#[tokio::test]
async fn no_path_reads_the_wall_clock() {
    // A start time far in the past: anything stamped or compared on the wall clock would be
    // decades off, and a timer armed on it would fire at once or never.
    let start: DateTime<Utc> = "2001-02-03T04:05:06Z".parse().unwrap();
    let t = TestRuntime::builder()
        .start_time(start)
        .real_time_limit(Duration::from_secs(10))
        .start()
        .await;
    let id = t.start(KitSleeper, 365).await;
    let status = t.wait(&id).await;
    assert_eq!(status.created_at, start, "creation time is virtual");
    assert_eq!(
        status.completed_at,
        Some(start + duractor::chrono::TimeDelta::days(365))
    );
    let (before, after) = status.output::<(DateTime<Utc>, DateTime<Utc>)>().unwrap();
    assert_eq!(
        (before, after - before),
        (start, duractor::chrono::TimeDelta::days(365))
    );
    let stamps: Vec<DateTime<Utc>> = t
        .history(&id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            duractor::Event::OrchestratorStarted { timestamp } => Some(timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(
        stamps,
        [start, start + duractor::chrono::TimeDelta::days(365)],
        "every turn time is virtual"
    );
    t.shutdown().await;
}

#[duractor::test]
async fn an_hourly_retry_back_off_passes_in_milliseconds(t: TestRuntime) {
    let real = std::time::Instant::now();
    let charge = t.mock_activity(
        KitCharge,
        failing_first(2, "card network down", |cents| {
            Ok(format!("receipt {cents}"))
        }),
    );
    let id = t.start(KitCheckout, 250).await;
    assert_eq!(t.output(KitCheckout, &id).await, "receipt 250");
    assert_eq!(charge.calls(), [250, 250, 250]);
    // Two waits of an hour (coefficient 1, the policy's default): due at +1h and +2h.
    assert_eq!(t.timers(&id).await, [HOUR, 2 * HOUR]);
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "{:?}",
        real.elapsed()
    );
}

#[duractor::test]
async fn a_mock_that_always_fails_exhausts_the_policy(t: TestRuntime) {
    let charge = t.mock_activity(KitCharge, |_| Err(duractor::Error::msg("declined")));
    let id = t.start(KitCheckout, 9).await;
    let failure = t.failure(&id).await;
    assert!(failure.to_string().contains("declined"), "{failure}");
    assert_eq!(charge.call_count(), 4);
}

#[duractor::test]
async fn unmocked_activities_run_for_real_and_mocks_can_be_removed(t: TestRuntime) {
    let id = t.start(KitCheckout, 1).await;
    assert_eq!(t.output(KitCheckout, &id).await, "real receipt 1");
    let mock = t.mock_activity(KitCharge, |cents| Ok(format!("mocked {cents}")));
    let id = t.start(KitCheckout, 2).await;
    assert_eq!(t.output(KitCheckout, &id).await, "mocked 2");
    mock.remove();
    let id = t.start(KitCheckout, 3).await;
    assert_eq!(t.output(KitCheckout, &id).await, "real receipt 3");
}

#[duractor::test]
async fn an_event_raised_before_the_wait_beats_a_week_long_timeout(t: TestRuntime) {
    let id = t.start(KitWaiter, ()).await;
    t.raise_event(&id, "go", &7).await;
    assert_eq!(t.output(KitWaiter, &id).await, Some(7));
    assert_eq!(t.elapsed(), Duration::ZERO);

    let id = t.start(KitWaiter, ()).await;
    assert_eq!(t.output(KitWaiter, &id).await, None, "the timeout fires");
    assert_eq!(t.elapsed(), 7 * DAY);
}

#[duractor::test]
async fn advance_runs_what_falls_due_on_the_way_and_no_more(t: TestRuntime) {
    let id = t.start(KitWaiter, ()).await;
    t.advance(6 * DAY).await;
    assert_eq!(t.status(&id).await.status, RuntimeStatus::Running);
    t.advance(DAY).await;
    assert_eq!(t.status(&id).await.status, RuntimeStatus::Completed);
    assert_eq!(t.elapsed(), 7 * DAY);
}

#[duractor::test]
async fn scheduled_entity_signals_wait_for_the_virtual_clock(t: TestRuntime) {
    let at = t.now() + duractor::chrono::TimeDelta::days(2);
    t.client()
        .signal_entity_at::<KitCounter>("c", at)
        .add(5)
        .await
        .unwrap();
    t.client()
        .signal_entity::<KitCounter>("c")
        .add(1)
        .await
        .unwrap();
    t.run_until_idle().await;
    let value = |t: &TestRuntime| {
        let client = t.client().clone();
        async move {
            client
                .entity_state::<KitCounter>("c")
                .await
                .unwrap()
                .map(|c| c.value)
        }
    };
    assert_eq!(value(&t).await, Some(1), "the scheduled signal waits");
    t.advance(DAY).await;
    assert_eq!(value(&t).await, Some(1));
    t.advance(DAY).await;
    assert_eq!(value(&t).await, Some(6), "delivered at its time");
}

#[duractor::test]
#[should_panic(expected = "waits for something only the test can give")]
async fn waiting_for_an_event_nobody_raises_fails_at_once(t: TestRuntime) {
    let id = t.start(KitPatient, ()).await;
    t.wait(&id).await;
}

#[duractor::test]
#[should_panic(expected = "a call to activity `kit_charge` (TaskScheduled #0)")]
async fn a_failed_assertion_prints_the_history_as_a_table(t: TestRuntime) {
    let id = t.start(KitCheckout, 5).await;
    t.wait(&id).await;
    t.assert_activities(&id, &["kit_ship"]).await;
}

#[duractor::test]
async fn counts_and_inputs_of_calls_are_there_to_assert_on(t: TestRuntime) {
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    t.mock_activity(KitCharge, move |cents| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(format!("r{cents}"))
    });
    let a = t.start(KitCheckout, 10).await;
    let b = t.start(KitCheckout, 20).await;
    t.wait(&a).await;
    t.wait(&b).await;
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(t.activity_inputs(KitCharge, &a).await, [10]);
    assert_eq!(t.activity_names(&b).await, ["kit_charge"]);
    let table = t.history_table(&b).await;
    assert!(table.contains("ExecutionCompleted"), "{table}");
}

// Replays: version 1 of an order flow charges, then ships; version 2 (changed in a way that
// breaks running instances) ships first. Both carry the registered name `order_flow`.

#[orchestrator(name = "order_flow")]
async fn order_flow_v1(
    ctx: OrchestrationContext,
    order: String,
) -> Result<String, duractor::Error> {
    ctx.call_activity(KitCharge, 100).await?;
    ctx.sleep(DAY).await;
    ctx.call_activity(KitShip, order).await
}

#[orchestrator(name = "order_flow")]
async fn order_flow_v2(
    ctx: OrchestrationContext,
    order: String,
) -> Result<String, duractor::Error> {
    ctx.call_activity(KitShip, order.clone()).await?;
    ctx.call_activity(KitCharge, 100).await?;
    Ok(order)
}

#[tokio::test]
async fn an_exported_history_replays_until_the_code_changes_incompatibly() {
    let t = TestRuntime::builder()
        .auto_register(false)
        .orchestrator(OrderFlowV1)
        .activity(KitCharge)
        .activity(KitShip)
        .start()
        .await;
    let id = t.start(OrderFlowV1, "o-1".to_owned()).await;
    // Mid-flight: charged, sleeping for a day — what a running instance looks like.
    t.run_until_idle().await;
    let history = t.history(&id).await;
    let dir = TempDir::new("kit-replay");
    let file = dir.file("o-1.json");
    std::fs::write(&file, serde_json::to_string_pretty(&history).unwrap()).unwrap();

    replay_history_file(OrderFlowV1, &file).expect("the same code replays its history");
    let error = replay_history_file(OrderFlowV2, &file)
        .unwrap_err()
        .to_string();
    assert!(error.contains("position 2"), "{error}");
    assert!(
        error.contains("a call to activity `kit_charge` (TaskScheduled #0)"),
        "names the recorded call: {error}"
    );
    assert!(
        error.contains("now calls activity `kit_ship` as durable call #0"),
        "names the current call: {error}"
    );

    // The finished history replays too; a history of another orchestrator is refused.
    assert_eq!(t.output(OrderFlowV1, &id).await, "shipped o-1");
    replay_history(OrderFlowV1, &t.history(&id).await).unwrap();
    let other = t.start(KitSleeper, 1).await;
    t.wait(&other).await;
    let error = replay_history(OrderFlowV1, &t.history(&other).await).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is of orchestrator `kit_sleeper`, not `order_flow`"),
        "{error}"
    );
    t.shutdown().await;
}

#[tokio::test]
async fn twenty_instances_with_timers_of_one_to_twenty_days_take_milliseconds() {
    // Many instances with long timers at once: the clock jumps from one due time to the next.
    let t = TestRuntime::new().await;
    let real = std::time::Instant::now();
    let mut ids = Vec::new();
    for days in 1..=20 {
        ids.push(t.start(KitSleeper, days).await);
    }
    for id in &ids {
        t.wait(id).await;
    }
    assert_eq!(t.elapsed(), 20 * DAY);
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "{:?}",
        real.elapsed()
    );
    t.shutdown().await;
}
