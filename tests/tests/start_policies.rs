//! Start policies (what a start does when its id is taken) and signal-with-start, on the
//! client (SQLite and PostgreSQL), over HTTP and on the command line.

use std::time::Duration;

use duractor::prelude::*;
use duractor::{Event, IfExists};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
use duractor_tests::policies::{CollectEvents, MaybeFail};
use duractor_tests::{Server, TempDir, TestApp, cli, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn starts(history: &[Event]) -> usize {
    history
        .iter()
        .filter(|e| matches!(e, Event::ExecutionStarted { .. }))
        .count()
}

async fn input_of(client: &Client, id: &str) -> u32 {
    client.status(id).await.unwrap().input.decode().unwrap()
}

#[tokio::test]
async fn each_start_policy_does_what_it_says() {
    let app = TestApp::start("start-policies").await;
    let client = &app.client;

    // Reject (the default): a running id is refused; a finished one is replaced.
    client
        .start(CollectEvents, 1)
        .instance_id("r")
        .await
        .unwrap();
    let refused = client.start(CollectEvents, 2).instance_id("r").await;
    assert!(
        matches!(refused, Err(duractor::Error::InstanceExists { ref status, .. }) if status == "Pending" || status == "Running"),
        "{refused:?}"
    );
    client.raise_event("r", "item", "x").await.unwrap();
    client.wait_for_completion("r", WAIT).await.unwrap();
    client
        .start(CollectEvents, 2)
        .instance_id("r")
        .await
        .unwrap();
    assert_eq!(
        input_of(client, "r").await,
        2,
        "the finished run was replaced"
    );

    // UseExisting: the same request twice gives the same instance, started once.
    for _ in 0..2 {
        let id = client
            .start(CollectEvents, 3)
            .instance_id("u")
            .if_exists(IfExists::UseExisting)
            .await
            .unwrap();
        assert_eq!(id, "u");
    }
    let again = client
        .start(CollectEvents, 9)
        .instance_id("u")
        .if_exists(IfExists::UseExisting)
        .await
        .unwrap();
    assert_eq!(again, "u");
    assert_eq!(input_of(client, "u").await, 3, "nothing was started again");
    client.raise_event("u", "item", "only").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(starts(&client.history("u").await.unwrap()), 1);

    // ReplaceIfFailed: only a failed (or terminated) run is replaced.
    client
        .start(MaybeFail, false)
        .instance_id("f")
        .await
        .unwrap();
    client.wait_for_completion("f", WAIT).await.unwrap();
    let completed = client
        .start(MaybeFail, true)
        .instance_id("f")
        .if_exists(IfExists::ReplaceIfFailed)
        .await;
    assert!(
        matches!(completed, Err(duractor::Error::InstanceExists { ref status, .. }) if status == "Completed"),
        "{completed:?}"
    );
    client
        .start(MaybeFail, true)
        .instance_id("g")
        .await
        .unwrap();
    let failed = client.wait_for_completion("g", WAIT).await.unwrap();
    assert_eq!(failed.status, RuntimeStatus::Failed);
    client
        .start(MaybeFail, false)
        .instance_id("g")
        .if_exists(IfExists::ReplaceIfFailed)
        .await
        .unwrap();
    let replaced = client.wait_for_completion("g", WAIT).await.unwrap();
    assert_eq!(replaced.status, RuntimeStatus::Completed);

    // TerminateRunning: the running one is terminated, then the new one starts.
    client
        .start(CollectEvents, 5)
        .instance_id("t")
        .await
        .unwrap();
    client
        .start(CollectEvents, 1)
        .instance_id("t")
        .if_exists(IfExists::TerminateRunning)
        .await
        .unwrap();
    assert_eq!(input_of(client, "t").await, 1);
    client.raise_event("t", "item", "new").await.unwrap();
    let status = client.wait_for_completion("t", WAIT).await.unwrap();
    assert_eq!(status.output::<Vec<String>>().unwrap(), ["new"]);
    app.stop().await;
}

/// The runtime's own client starts an instance with its first turn: the start returns once
/// both are stored (one commit on SQLite). An id this worker has not loaded (unloaded when
/// idle) but the store has is refused while it runs and replaced once it finished, as any
/// start's.
#[tokio::test]
async fn a_start_from_the_runtime_returns_with_its_first_turn_stored() {
    let app = TestApp::start_with("start-with-turn", |b| {
        b.idle_unload_after(Duration::from_millis(20))
    })
    .await;
    let client = &app.client;
    let unloaded = || async { (app.runtime.metrics().instances_loaded == 0).then_some(()) };
    client
        .start(CollectEvents, 1)
        .instance_id("w")
        .await
        .unwrap();
    // Stored by the time the start returns: the first turn ran and waits for an event.
    let status = client.status("w").await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Running);
    let history = client.history("w").await.unwrap();
    assert_eq!(starts(&history), 1, "{history:?}");
    duractor_tests::eventually("the instance to unload", WAIT, unloaded).await;
    let refused = client.start(CollectEvents, 2).instance_id("w").await;
    assert!(
        matches!(refused, Err(duractor::Error::InstanceExists { ref status, .. }) if status == "Running"),
        "{refused:?}"
    );
    assert_eq!(input_of(client, "w").await, 1);
    client.raise_event("w", "item", "first").await.unwrap();
    let status = client.wait_for_completion("w", WAIT).await.unwrap();
    assert_eq!(status.output::<Vec<String>>().unwrap(), ["first"]);

    duractor_tests::eventually("the instance to unload", WAIT, unloaded).await;
    client
        .start(CollectEvents, 1)
        .instance_id("w")
        .await
        .unwrap();
    let history = client.history("w").await.unwrap();
    assert_eq!(
        starts(&history),
        1,
        "the finished run was replaced: {history:?}"
    );
    client.raise_event("w", "item", "second").await.unwrap();
    let status = client.wait_for_completion("w", WAIT).await.unwrap();
    assert_eq!(status.output::<Vec<String>>().unwrap(), ["second"]);
    assert_eq!(app.runtime.metrics().turn_commit_failures, 0);
    app.stop().await;
}

