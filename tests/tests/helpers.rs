//! `#[orchestration_helper]` functions at run time: awaited, fanned out and raced inside an
//! orchestrator, they replay like inline code (an instance unloaded after every turn, so every
//! step replays its whole history, gets the same result as one kept in memory).
//!
//! Kept apart from `replay.rs`, whose exact-history comparison is sensitive to other tests
//! running at the same time.

use std::time::Duration;

use duractor::Event;
use duractor::prelude::*;
use duractor_tests::TestApp;

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn double(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x * 2)
}

/// Quadruples `x` with two activities and a timer: an `#[orchestration_helper]` with durable
/// calls of its own.
#[orchestration_helper]
async fn quadruple(ctx: &OrchestrationContext, x: u64) -> Result<u64, duractor::Error> {
    let once = ctx.call_activity(Double, x).await?;
    ctx.sleep(Duration::from_millis(10)).await;
    ctx.call_activity(Double, once).await
}

/// Helpers awaited, fanned out with `join_all` and raced with `select`.
#[orchestrator]
async fn with_helpers(ctx: OrchestrationContext, n: u64) -> Result<Vec<u64>, duractor::Error> {
    let mut out = vec![quadruple(&ctx, n).await?];
    for result in ctx.join_all((1..=3).map(|i| quadruple(&ctx, i))).await {
        out.push(result?);
    }
    match ctx
        .select(quadruple(&ctx, 5), ctx.sleep(Duration::from_secs(3600)))
        .await
    {
        Either::Left(result) => out.push(result?),
        Either::Right(()) => out.push(0),
    }
    Ok(out)
}

async fn run_helpers(app: &TestApp) -> (Vec<u64>, Vec<Event>) {
    let id = app
        .client
        .start(WithHelpers, 1)
        .instance_id("helpers")
        .await
        .unwrap();
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
async fn helpers_replay_like_inline_code() {
    let cached = TestApp::start("helpers-cached").await;
    let uncached =
        TestApp::start_with("helpers-uncached", |b| b.idle_unload_after(Duration::ZERO)).await;

    let (cached_output, cached_history) = run_helpers(&cached).await;
    let (uncached_output, uncached_history) = run_helpers(&uncached).await;

    assert_eq!(cached_output, vec![4, 4, 8, 12, 20]);
    assert_eq!(cached_output, uncached_output);
    // The helpers in `join_all` race each other, so the two runs may interleave differently;
    // they schedule the same calls, and the uncached one replayed its history every turn.
    let scheduled = |history: &[Event]| {
        let mut calls: Vec<String> = history
            .iter()
            .filter_map(|e| match e {
                Event::TaskScheduled { name, input, .. } => Some(format!("{name} {input:?}")),
                _ => None,
            })
            .collect();
        calls.sort();
        calls
    };
    assert_eq!(scheduled(&cached_history), scheduled(&uncached_history));
    let turns = uncached_history
        .iter()
        .filter(|e| matches!(e, Event::OrchestratorStarted { .. }))
        .count();
    assert!(turns >= 5, "only {turns} turns");

    cached.stop().await;
    uncached.stop().await;
}
