//! Eternal orchestrations: continue-as-new keeps history bounded, optionally carrying events.

use std::time::Duration;

use duractor::Event;
use duractor::prelude::*;
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(120);

#[activity]
async fn probe(_ctx: ActivityContext, n: u64) -> Result<u64, duractor::Error> {
    Ok(n % 7)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MonitorState {
    iteration: u64,
    total: u64,
    target: u64,
}

/// A monitor: checks in a loop, starting over with a fresh history every 100 checks.
#[orchestrator]
async fn monitor(
    ctx: OrchestrationContext,
    mut state: MonitorState,
) -> Result<MonitorState, duractor::Error> {
    for _ in 0..100 {
        if state.iteration == state.target {
            return Ok(state);
        }
        state.total += ctx.call_activity(Probe, state.iteration).await?;
        state.iteration += 1;
    }
    ctx.set_custom_status(&state.iteration);
    ctx.continue_as_new(state).await
}

#[tokio::test]
async fn a_monitor_of_ten_thousand_iterations_keeps_a_bounded_history() {
    let app = TestApp::start("monitor").await;
    let target = 10_000;
    let id = app
        .client
        .start(
            Monitor,
            MonitorState {
                iteration: 0,
                total: 0,
                target,
            },
        )
        .await
        .unwrap();
    // Sample the history length while it runs: it never grows past one execution's worth.
    let mut longest = 0;
    let status = loop {
        let status = app.client.status(&id).await.unwrap();
        longest = longest.max(app.client.history(&id).await.unwrap().len());
        if status.is_finished() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state: MonitorState = status.output().unwrap();
    assert_eq!(state.iteration, target);
    assert_eq!(state.total, (0..target).map(|n| n % 7).sum::<u64>());
    let history = app.client.history(&id).await.unwrap();
    assert!(
        history.len() <= 310,
        "history of the last execution has {} events",
        history.len()
    );
    assert!(longest <= 310, "history grew to {longest} events");
    assert!(matches!(
        &history[1],
        Event::ExecutionStarted { execution: 100, .. }
    ));
    app.stop().await;
}

#[orchestrator]
async fn mailbox(
    ctx: OrchestrationContext,
    (received, preserve): (Vec<String>, bool),
) -> Result<Vec<String>, duractor::Error> {
    let mut received = received;
    let message: String = ctx.wait_for_event("message").await?;
    received.push(message);
    if received.len() == 3 {
        return Ok(received);
    }
    if received.len() == 1 {
        // Wait until the test has raised the other two, so they are buffered now.
        ctx.wait_for_event::<()>("go").await?;
    }
    if preserve {
        ctx.continue_as_new_preserving_events((received, preserve))
            .await
    } else {
        ctx.continue_as_new((received, preserve)).await
    }
}

async fn run_mailbox(app: &TestApp, preserve: bool) -> duractor::client::InstanceStatus {
    let id = app
        .client
        .start(Mailbox, (Vec::new(), preserve))
        .await
        .unwrap();
    app.client.raise_event(&id, "message", "one").await.unwrap();
    eventually("the first message", WAIT, || async {
        let history = app.client.history(&id).await.ok()?;
        history
            .iter()
            .any(|e| matches!(e, Event::EventRaised { name, .. } if name == "message"))
            .then_some(())
    })
    .await;
    app.client.raise_event(&id, "message", "two").await.unwrap();
    app.client
        .raise_event(&id, "message", "three")
        .await
        .unwrap();
    app.client.raise_event(&id, "go", &()).await.unwrap();
    if preserve {
        app.client.wait_for_completion(&id, WAIT).await.unwrap()
    } else {
        // The buffered events were dropped with the old execution: it waits for new ones.
        eventually("the second execution", WAIT, || async {
            let history = app.client.history(&id).await.ok()?;
            history
                .iter()
                .any(|e| matches!(e, Event::ExecutionStarted { execution: 1, .. }))
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            app.client.status(&id).await.unwrap().status,
            RuntimeStatus::Running
        );
        app.client
            .raise_event(&id, "message", "four")
            .await
            .unwrap();
        eventually("the third execution", WAIT, || async {
            let history = app.client.history(&id).await.ok()?;
            history
                .iter()
                .any(|e| matches!(e, Event::ExecutionStarted { execution: 2, .. }))
                .then_some(())
        })
        .await;
        app.client
            .raise_event(&id, "message", "five")
            .await
            .unwrap();
        app.client.wait_for_completion(&id, WAIT).await.unwrap()
    }
}

#[tokio::test]
async fn continue_as_new_carries_unprocessed_events_only_when_asked() {
    let app = TestApp::start("carry-events").await;
    let kept = run_mailbox(&app, true).await;
    assert_eq!(
        kept.output::<Vec<String>>().unwrap(),
        ["one", "two", "three"]
    );
    let dropped = run_mailbox(&app, false).await;
    assert_eq!(
        dropped.output::<Vec<String>>().unwrap(),
        ["one", "four", "five"]
    );
    app.stop().await;
}

#[orchestrator]
async fn tick(ctx: OrchestrationContext, n: u32) -> Result<u32, duractor::Error> {
    // A timer from the previous execution must not fire in this one.
    if n < 3 {
        let _stale = ctx.sleep(Duration::from_millis(100 * (3 - u64::from(n))));
        return ctx.continue_as_new(n + 1).await;
    }
    ctx.sleep(Duration::from_millis(600)).await;
    Ok(n)
}

#[tokio::test]
async fn timers_of_an_old_execution_do_not_fire_in_the_new_one() {
    let app = TestApp::start("stale-timers").await;
    let started = std::time::Instant::now();
    let id = app.client.start(Tick, 0).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u32>().unwrap(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "the 600 ms timer was not cut short"
    );
    app.stop().await;
}