/// 20 callers at once: one instance, every event delivered.
async fn twenty_callers_race(client: &Client, id: &str) {
    let calls = (0..20).map(|i| {
        let client = client.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            client
                .signal_with_start(CollectEvents, 20, &id, "item", &format!("{i:02}"))
                .await
        })
    });
    let mut started = 0;
    for call in calls.collect::<Vec<_>>() {
        if call.await.unwrap().unwrap() {
            started += 1;
        }
    }
    assert_eq!(started, 1, "exactly one caller started the instance");
    let status = client.wait_for_completion(id, WAIT).await.unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert_eq!(status.output::<Vec<String>>().unwrap(), expected);
    assert_eq!(starts(&client.history(id).await.unwrap()), 1);
}

#[tokio::test]
async fn signal_with_start_under_a_race_of_twenty_callers_makes_one_instance_on_sqlite() {
    let app = TestApp::start("signal-with-start").await;
    twenty_callers_race(&app.client, "cart-1").await;
    // A client without a worker in its process races the same way.
    let outside = Client::new(app.store.clone());
    twenty_callers_race(&outside, "cart-2").await;
    app.stop().await;
}

#[tokio::test]
async fn signal_with_start_under_a_race_of_twenty_callers_makes_one_instance_on_postgresql() {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping signal-with-start on PostgreSQL");
        return;
    };
    let options = PostgresStoreOptions {
        schema: format!("policies_{}", std::process::id()),
        ..Default::default()
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let runtime = Runtime::builder(store.clone()).start().await.unwrap();
    twenty_callers_race(&runtime.client(), "cart-pg").await;
    runtime.shutdown().await.unwrap();
}

#[test]
fn http_and_the_command_line_take_start_policies_and_signal_with_start() {
    const APP: &str = env!("CARGO_BIN_EXE_bounded_app");
    let dir = TempDir::new("policies-http");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(APP, &db, &[], &[]);

    let first = server.post(
        "/orchestrators/collect_events/c-1/signalWithStart/item",
        r#"{"input": 2, "data": "a"}"#,
    );
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.json()["started"], true);
    assert_eq!(first.json()["id"], "c-1");
    let second = server.post(
        "/orchestrators/collect_events/c-1/signalWithStart/item",
        r#"{"input": 2, "data": "b"}"#,
    );
    assert_eq!(second.json()["started"], false);
    let done = wait_until("c-1 to complete", WAIT, || {
        let status = server.get("/instances/c-1");
        (status.status == 200).then(|| status.json())
    });
    assert_eq!(done["output"], serde_json::json!(["a", "b"]));
    server
        .post(
            "/orchestrators/collect_events/c-1/signalWithStart/item",
            r#"{"input": 2, "date": "typo"}"#,
        )
        .expect_error(400, "invalid_payload");

    // ifExists on a start.
    let started = server.post("/orchestrators/collect_events/s-1", "1");
    assert_eq!(started.status, 202);
    server
        .post("/orchestrators/collect_events/s-1", "1")
        .expect_error(409, "instance_exists");
    let same = server.post(
        "/orchestrators/collect_events/s-1?ifExists=useExisting",
        "5",
    );
    assert_eq!(same.status, 202, "{}", same.body);
    assert_eq!(same.json()["id"], "s-1");
    let bad = server.post("/orchestrators/collect_events/s-1?ifExists=sometimes", "1");
    bad.expect_error(400, "invalid_argument");
    assert!(bad.body.contains("use-existing"), "{}", bad.body);

    // The command line.
    let out = cli(
        APP,
        &db,
        &[
            "signal-with-start",
            "collect_events",
            "c-2",
            "item",
            "--input",
            "1",
            "--data",
            "\"z\"",
        ],
    )
    .expect_code(0);
    assert!(
        out.stdout.contains("started it and raised event `item`"),
        "{}",
        out.stdout
    );
    let out = cli(
        APP,
        &db,
        &[
            "start",
            "collect_events",
            "--id",
            "s-1",
            "--input",
            "1",
            "--if-exists",
            "use-existing",
        ],
    )
    .expect_code(0);
    assert!(out.stdout.contains("s-1"), "{}", out.stdout);
    // It may have started nothing: it does not claim it did.
    assert!(
        out.stderr
            .contains("started (or kept the existing) instance s-1 of `collect_events`"),
        "{}",
        out.stderr
    );
    let out = cli(
        APP,
        &db,
        &[
            "start",
            "collect_events",
            "--id",
            "s-1",
            "--if-exists",
            "never",
        ],
    )
    .expect_code(2);
    assert!(
        out.stderr.contains("unknown start policy `never`"),
        "{}",
        out.stderr
    );
}
