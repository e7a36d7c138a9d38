//! Instance management through the client: terminate (cascading), suspend/resume, rewind,
//! restart, purge, list with filters and paging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use duractor::Event;
use duractor::client::{ListQuery, PurgeQuery};
use duractor::prelude::*;
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn wait_until(client: &Client, id: &str, status: RuntimeStatus) {
    eventually(&format!("{id} to be {status}"), WAIT, || async {
        (client.status(id).await.ok()?.status == status).then_some(())
    })
    .await;
}

#[orchestrator]
async fn sleeper(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(())
}

#[orchestrator]
async fn supervisor(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    ctx.call_sub_orchestrator(Sleeper, ()).await
}

#[tokio::test]
async fn terminate_with_a_reason_and_cascade_to_a_running_child() {
    let app = TestApp::start("terminate").await;
    let client = &app.client;

    // Plain terminate.
    let id = client
        .start(Sleeper, ())
        .instance_id("lonely")
        .await
        .unwrap();
    wait_until(client, &id, RuntimeStatus::Running).await;
    client.terminate(&id, "no longer needed").await.unwrap();
    wait_until(client, &id, RuntimeStatus::Terminated).await;
    let history = client.history(&id).await.unwrap();
    assert!(matches!(
        history.last(),
        Some(Event::ExecutionTerminated { reason, .. }) if reason == "no longer needed"
    ));
    let err = client.terminate(&id, "again").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("is Terminated; only pending, running or suspended"),
        "{err}"
    );

    // Cascade: the parent and its running child both end.
    let parent = client
        .start(Supervisor, ())
        .instance_id("boss")
        .await
        .unwrap();
    wait_until(client, "boss:0", RuntimeStatus::Running).await;
    client
        .terminate(&parent, "shutting down")
        .cascade(true)
        .await
        .unwrap();
    wait_until(client, &parent, RuntimeStatus::Terminated).await;
    wait_until(client, "boss:0", RuntimeStatus::Terminated).await;
    let child_history = client.history("boss:0").await.unwrap();
    assert!(matches!(
        child_history.last(),
        Some(Event::ExecutionTerminated { reason, .. })
            if reason == "parent `boss` was terminated: shutting down"
    ));

    // Without cascade, the child keeps running.
    let parent = client
        .start(Supervisor, ())
        .instance_id("boss2")
        .await
        .unwrap();
    wait_until(client, "boss2:0", RuntimeStatus::Running).await;
    client.terminate(&parent, "just the parent").await.unwrap();
    wait_until(client, &parent, RuntimeStatus::Terminated).await;
    assert_eq!(
        client.status("boss2:0").await.unwrap().status,
        RuntimeStatus::Running
    );
    app.stop().await;
}

#[activity]
async fn stamp(_ctx: ActivityContext, text: String) -> Result<String, duractor::Error> {
    Ok(format!("[{text}]"))
}

#[orchestrator]
async fn collector(
    ctx: OrchestrationContext,
    count: usize,
) -> Result<Vec<String>, duractor::Error> {
    let mut items = Vec::new();
    for _ in 0..count {
        let item: String = ctx.wait_for_event("item").await?;
        items.push(ctx.call_activity(Stamp, item).await?);
    }
    Ok(items)
}

#[tokio::test]
async fn suspended_instances_queue_events_until_resumed() {
    let app = TestApp::start("suspend").await;
    let client = &app.client;
    let id = client.start(Collector, 3).await.unwrap();
    wait_until(client, &id, RuntimeStatus::Running).await;
    client.raise_event(&id, "item", "a").await.unwrap();
    eventually("the first item", WAIT, || async {
        let history = client.history(&id).await.ok()?;
        history
            .iter()
            .any(|e| matches!(e, Event::TaskCompleted { .. }))
            .then_some(())
    })
    .await;

    client.suspend(&id, "maintenance").await.unwrap();
    wait_until(client, &id, RuntimeStatus::Suspended).await;
    client.raise_event(&id, "item", "b").await.unwrap();
    client.raise_event(&id, "item", "c").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing ran while suspended.
    assert_eq!(
        client.status(&id).await.unwrap().status,
        RuntimeStatus::Suspended
    );
    let history = client.history(&id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| matches!(e, Event::EventRaised { .. }))
            .count(),
        1
    );
    assert!(client.suspend(&id, "twice").await.is_err());

    client.resume(&id, "done").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<Vec<String>>().unwrap(),
        ["[a]", "[b]", "[c]"]
    );
    let kinds: Vec<&str> = client
        .history(&id)
        .await
        .unwrap()
        .iter()
        .map(Event::kind)
        .filter(|k| k.starts_with("Execution"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ExecutionStarted",
            "ExecutionSuspended",
            "ExecutionResumed",
            "ExecutionCompleted"
        ]
    );
    app.stop().await;
}

static FIXED: AtomicBool = AtomicBool::new(false);

#[activity]
async fn fragile(_ctx: ActivityContext, step: u32) -> Result<u32, duractor::Error> {
    if step == 2 && !FIXED.load(Ordering::SeqCst) {
        return Err(duractor::Error::msg("bug in step 2"));
    }
    Ok(step * 10)
}

