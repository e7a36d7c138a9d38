//! Guard rails: payload size, history length and calls per turn, each a clear error naming
//! the limit.

use std::time::Duration;

use duractor::Limits;
use duractor::prelude::*;
use duractor_tests::TestApp;

const WAIT: Duration = Duration::from_secs(30);

fn small() -> Limits {
    Limits {
        max_payload_bytes: 1_000,
        max_history_events: 40,
        max_actions_per_turn: 10,
    }
}

#[activity]
async fn blow_up(_ctx: ActivityContext, size: usize) -> Result<String, duractor::Error> {
    Ok("x".repeat(size))
}

#[orchestrator]
async fn big_output(ctx: OrchestrationContext, size: usize) -> Result<String, duractor::Error> {
    match ctx.call_activity(BlowUp, size).await {
        Ok(text) => Ok(format!("got {} bytes", text.len())),
        Err(error) => Ok(error.to_string()),
    }
}

#[orchestrator]
async fn long_chain(ctx: OrchestrationContext, steps: usize) -> Result<usize, duractor::Error> {
    for i in 0..steps {
        ctx.call_activity(BlowUp, i).await?;
    }
    Ok(steps)
}

#[orchestrator]
async fn wide_fan_out(ctx: OrchestrationContext, width: usize) -> Result<usize, duractor::Error> {
    let all = ctx
        .join_all((0..width).map(|i| ctx.call_activity(BlowUp, i)))
        .await;
    Ok(all.len())
}

#[tokio::test]
async fn limits_fail_with_errors_that_name_them() {
    let app = TestApp::start_with("limits", |b| b.limits(small())).await;
    let client = &app.client;

    let err = client
        .start_by_name("big_output", &"1".repeat(1_500))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "the input of orchestrator `big_output` is 1500 bytes of JSON; the limit is 1000 bytes"
        ),
        "{err}"
    );
    client.start(LongChain, 1).instance_id("y").await.unwrap();
    let huge = "y".repeat(2_000);
    let err = client.raise_event("y", "data", &huge).await.unwrap_err();
    assert!(
        matches!(
            &err,
            duractor::Error::LimitExceeded {
                limit: "max_payload_bytes",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("data of event `data` is 2002 bytes of JSON; the limit is 1000 bytes"),
        "{err}"
    );

    // An activity output over the limit fails the call, not the worker.
    let id = client.start(BigOutput, 5_000).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    let text = status.output::<String>().unwrap();
    assert!(
        text.contains("the output of activity `blow_up` is 5002 bytes of JSON; the limit is 1000 bytes (Limits::max_payload_bytes)"),
        "{text}"
    );

    // History length.
    let id = client.start(LongChain, 50).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, "limit_exceeded");
    assert!(
        failure
            .message
            .contains("the limit is 40 (Limits::max_history_events)"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("continue_as_new"));

    // Calls per turn.
    let id = client.start(WideFanOut, 11).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    assert!(status.failure.unwrap().message.contains(
        "one turn made 11 durable calls; the limit is 10 (Limits::max_actions_per_turn)"
    ));
    let id = client.start(WideFanOut, 10).await.unwrap();
    assert_eq!(
        client
            .wait_for_completion(&id, WAIT)
            .await
            .unwrap()
            .output::<usize>()
            .unwrap(),
        10
    );
    app.stop().await;
}
