//! A store plans the statements of the common guarded batch shapes when it opens, so an
//! orchestration run one at a time — activities in sequence, durable timers in sequence —
//! never waits for a statement to be prepared: none of its batches meets a shape the
//! store did not prepare ("a guarded batch shape met for the first time"), on SQLite and on
//! PostgreSQL (with `DURACTOR_TEST_POSTGRES_URL`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duractor::prelude::*;
use duractor::{Runtime, Store};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore};
use duractor_tests::TempDir;
use duractor_tests::trace::TraceFields;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The shapes the stores' writers met for the first time.
#[derive(Clone, Default)]
struct FirstShapes(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for FirstShapes {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let fields = TraceFields::of(event);
        if fields
            .get("message")
            .contains("shape met for the first time")
        {
            self.0.lock().unwrap().push(fields.get("shape").to_owned());
        }
    }
}

#[activity]
async fn add_one(_ctx: ActivityContext, n: u64) -> Result<u64, duractor::Error> {
    Ok(n + 1)
}

#[orchestrator]
async fn three_steps(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let a = ctx.call_activity(AddOne, n).await?;
    let b = ctx.call_activity(AddOne, a).await?;
    ctx.call_activity(AddOne, b).await
}

#[orchestrator]
async fn three_naps(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    for _ in 0..3 {
        ctx.sleep(Duration::from_millis(5)).await;
    }
    Ok(n)
}

/// An activity racing a long timer: the activity wins and the turn cancels the timer, a
/// shape no common workload has.
#[orchestrator]
async fn timer_loses(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let timer = ctx.sleep(Duration::from_secs(3600));
    let work = ctx.call_activity(AddOne, n);
    match ctx.select(timer, work).await {
        Either::Left(()) => Err(duractor::Error::msg("the hour-long timer won")),
        Either::Right(result) => result,
    }
}

/// Starts `orchestrator` with `input`, waits for it, and returns its output.
async fn run_to_end<O: Orchestrator<Input = u64>>(
    client: &Client,
    orchestrator: O,
    input: u64,
) -> u64 {
    let id = client.start(orchestrator, input).await.unwrap();
    let status = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    status.output::<u64>().unwrap()
}

/// Runs an orchestration whose turn cancels a timer and checks that its shape is reported
/// (so the check of the others can fail); then runs, one at a time, three sequences of
/// activities and two sequences of timers on `store`, and returns the shapes its writer met
/// for the first time meanwhile.
async fn run_one_at_a_time(store: impl Store + Clone + 'static, seen: &FirstShapes) -> Vec<String> {
    // Default polls, and the flow-controlled functions this binary links from
    // `duractor_tests::flow` as they are: claims and admissions that meet a turn commit apart
    // from it (`claims_apart.rs`), so the turn's shape is still the one reported.
    let runtime = Runtime::builder(store).start().await.unwrap();
    let client = runtime.client();
    // Each probe starts once the writes before it are done: the runtime's first claims,
    // then what an instance that ended writes as it unloads.
    let settle = || async {
        duractor_tests::eventually(
            "the instances unloaded",
            Duration::from_secs(30),
            || async { (runtime.metrics().instances_loaded == 0).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    settle().await;
    seen.0.lock().unwrap().clear();
    assert_eq!(run_to_end(&client, TimerLoses, 1).await, 2);
    assert!(
        !seen.0.lock().unwrap().is_empty(),
        "a turn cancelling a timer met no new shape: the report is not seen"
    );
    settle().await;
    seen.0.lock().unwrap().clear();
    for i in 0..3 {
        assert_eq!(run_to_end(&client, ThreeSteps, i).await, i + 3);
    }
    for i in 0..2 {
        assert_eq!(run_to_end(&client, ThreeNaps, i).await, i);
    }
    let met = seen.0.lock().unwrap().clone();
    runtime.shutdown().await.unwrap();
    met
}

#[tokio::test]
async fn one_operation_at_a_time_meets_only_shapes_prepared_when_the_store_opened() {
    let seen = FirstShapes::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber in this test binary");

    let dir = TempDir::new("warm_shapes");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    let met = run_one_at_a_time(store, &seen).await;
    assert!(
        met.is_empty(),
        "SQLite met shapes it had not prepared: {met:?}"
    );

    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half");
        return;
    };
    let store = PostgresStore::connect_with(
        &url,
        PostgresStoreOptions {
            schema: format!("warm_shapes_{}", std::process::id()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let met = run_one_at_a_time(store.clone(), &seen).await;
    store.drop_schema().await.unwrap();
    assert!(
        met.is_empty(),
        "PostgreSQL met shapes it had not prepared: {met:?}"
    );
}
