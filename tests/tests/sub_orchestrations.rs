//! Sub-orchestrations and retry policies, end to end on SQLite.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use duractor::prelude::*;
use duractor::{Event, Failure};
use duractor_tests::TestApp;

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn square(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x * x)
}

#[orchestrator]
async fn child_sum(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    if n == 13 {
        return Err(duractor::Error::msg("13 is unlucky"));
    }
    let squares = ctx
        .join_all((1..=n).map(|i| ctx.call_activity(Square, i)))
        .await;
    squares.into_iter().sum()
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext, ns: Vec<u64>) -> Result<Vec<String>, duractor::Error> {
    let calls = ns.iter().map(|n| ctx.call_sub_orchestrator(ChildSum, *n));
    let results = ctx.join_all(calls).await;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(sum) => format!("ok {sum}"),
            Err(duractor::Error::SubOrchestrationFailed {
                name,
                instance_id,
                failure,
            }) => format!("{name} {instance_id} failed: {}", failure.message),
            Err(other) => format!("other error {other}"),
        })
        .collect())
}

#[tokio::test]
async fn sub_orchestrations_return_outputs_and_propagate_failures() {
    let app = TestApp::start("sub-orchestrations").await;
    let id = app
        .client
        .start(Parent, vec![3, 13, 4])
        .instance_id("parent-1")
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<Vec<String>>().unwrap(),
        [
            "ok 14",
            "child_sum parent-1:1 failed: 13 is unlucky",
            "ok 30"
        ]
    );
    // The children are instances of their own, with deterministic ids.
    let child = app.client.status("parent-1:0").await.unwrap();
    assert_eq!(child.status, RuntimeStatus::Completed);
    assert_eq!(child.output::<u64>().unwrap(), 14);
    let failed = app.client.status("parent-1:1").await.unwrap();
    assert_eq!(failed.status, RuntimeStatus::Failed);
    let history = app.client.history("parent-1:1").await.unwrap();
    assert!(matches!(
        &history[1],
        Event::ExecutionStarted { parent: Some(p), .. } if p.instance_id == "parent-1" && p.seq == 1
    ));
    app.stop().await;
}

#[orchestrator]
async fn named_child(ctx: OrchestrationContext, id: String) -> Result<u64, duractor::Error> {
    ctx.call_sub_orchestrator_with_id(ChildSum, 2, id).await
}

#[orchestrator]
async fn waits(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    ctx.wait_for_event::<()>("never").await
}

