//! Claims and admissions never take a turn off its one-statement path: a claim (a poll's, a
//! wake-up's) or an admission of held instances (a worker limiting orchestrators admits
//! after every instance it finishes) that reaches the writer beside a batch of turns which
//! qualifies for the guarded statement commits apart from it, after it. On SQLite a turn
//! batched with either used to take the ordinary path (a read, then the writes: ~1 ms
//! instead of ~0.15), which was most of W6's p99. Here a worker polling every millisecond
//! (two claims a millisecond, its dispatcher's and its activity worker's) and limiting the
//! orchestrators this binary links from `duractor_tests::flow` runs five orchestrations of 40
//! activities in sequence, and no turn's batch may meet the ordinary path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duractor::Runtime;
use duractor::prelude::*;
use duractor_sqlx::SqliteStore;
use duractor_tests::TempDir;
use duractor_tests::trace::TraceFields;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The ops of every batch SQLite's writer read and planned (its ordinary path), and how many
/// batches of claims alone it committed.
#[derive(Clone, Default)]
struct Batches {
    ordinary: Arc<Mutex<Vec<String>>>,
    claims_alone: Arc<Mutex<u64>>,
}

impl<S: tracing::Subscriber> Layer<S> for Batches {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let fields = TraceFields::of(event);
        match fields.get("message") {
            "batch read and planned" => {
                self.ordinary
                    .lock()
                    .unwrap()
                    .push(fields.get("ops").to_owned());
            }
            "claims committed" => *self.claims_alone.lock().unwrap() += 1,
            _ => {}
        }
    }
}

#[activity]
async fn plus_one(_ctx: ActivityContext, n: u64) -> Result<u64, duractor::Error> {
    Ok(n + 1)
}

#[orchestrator]
async fn forty_steps(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let mut value = n;
    for _ in 0..40 {
        value = ctx.call_activity(PlusOne, value).await?;
    }
    Ok(value)
}

#[tokio::test]
async fn claims_commit_apart_from_turns_on_sqlite() {
    let batches = Batches::default();
    let subscriber = tracing_subscriber::registry().with(batches.clone());
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber in this test binary");

    let dir = TempDir::new("claims_apart");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    let runtime = Runtime::builder(store)
        .poll_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    // The runtime's first batches (its start-up's) are ordinary; then only claims come.
    tokio::time::sleep(Duration::from_millis(200)).await;
    batches.ordinary.lock().unwrap().clear();
    let claims_before = *batches.claims_alone.lock().unwrap();

    for i in 0..5 {
        let id = client.start(FortySteps, i).await.unwrap();
        let status = client
            .wait_for_completion(&id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(status.output::<u64>().unwrap(), i + 40);
    }
    let ordinary = batches.ordinary.lock().unwrap().clone();
    let claims = *batches.claims_alone.lock().unwrap() - claims_before;
    runtime.shutdown().await.unwrap();

    assert!(
        claims > 20,
        "the polls made {claims} claims: too few to meet the turns"
    );
    let turns: Vec<&String> = ordinary.iter().filter(|ops| ops.contains("turn")).collect();
    assert!(
        turns.is_empty(),
        "turns took the ordinary path beside claims: {turns:?}"
    );
}
