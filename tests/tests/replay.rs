//! Replay determinism: an instance unloaded after every turn (so every step replays its whole
//! history) produces the same output and the same history as one kept in memory.

use std::time::Duration;

use duractor::Event;
use duractor::prelude::*;
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x * 2)
}

#[activity]
async fn fail_on_odd(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    if x % 2 == 1 {
        Err(duractor::Error::msg(format!("{x} is odd")))
    } else {
        Ok(x)
    }
}

/// Uses every kind of durable call and every deterministic replacement.
#[orchestrator]
async fn everything(
    ctx: OrchestrationContext,
    n: u64,
) -> Result<serde_json::Value, duractor::Error> {
    let mut chain = n;
    for _ in 0..3 {
        chain = ctx.call_activity(Double, chain).await?;
    }
    let fanned = ctx
        .join_all((0..5).map(|i| ctx.call_activity(Double, i)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let failures: Vec<String> = ctx
        .join_all((0..4).map(|i| ctx.call_activity(FailOnOdd, i)))
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    ctx.sleep(Duration::from_millis(50)).await;
    let event: String = ctx.wait_for_event("go").await?;
    let raced = match ctx
        .select(
            ctx.sleep(Duration::from_secs(3600)),
            ctx.call_activity(Double, 21),
        )
        .await
    {
        Either::Left(()) => "timer".to_owned(),
        Either::Right(v) => format!("activity {}", v?),
    };
    let ids = [ctx.new_uuid().to_string(), ctx.new_uuid().to_string()];
    let mut rng = ctx.rng();
    let random = [rng.next_u64(), rng.gen_range(0..1000)];
    Ok(serde_json::json!({
        "chain": chain,
        "fanned": fanned,
        "failures": failures,
        "event": event,
        "raced": raced,
        "ids": ids,
        "random": random,
        "instance": ctx.instance_id(),
    }))
}

/// History without the times (turn timestamps, timer due times), which differ between runs:
/// the decisions in order, and the results as a sorted list — parallel activities may finish
/// in another order from one run to the next, and history records them as they arrive.
fn timeless(history: &[Event]) -> (Vec<String>, Vec<String>) {
    let text = |e: &Event| match e {
        Event::TimerCreated { seq, .. } => format!("TimerCreated {seq}"),
        Event::TimerFired { seq, .. } => format!("TimerFired {seq}"),
        other => serde_json::to_string(other).unwrap(),
    };
    let decisions = history
        .iter()
        .filter(|e| e.is_decision())
        .map(text)
        .collect();
    let mut results: Vec<String> = history
        .iter()
        .filter(|e| !e.is_decision() && !matches!(e, Event::OrchestratorStarted { .. }))
        .map(text)
        .collect();
    results.sort();
    (decisions, results)
}

async fn run(app: &TestApp) -> (serde_json::Value, Vec<Event>) {
    let id = app
        .client
        .start(Everything, 3)
        .instance_id("same-instance-id")
        .await
        .unwrap();
    eventually("the orchestrator to wait for `go`", WAIT, || async {
        let history = app.client.history(&id).await.ok()?;
        history
            .iter()
            .any(|e| matches!(e, Event::TimerFired { .. }))
            .then_some(())
    })
    .await;
    app.client.raise_event(&id, "go", "green").await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.status,
        RuntimeStatus::Completed,
        "{:?}",
        status.failure
    );
    (
        status.output().unwrap(),
        app.client.history(&id).await.unwrap(),
    )
}

#[tokio::test]
async fn unloading_after_every_turn_gives_the_same_output_and_history() {
    let cached = TestApp::start("replay-cached").await;
    let uncached =
        TestApp::start_with("replay-uncached", |b| b.idle_unload_after(Duration::ZERO)).await;

    let (cached_output, cached_history) = run(&cached).await;
    let (uncached_output, uncached_history) = run(&uncached).await;

    assert_eq!(cached_output, uncached_output);
    assert_eq!(timeless(&cached_history), timeless(&uncached_history));
    assert_eq!(cached_output["chain"], 24);
    assert_eq!(cached_output["raced"], "activity 42");
    assert_eq!(
        cached_output["failures"],
        serde_json::json!([
            "activity `fail_on_odd` failed: 1 is odd",
            "activity `fail_on_odd` failed: 3 is odd"
        ])
    );
    // The uncached instance replayed its history at least once per turn.
    let turns = uncached_history
        .iter()
        .filter(|e| matches!(e, Event::OrchestratorStarted { .. }))
        .count();
    assert!(turns >= 5, "only {turns} turns");

    cached.stop().await;
    uncached.stop().await;
}