#[tokio::test]
async fn a_sub_orchestration_with_a_chosen_id_in_use_fails_the_call() {
    let app = TestApp::start("sub-orchestration-id").await;
    app.client
        .start(Waits, ())
        .instance_id("busy")
        .await
        .unwrap();
    let ok = app
        .client
        .start(NamedChild, "free".to_string())
        .await
        .unwrap();
    assert_eq!(
        app.client
            .wait_for_completion(&ok, WAIT)
            .await
            .unwrap()
            .output::<u64>()
            .unwrap(),
        5
    );
    let clash = app
        .client
        .start(NamedChild, "busy".to_string())
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&clash, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert!(
        failure.message.contains("instance `busy` already exists"),
        "{}",
        failure.message
    );
    app.stop().await;
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails until it has been called `fail_times` times.
#[activity]
async fn flaky(_ctx: ActivityContext, fail_times: u32) -> Result<u32, duractor::Error> {
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if call <= fail_times {
        Err(duractor::Error::msg(format!("transient failure {call}")))
    } else {
        Ok(call)
    }
}

#[activity]
async fn refuse(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    Err(duractor::Error::non_retriable("the card was declined"))
}

#[derive(Serialize, Deserialize)]
enum RetryCase {
    Flaky { fail_times: u32, max_attempts: u32 },
    NonRetriable,
    OnlyIf,
    Timeout,
}

#[orchestrator]
async fn retrying(ctx: OrchestrationContext, case: RetryCase) -> Result<String, duractor::Error> {
    let fast = RetryPolicy::new(4, Duration::from_millis(20)).backoff_coefficient(2.0);
    let result = match case {
        RetryCase::Flaky {
            fail_times,
            max_attempts,
        } => {
            let policy = RetryPolicy::new(max_attempts, Duration::from_millis(20))
                .backoff_coefficient(2.0)
                .max_interval(Duration::from_millis(50));
            ctx.call_activity_with_retry(Flaky, fail_times, &policy)
                .await
                .map(|call| format!("succeeded on call {call}"))
        }
        RetryCase::NonRetriable => ctx
            .call_activity_with_retry(Refuse, (), &fast)
            .await
            .map(|()| "no".to_owned()),
        RetryCase::OnlyIf => {
            let policy = fast.retry_if(|e| e.to_string().contains("something else"));
            ctx.call_activity_with_retry(Flaky, 100, &policy)
                .await
                .map(|call| call.to_string())
        }
        RetryCase::Timeout => {
            let policy = RetryPolicy::new(100, Duration::from_millis(100))
                .timeout(Duration::from_millis(250));
            ctx.call_activity_with_retry(Flaky, 1000, &policy)
                .await
                .map(|call| call.to_string())
        }
    };
    Ok(match result {
        Ok(text) => text,
        Err(error) => format!("gave up: {error}"),
    })
}

fn attempts(history: &[Event]) -> (usize, usize) {
    let scheduled = history
        .iter()
        .filter(|e| matches!(e, Event::TaskScheduled { .. }))
        .count();
    let timers = history
        .iter()
        .filter(|e| matches!(e, Event::TimerFired { .. }))
        .count();
    (scheduled, timers)
}

#[tokio::test]
async fn retry_policies() {
    let app = TestApp::start("retries").await;
    let client = &app.client;

    // Succeeds on the third attempt after two durable backoff timers.
    FLAKY_CALLS.store(0, Ordering::SeqCst);
    let id = client
        .start(
            Retrying,
            RetryCase::Flaky {
                fail_times: 2,
                max_attempts: 5,
            },
        )
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "succeeded on call 3");
    assert_eq!(attempts(&client.history(&id).await.unwrap()), (3, 2));

    // Gives up after max attempts with the last error.
    FLAKY_CALLS.store(0, Ordering::SeqCst);
    let id = client
        .start(
            Retrying,
            RetryCase::Flaky {
                fail_times: 10,
                max_attempts: 3,
            },
        )
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<String>().unwrap(),
        "gave up: activity `flaky` failed: transient failure 3"
    );
    assert_eq!(attempts(&client.history(&id).await.unwrap()), (3, 2));

    // Non-retriable errors are not retried.
    let id = client
        .start(Retrying, RetryCase::NonRetriable)
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<String>().unwrap(),
        "gave up: activity `refuse` failed: the card was declined"
    );
    assert_eq!(attempts(&client.history(&id).await.unwrap()), (1, 0));

    // The predicate decides.
    FLAKY_CALLS.store(0, Ordering::SeqCst);
    let id = client.start(Retrying, RetryCase::OnlyIf).await.unwrap();
    client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(attempts(&client.history(&id).await.unwrap()), (1, 0));

    // The overall timeout stops retrying: 100 ms waits, 250 ms budget.
    FLAKY_CALLS.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let id = client.start(Retrying, RetryCase::Timeout).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert!(status.output::<String>().unwrap().starts_with("gave up"));
    let (scheduled, _) = attempts(&client.history(&id).await.unwrap());
    assert_eq!(
        scheduled, 3,
        "attempts at 0, 100 and 200 ms; a fourth would start after 250 ms"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    app.stop().await;
}

#[orchestrator]
async fn retry_child(ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    // The first child (13) fails; retrying calls it with the same input, so it fails again
    // and the policy gives up after 2 attempts: two child instances were created.
    let policy = RetryPolicy::new(2, Duration::from_millis(10));
    match ctx
        .call_sub_orchestrator_with_retry(ChildSum, 13, &policy)
        .await
    {
        Ok(sum) => Ok(sum),
        Err(duractor::Error::SubOrchestrationFailed { failure, .. }) => {
            Err(duractor::Error::Failed(Failure::application(format!(
                "child failed twice: {}",
                failure.message
            ))))
        }
        Err(other) => Err(other),
    }
}

#[tokio::test]
async fn sub_orchestrator_retries_create_new_children() {
    let app = TestApp::start("sub-retry").await;
    let id = app
        .client
        .start(RetryChild, ())
        .instance_id("rc")
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    assert_eq!(
        status.failure.unwrap().message,
        "child failed twice: 13 is unlucky"
    );
    assert_eq!(
        app.client.status("rc:0").await.unwrap().status,
        RuntimeStatus::Failed
    );
    assert_eq!(
        app.client.status("rc:2").await.unwrap().status,
        RuntimeStatus::Failed
    );
    app.stop().await;
}
