//! Versioning: versions stamped at start, worker version policies, and in-code patches that
//! let old instances finish on the old path after a new version is deployed.

use std::time::Duration;

use duractor::Event;
use duractor::prelude::*;
use duractor::runtime::{VersionMatch, VersionMismatch, Versioning};
use duractor_sqlx::SqliteStore;
use duractor_tests::{TempDir, eventually};

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn legacy_step(_ctx: ActivityContext, order: String) -> Result<String, duractor::Error> {
    Ok(format!("legacy({order})"))
}

#[activity]
async fn new_step(_ctx: ActivityContext, order: String) -> Result<String, duractor::Error> {
    Ok(format!("new({order})"))
}

/// Version 1 of `fulfil`: reserve the old way, wait for payment, ship the old way.
#[orchestrator(name = "fulfil", version = "1")]
async fn fulfil_v1(
    ctx: OrchestrationContext,
    order: String,
) -> Result<Vec<String>, duractor::Error> {
    let first = ctx.call_activity(LegacyStep, order.clone()).await?;
    ctx.wait_for_event::<()>("paid").await?;
    let second = ctx.call_activity(LegacyStep, order).await?;
    Ok(vec![ctx.version(), first, second])
}

/// Version 2 changes both steps, keeping old instances on their old path in two ways:
/// * step 1 with a patch: an instance that already ran step 1 without the patch replays it
///   without the marker, so `is_patched` is false for it and the history still matches;
/// * step 2 by the version stamped on the instance at start.
#[orchestrator(name = "fulfil", version = "2")]
async fn fulfil_v2(
    ctx: OrchestrationContext,
    order: String,
) -> Result<Vec<String>, duractor::Error> {
    let first = if ctx.is_patched("new-reservation") {
        ctx.call_activity(NewStep, order.clone()).await?
    } else {
        ctx.call_activity(LegacyStep, order.clone()).await?
    };
    ctx.wait_for_event::<()>("paid").await?;
    let second = if ctx.version() == "1" {
        ctx.call_activity(LegacyStep, order).await?
    } else {
        ctx.call_activity(NewStep, order).await?
    };
    Ok(vec![ctx.version(), first, second])
}

async fn runtime(path: &std::path::Path, v2: bool, versioning: Versioning) -> Runtime {
    let store = SqliteStore::open(path).await.unwrap();
    let builder = Runtime::builder(store)
        .auto_register(false)
        .activity(LegacyStep)
        .activity(NewStep)
        .versioning(versioning)
        .poll_interval(Duration::from_millis(50));
    let builder = if v2 {
        builder.orchestrator(FulfilV2)
    } else {
        builder.orchestrator(FulfilV1)
    };
    builder.start().await.unwrap()
}

async fn wait_for_first_step(client: &Client, id: &str) {
    eventually("the first step", WAIT, || async {
        let history = client.history(id).await.ok()?;
        history
            .iter()
            .any(|e| matches!(e, Event::TaskCompleted { .. }))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_old_instance_finishes_on_the_old_path_after_a_new_version_is_deployed() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("versioning");
    let path = dir.file("app.db");

    let v1 = runtime(&path, false, Versioning::default()).await;
    let client = v1.client();
    let old = client.start(FulfilV1, "A".to_string()).await.unwrap();
    assert_eq!(client.status(&old).await.unwrap().version, "1");
    wait_for_first_step(&client, &old).await;
    v1.shutdown().await.unwrap();

    // Deploy v2. The old instance replays with v2 code and takes the old path.
    let v2 = runtime(&path, true, Versioning::default()).await;
    let client = v2.client();
    let new = client.start(FulfilV2, "B".to_string()).await.unwrap();
    assert_eq!(client.status(&new).await.unwrap().version, "2");
    wait_for_first_step(&client, &new).await;
    client.raise_event(&old, "paid", &()).await.unwrap();
    client.raise_event(&new, "paid", &()).await.unwrap();
    let old_status = client.wait_for_completion(&old, WAIT).await.unwrap();
    let new_status = client.wait_for_completion(&new, WAIT).await.unwrap();
    assert_eq!(
        old_status.output::<Vec<String>>().unwrap(),
        ["1", "legacy(A)", "legacy(A)"]
    );
    assert_eq!(
        new_status.output::<Vec<String>>().unwrap(),
        ["2", "new(B)", "new(B)"]
    );
    let new_history = client.history(&new).await.unwrap();
    assert!(
        new_history
            .iter()
            .any(|e| matches!(e, Event::PatchApplied { name } if name == "new-reservation"))
    );
    let old_history = client.history(&old).await.unwrap();
    assert!(
        !old_history
            .iter()
            .any(|e| matches!(e, Event::PatchApplied { .. }))
    );
    v2.shutdown().await.unwrap();
}

#[tokio::test]
async fn strict_version_policy_fails_or_leaves_other_versions() {
    let dir = TempDir::new("version-policy");
    let path = dir.file("app.db");

    let v1 = runtime(&path, false, Versioning::default()).await;
    let client = v1.client();
    let rejected = client.start(FulfilV1, "R".to_string()).await.unwrap();
    let failed = client.start(FulfilV1, "F".to_string()).await.unwrap();
    wait_for_first_step(&client, &rejected).await;
    wait_for_first_step(&client, &failed).await;
    v1.shutdown().await.unwrap();

    // A strict v2 worker that fails fails them with a clear error. It runs before anything
    // is raised on `rejected`: it fails every mismatched instance it can claim, and a message
    // the rejecting worker gives back is claimable again after `retry_rejected_after`.
    let strict_fail = Versioning {
        match_strategy: VersionMatch::Strict,
        on_mismatch: VersionMismatch::Fail,
        ..Default::default()
    };
    let v2 = runtime(&path, true, strict_fail).await;
    let client = v2.client();
    client.raise_event(&failed, "paid", &()).await.unwrap();
    let status = client.wait_for_completion(&failed, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, "version_mismatch");
    assert!(
        failure.message.contains(
            "instance version `1` does not match this worker's orchestrator `fulfil` version `2`"
        ),
        "{}",
        failure.message
    );
    v2.shutdown().await.unwrap();

    // A strict v2 worker that rejects leaves v1 instances alone.
    let strict_reject = Versioning {
        match_strategy: VersionMatch::Strict,
        on_mismatch: VersionMismatch::Reject,
        retry_rejected_after: Duration::from_secs(1),
    };
    let v2 = runtime(&path, true, strict_reject).await;
    let client = v2.client();
    client.raise_event(&rejected, "paid", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = client.status(&rejected).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    let history = client.history(&rejected).await.unwrap();
    assert!(
        !history
            .iter()
            .any(|e| matches!(e, Event::EventRaised { .. })),
        "v2 ran a v1 instance"
    );
    v2.shutdown().await.unwrap();

    // A v1 worker picks the rejected instance up and finishes it.
    let v1 = runtime(&path, false, strict_reject).await;
    let client = v1.client();
    let status = client
        .wait_for_completion(&rejected, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        status.output::<Vec<String>>().unwrap(),
        ["1", "legacy(R)", "legacy(R)"]
    );
    v1.shutdown().await.unwrap();
}
