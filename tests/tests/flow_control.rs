//! Flow control: 1,000 calls limited to 3 at once per customer over 10 customers never run
//! more than 3 at once per customer (measured by the activities themselves), on SQLite and on
//! PostgreSQL with two workers; a rate of 50 a second holds within 10 %; a priority reorders
//! waiting work; what is held back is visible; bad limits are clear errors.

use std::time::Duration;

use duractor::flow::FlowControl;
use duractor::prelude::*;
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
use duractor_tests::flow::{FanOut, FanOutLimited, PerCustomer, Prioritized, most_at_once, starts};
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn fan_out(activity: &str, prefix: &str, keys: u32, count: u32, ms: u64) -> FanOut {
    FanOut {
        activity: activity.to_owned(),
        prefix: prefix.to_owned(),
        keys,
        count,
        ms,
    }
}

#[tokio::test]
async fn a_per_customer_limit_of_3_holds_for_1000_calls_on_sqlite() {
    let app = TestApp::start("flow-sqlite").await;
    let id = app
        .client
        .start(FanOutLimited, fan_out("per_customer", "sq", 10, 1_000, 20))
        .await
        .unwrap();
    // While it runs, the work held back is visible per customer.
    let held = eventually("work held back", WAIT, || async {
        let status = app.client.flow_status(&["per_customer"]).await.unwrap();
        status
            .iter()
            .any(|s| s.waiting > 0 && s.running == 3)
            .then_some(status)
    })
    .await;
    assert!(held.iter().all(|s| s.running <= 3), "{held:?}");
    assert!(
        held.iter()
            .all(|s| s.key.as_deref().is_some_and(|k| k.starts_with("sq-")))
    );
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    for customer in 0..10 {
        assert_eq!(
            most_at_once(&format!("sq-{customer}")),
            3,
            "customer {customer}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_per_customer_limit_holds_across_two_workers_on_postgresql() {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!(
            "DURACTOR_TEST_POSTGRES_URL is not set: skipping the PostgreSQL flow-control test"
        );
        return;
    };
    duractor_tests::init_tracing();
    let options = PostgresStoreOptions {
        schema: format!("flow_{}", std::process::id()),
        ..Default::default()
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            Runtime::builder(store.clone())
                .poll_interval(Duration::from_millis(100))
                .start()
                .await
                .unwrap(),
        );
    }
    let client = workers[0].client();
    let id = client
        .start(FanOutLimited, fan_out("per_customer", "pg", 10, 1_000, 20))
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    for customer in 0..10 {
        assert_eq!(
            most_at_once(&format!("pg-{customer}")),
            3,
            "customer {customer}"
        );
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_rate_of_50_a_second_holds_within_10_percent() {
    let app = TestApp::start("flow-rate").await;
    let id = app
        .client
        .start(FanOutLimited, fan_out("rate_limited", "rate", 1, 150, 0))
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    let starts = starts("rate");
    assert_eq!(starts.len(), 150);
    let first = starts.first().unwrap().0;
    let last = starts.last().unwrap().0;
    let rate = 149.0 / (last - first).as_secs_f64();
    assert!((45.0..=55.0).contains(&rate), "{rate:.1} starts a second");
    app.stop().await;
}

#[tokio::test]
async fn a_higher_priority_runs_before_older_waiting_work() {
    let app = TestApp::start("flow-priority").await;
    let id = app
        .client
        .start(Prioritized, "prio".to_owned())
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    let order: Vec<String> = starts("prio").into_iter().map(|(_, label)| label).collect();
    assert_eq!(
        order,
        [
            "blocker", "high", "low-0", "low-1", "low-2", "low-3", "low-4"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn limits_set_at_runtime_override_the_declared_ones_and_bad_ones_are_refused() {
    // Overridden to 1 at once per customer.
    let app = TestApp::start_with("flow-override", |builder| {
        builder.flow_control(
            PerCustomer,
            FlowControl::new().concurrency(1).key("/customer"),
        )
    })
    .await;
    let id = app
        .client
        .start(FanOutLimited, fan_out("per_customer", "ov", 2, 40, 10))
        .await
        .unwrap();
    app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(most_at_once("ov-0"), 1);
    assert_eq!(most_at_once("ov-1"), 1);
    let (dir, store) = app.stop().await;

    let refused = |limits: FlowControl| {
        let store = store.clone();
        async move {
            Runtime::builder(store)
                .flow_control(PerCustomer, limits)
                .start()
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let message = refused(FlowControl::new().concurrency(0)).await;
    assert!(
        message.contains("activity `per_customer`") && message.contains("concurrency limit of 0"),
        "{message}"
    );
    let message = refused(FlowControl::new().rate(0, Duration::from_secs(1))).await;
    assert!(message.contains("rate of 0"), "{message}");
    let message = refused(FlowControl::new().rate(5, Duration::ZERO)).await;
    assert!(message.contains("period"), "{message}");
    let message = refused(FlowControl::new().concurrency(2).key("customer")).await;
    assert!(message.contains("not a JSON pointer"), "{message}");
    drop(dir);
}

/// What an operator sees of held-back work: the `flow` command, `GET /flow` and `/metrics`,
/// from a real `serve` process.
#[test]
fn held_back_work_shows_in_the_flow_command_the_api_and_metrics() {
    use duractor_tests::{Server, TempDir, cli, wait_until};
    const APP: &str = env!("CARGO_BIN_EXE_bounded_app");
    let dir = TempDir::new("flow-visible");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(APP, &db, &[], &[]);
    let started = server.post(
        "/orchestrators/fan_out_limited/seen",
        r#"{"activity": "per_customer", "prefix": "seen", "keys": 1, "count": 9, "ms": 2000}"#,
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let row = wait_until("3 running and the rest waiting", WAIT, || {
        let flow = server.get("/flow?activity=per_customer").json();
        let row = flow["flow"]
            .as_array()?
            .iter()
            .find(|r| r["key"] == "seen-0")?
            .clone();
        (row["running"] == 3 && row["waiting"] == 6).then_some(row)
    });
    assert_eq!(row["name"], "per_customer");

    let table = cli(APP, &db, &["flow"]).expect_code(0);
    let line = table
        .stdout
        .lines()
        .find(|line| line.contains("seen-0"))
        .unwrap_or_else(|| panic!("no row for seen-0:\n{}", table.stdout));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[..4], ["per_customer", "seen-0", "3", "6"], "{line}");
    assert!(line.contains("3 at once, per /customer"), "{line}");
    let json = cli(APP, &db, &["flow", "--activity", "per_customer", "--json"]).expect_code(0);
    assert_eq!(json.json()["flow"][0]["key"], "seen-0");

    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains(r#"duractor_flow_running{activity="per_customer",key="seen-0"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"duractor_flow_waiting{activity="per_customer",key="seen-0"} 6"#),
        "{metrics}"
    );
    let done = wait_until("the fan-out to finish", WAIT, || {
        let status = server.get("/instances/seen").json();
        (status["runtimeStatus"] == "Completed").then_some(status)
    });
    assert_eq!(done["output"], 9);
}
