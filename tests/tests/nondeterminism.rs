//! A history recorded by one orchestrator body, replayed by a changed body, fails the
//! instance with the NonDeterminism error.

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;
use duractor_tests::{TempDir, eventually};

#[activity]
async fn reserve(_ctx: ActivityContext, item: String) -> Result<String, duractor::Error> {
    Ok(format!("reserved {item}"))
}

#[activity]
async fn charge(_ctx: ActivityContext, item: String) -> Result<String, duractor::Error> {
    Ok(format!("charged {item}"))
}

/// Version 1: reserve, then wait for the go-ahead, then charge.
#[orchestrator(name = "checkout")]
async fn checkout_v1(ctx: OrchestrationContext, item: String) -> Result<String, duractor::Error> {
    let reserved = ctx.call_activity(Reserve, item.clone()).await?;
    ctx.wait_for_event::<()>("go").await?;
    let charged = ctx.call_activity(Charge, item).await?;
    Ok(format!("{reserved}, {charged}"))
}

/// Version 2 changed the order of the calls: incompatible with running instances.
#[orchestrator(name = "checkout")]
async fn checkout_v2(ctx: OrchestrationContext, item: String) -> Result<String, duractor::Error> {
    let charged = ctx.call_activity(Charge, item.clone()).await?;
    ctx.wait_for_event::<()>("go").await?;
    let reserved = ctx.call_activity(Reserve, item).await?;
    Ok(format!("{charged}, {reserved}"))
}

#[tokio::test]
async fn replaying_with_changed_code_fails_with_nondeterminism() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("nondeterminism");
    let path = dir.file("app.db");

    // Deploy v1 and run an instance until it waits for the event.
    let store = SqliteStore::open(&path).await.unwrap();
    let runtime = Runtime::builder(store)
        .auto_register(false)
        .orchestrator(CheckoutV1)
        .activity(Reserve)
        .activity(Charge)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let id = client.start(CheckoutV1, "book".to_string()).await.unwrap();
    eventually(
        "the first activity to complete",
        Duration::from_secs(30),
        || async {
            let history = client.history(&id).await.ok()?;
            history
                .iter()
                .any(|e| matches!(e, duractor::Event::TaskCompleted { .. }))
                .then_some(())
        },
    )
    .await;
    runtime.shutdown().await.unwrap();

    // Deploy v2 on the same database; the instance replays its v1 history with v2 code.
    let store = SqliteStore::open(&path).await.unwrap();
    let runtime = Runtime::builder(store)
        .auto_register(false)
        .orchestrator(CheckoutV2)
        .activity(Reserve)
        .activity(Charge)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    client.raise_event(&id, "go", &()).await.unwrap();
    let status = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, "nondeterminism");
    assert!(
        failure.message.contains(&format!(
            "nondeterminism in instance `{id}` at history position 2: history recorded a call to \
             activity `reserve` (TaskScheduled #0), but the orchestrator code now calls activity \
             `charge` as durable call #0"
        )),
        "{}",
        failure.message
    );
    runtime.shutdown().await.unwrap();
}