#[orchestrator]
async fn pipeline(ctx: OrchestrationContext, _: ()) -> Result<Vec<u32>, duractor::Error> {
    let mut out = Vec::new();
    for step in 1..=3 {
        out.push(ctx.call_activity(Fragile, step).await?);
    }
    Ok(out)
}

#[orchestrator]
async fn pipeline_parent(ctx: OrchestrationContext, _: ()) -> Result<Vec<u32>, duractor::Error> {
    ctx.call_sub_orchestrator(Pipeline, ()).await
}

#[tokio::test]
async fn rewind_reruns_the_failed_step_after_the_fix() {
    let app = TestApp::start("rewind").await;
    let client = &app.client;
    FIXED.store(false, Ordering::SeqCst);
    let id = client.start(Pipeline, ()).await.unwrap();
    let parent = client
        .start(PipelineParent, ())
        .instance_id("pp")
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let parent_status = client.wait_for_completion(&parent, WAIT).await.unwrap();
    assert_eq!(parent_status.status, RuntimeStatus::Failed);
    assert_eq!(
        client.status("pp:0").await.unwrap().status,
        RuntimeStatus::Failed
    );

    // Deploy the fix, then rewind: the failed step runs again, step 1 does not.
    FIXED.store(true, Ordering::SeqCst);
    client.rewind(&id, "fixed step 2").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.status,
        RuntimeStatus::Completed,
        "{:?}",
        status.failure
    );
    assert_eq!(status.output::<Vec<u32>>().unwrap(), [10, 20, 30]);
    assert!(status.failure.is_none());
    let history = client.history(&id).await.unwrap();
    let step1 = history
        .iter()
        .filter(|e| matches!(e, Event::TaskScheduled { seq: 0, .. }))
        .count();
    assert_eq!(step1, 1);
    assert!(
        !history
            .iter()
            .any(|e| matches!(e, Event::TaskFailed { .. }))
    );
    assert!(
        history
            .iter()
            .any(|e| matches!(e, Event::ExecutionRewound { reason } if reason == "fixed step 2"))
    );

    // Rewinding a parent rewinds its failed child, and the parent completes with the result.
    client.rewind(&parent, "fixed").await.unwrap();
    let status = client.wait_for_completion(&parent, WAIT).await.unwrap();
    assert_eq!(status.output::<Vec<u32>>().unwrap(), [10, 20, 30]);

    let err = client.rewind(&id, "again").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("only failed instances can be rewound"),
        "{err}"
    );
    app.stop().await;
}

#[orchestrator]
async fn echo_input(_ctx: OrchestrationContext, text: String) -> Result<String, duractor::Error> {
    Ok(text)
}

#[tokio::test]
async fn restart_purge_and_list_with_paging() {
    let app = TestApp::start("restart-purge").await;
    let client = &app.client;
    for i in 0..5 {
        let id = client
            .start(EchoInput, format!("input {i}"))
            .instance_id(format!("job-{i}"))
            .await
            .unwrap();
        client.wait_for_completion(&id, WAIT).await.unwrap();
    }
    client
        .start(Sleeper, ())
        .instance_id("other-1")
        .await
        .unwrap();

    // Restart under the same id and under a new one.
    client.restart("job-0", false).await.unwrap();
    let status = client.wait_for_completion("job-0", WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "input 0");
    let new_id = client.restart("job-1", true).await.unwrap();
    assert_ne!(new_id, "job-1");
    assert_eq!(
        client
            .wait_for_completion(&new_id, WAIT)
            .await
            .unwrap()
            .output::<String>()
            .unwrap(),
        "input 1"
    );
    assert!(client.restart("other-1", false).await.is_err());

    // Paging by prefix, two at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .list(ListQuery {
                instance_id_prefix: Some("job-".into()),
                limit: Some(2),
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|s| s.instance_id.clone());
        seen.extend(page.into_iter().map(|s| s.instance_id));
    }
    assert_eq!(seen, ["job-0", "job-1", "job-2", "job-3", "job-4"]);
    let running = client
        .list(ListQuery {
            statuses: vec![RuntimeStatus::Running, RuntimeStatus::Pending],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    let created_from = client.status("job-2").await.unwrap().created_at;
    let recent = client
        .list(ListQuery {
            instance_id_prefix: Some("job-".into()),
            created_from: Some(created_from),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(recent.iter().all(|s| s.created_at >= created_from));
    assert!(recent.iter().any(|s| s.instance_id == "job-2"));

    // Purge one, refuse a running one, then purge by status.
    assert!(client.purge("job-4").await.unwrap());
    assert!(matches!(
        client.status("job-4").await.unwrap_err(),
        duractor::Error::InstanceNotFound(_)
    ));
    assert!(client.history("job-4").await.is_err());
    let err = client.purge("other-1").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("only finished instances can be purged"),
        "{err}"
    );
    let purged = client
        .purge_instances(&PurgeQuery {
            statuses: vec![RuntimeStatus::Completed],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 5, "job-0..3 and the restarted job-1 copy");
    let left = client.list(ListQuery::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance_id, "other-1");
    app.stop().await;
}
