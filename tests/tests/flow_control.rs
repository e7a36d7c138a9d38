//! Flow control: 1,000 calls limited to 3 at once per customer over 10 customers never run
//! more than 3 at once per customer (measured by the activities themselves), on SQLite and on
//! PostgreSQL with two workers (sharing one store, and on two stores of their own); a rate of 50 a second holds within 10 %; a priority reorders
//! waiting work; what is held back is visible; bad limits are clear errors. The same for
//! orchestrations: instances beyond their orchestrator's limits wait Pending and run in turn,
//! started by a client or as sub-orchestrations, across a restart and across two workers.

use std::time::Duration;

use duractor::Event;
use duractor::flow::FlowControl;
use duractor::prelude::*;
use duractor::store::FlowKind;
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
use duractor_tests::flow::{
    FanOut, FanOutLimited, LimitedJob, LimitedJobs, OneJobAtATime, PerCustomer, Prioritized, Work,
    most_at_once, starts,
};
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn job(customer: &str, ms: u64) -> Work {
    Work {
        customer: customer.to_owned(),
        tag: customer.to_owned(),
        ms,
    }
}

/// Starts `count` [`LimitedJob`]s for each customer; returns their ids.
async fn start_jobs(client: &Client, customers: &[&str], count: u32, ms: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        for customer in customers {
            let id = format!("{customer}-{i}");
            client
                .start(LimitedJob, job(customer, ms))
                .instance_id(&id)
                .await
                .unwrap();
            ids.push(id);
        }
    }
    ids
}

/// The test PostgreSQL server's URL, a schema of its own (`{prefix}_{pid}`) and a store on
/// it; `None` (with a notice) when `DURACTOR_TEST_POSTGRES_URL` is not set.
async fn postgres(prefix: &str, test: &str) -> Option<(String, String, PostgresStore)> {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping {test}");
        return None;
    };
    let schema = format!("{prefix}_{}", std::process::id());
    let store = store_on(&url, &schema).await;
    Some((url, schema, store))
}

/// A store (with its own writer and connections) on `schema`.
async fn store_on(url: &str, schema: &str) -> PostgresStore {
    let options = PostgresStoreOptions {
        schema: schema.to_owned(),
        ..Default::default()
    };
    PostgresStore::connect_with(url, options).await.unwrap()
}

/// Runs 1,000 calls over 10 customers (`{prefix}-{n}`) limited to 3 at once per customer
/// on `workers` and checks that each customer had exactly 3 running at once at most; then
/// shuts the workers down.
async fn three_at_once_per_customer(workers: Vec<Runtime>, prefix: &str) {
    let client = workers[0].client();
    let id = client
        .start(
            FanOutLimited,
            fan_out("per_customer", prefix, 10, 1_000, 20),
        )
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    for customer in 0..10 {
        assert_eq!(
            most_at_once(&format!("{prefix}-{customer}")),
            3,
            "customer {customer}"
        );
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

/// Two runtimes in this process on `store`.
async fn two_workers(store: &PostgresStore) -> Vec<Runtime> {
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
    workers
}

async fn all_completed(client: &Client, ids: &[String]) {
    for id in ids {
        let status = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(status.status, RuntimeStatus::Completed, "{id}: {status:?}");
    }
}

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
    let Some((_, _, store)) = postgres("flow", "the PostgreSQL flow-control test").await else {
        return;
    };
    duractor_tests::init_tracing();
    three_at_once_per_customer(two_workers(&store).await, "pg").await;
}

/// The same limit across two stores (each with its own writer and connections, as two
/// processes have), where only the server can keep their claims apart.
#[tokio::test]
async fn a_per_customer_limit_holds_across_two_stores_on_postgresql() {
    let Some((url, schema, store)) =
        postgres("flowx", "the PostgreSQL two-store flow-control test").await
    else {
        return;
    };
    duractor_tests::init_tracing();
    let mut workers = Vec::new();
    for store in [store, store_on(&url, &schema).await] {
        workers.push(
            Runtime::builder(store)
                .poll_interval(Duration::from_millis(20))
                .start()
                .await
                .unwrap(),
        );
    }
    three_at_once_per_customer(workers, "px").await;
}

/// An idle worker with limited activities sends its store no claims (it used to claim every
/// 20 ms for ever); limited work its turns queue is claimed at once, and while limits hold
/// some back the worker looks again as they free up. The poll is an hour away here, so only
/// those claims can run the 60 calls (3 at once per customer, 20 ms each).
#[tokio::test]
async fn an_idle_worker_with_limited_activities_makes_no_claims_and_queued_work_still_runs() {
    let app = TestApp::start_with("flow-idle", |builder| {
        builder.poll_interval(Duration::from_secs(3600))
    })
    .await;
    let claims = || app.runtime.metrics().activity_claims;
    // The first poll's claim, at start.
    eventually("the first claim", WAIT, || async {
        (claims() > 0).then_some(())
    })
    .await;
    let idle = claims();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(claims(), idle, "an idle worker claimed activity work");

    let id = app
        .client
        .start(FanOutLimited, fan_out("per_customer", "idle", 2, 60, 20))
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    for customer in 0..2 {
        assert_eq!(most_at_once(&format!("idle-{customer}")), 3);
    }
    assert!(
        claims() > idle + 10,
        "the held-back calls were claimed as slots freed"
    );

    // Nothing waits any more: the claims stop again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = claims();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        claims(),
        done,
        "a worker with nothing waiting claimed activity work"
    );
    app.stop().await;
}

/// Naps `ms` (no limits).
#[activity]
async fn unlimited_nap(_ctx: ActivityContext, ms: u64) -> Result<(), duractor::Error> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// A 300 ms call without limits beside a limited one.
#[orchestrator]
async fn nap_beside_a_limited_call(
    ctx: OrchestrationContext,
    customer: String,
) -> Result<(), duractor::Error> {
    let nap = ctx.call_activity(UnlimitedNap, 300);
    let limited = ctx.call_activity(PerCustomer, job(&customer, 0));
    let (nap, limited) = ctx.join(nap, limited).await;
    nap.and(limited)
}

/// Limited work queued while the worker's every slot is busy is claimed when one frees, not
/// left to the poll (an hour away here): the worker's one slot runs the nap, and the limited
/// call's claim waits for it.
#[tokio::test]
async fn limited_work_queued_while_every_slot_is_busy_starts_when_one_frees() {
    let app = TestApp::start_with("flow-busy", |builder| {
        builder
            .poll_interval(Duration::from_secs(3600))
            .activity_concurrency(1)
    })
    .await;
    let id = app
        .client
        .start(NapBesideALimitedCall, "busy".to_owned())
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    app.stop().await;
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

    // Orchestrations held back by their orchestrator's limits: the same three views.
    for i in 0..4 {
        let started = server.post(
            &format!("/orchestrators/limited_job/vis-{i}"),
            r#"{"customer": "vis", "tag": "vis", "ms": 3000}"#,
        );
        assert_eq!(started.status, 202, "{}", started.body);
    }
    let row = wait_until("2 instances running and 2 held", WAIT, || {
        let flow = server.get("/flow?name=limited_job").json();
        let row = flow["flow"]
            .as_array()?
            .iter()
            .find(|r| r["key"] == "vis")?
            .clone();
        (row["running"] == 2 && row["waiting"] == 2).then_some(row)
    });
    assert_eq!(row["kind"], "orchestration");
    let held = server.get("/instances/vis-3").json();
    assert_eq!(held["runtimeStatus"], "Pending", "{held}");
    let why = server.get("/instances/vis-3/waiting").json();
    assert_eq!(
        why["flowControl"],
        serde_json::json!({
            "orchestrator": "limited_job",
            "key": "vis",
            "limits": {"concurrency": 2, "rate": null, "key": "/customer"},
            "running": 2,
            "waiting": 2,
        }),
        "{why}"
    );
    let table = cli(APP, &db, &["flow", "--name", "limited_job"]).expect_code(0);
    let line = table
        .stdout
        .lines()
        .find(|line| line.contains("vis"))
        .unwrap_or_else(|| panic!("no row for vis:\n{}", table.stdout));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[..4], ["limited_job", "vis", "2", "2"], "{line}");
    assert!(line.contains("2 at once, per /customer"), "{line}");
    assert!(line.ends_with("orchestrator"), "{line}");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains(r#"duractor_flow_waiting{orchestrator="limited_job",key="vis"} 2"#),
        "{metrics}"
    );
    let functions = server.get("/functions").json();
    let limited = functions["orchestrators"]
        .as_array()
        .and_then(|list| list.iter().find(|o| o["name"] == "limited_job"))
        .cloned()
        .unwrap();
    assert_eq!(
        limited["flowControl"],
        serde_json::json!({"concurrency": 2, "rate": null, "key": "/customer"})
    );

    let done = wait_until("the fan-out to finish", WAIT, || {
        let status = server.get("/instances/seen").json();
        (status["runtimeStatus"] == "Completed").then_some(status)
    });
    assert_eq!(done["output"], 9);
}

#[tokio::test]
async fn orchestrations_beyond_their_limit_wait_pending_and_run_two_at_a_time_per_customer() {
    let app = TestApp::start("flow-orchestrations").await;
    let ids = start_jobs(&app.client, &["oa", "ob"], 8, 300).await;
    // Two per customer run; the rest wait, Pending, and are shown as held.
    let held = eventually("instances held back", WAIT, || async {
        let status = app.client.flow_status(&["limited_job"]).await.unwrap();
        (status.len() == 2 && status.iter().all(|s| s.running == 2 && s.waiting > 0))
            .then_some(status)
    })
    .await;
    assert!(
        held.iter().all(|s| s.kind == FlowKind::Orchestration),
        "{held:?}"
    );
    let pending = app.client.status("oa-7").await.unwrap();
    assert_eq!(pending.status, RuntimeStatus::Pending);

    // A held instance terminated ends at once, not when a slot frees.
    app.client.terminate("ob-7", "not needed").await.unwrap();
    let ended = app
        .client
        .wait_for_completion("ob-7", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ended.status, RuntimeStatus::Terminated);
    assert_eq!(
        app.client.status("oa-7").await.unwrap().status,
        RuntimeStatus::Pending,
        "the others still wait for their turn"
    );

    let ids: Vec<String> = ids.into_iter().filter(|id| id != "ob-7").collect();
    all_completed(&app.client, &ids).await;
    assert_eq!(most_at_once("job:oa"), 2);
    assert_eq!(most_at_once("job:ob"), 2);
    app.stop().await;
}

#[tokio::test]
async fn sub_orchestrations_are_held_like_any_start() {
    let app = TestApp::start("flow-children").await;
    let id = app
        .client
        .start(LimitedJobs, ("sub".to_owned(), 6, 200))
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    assert_eq!(most_at_once("job:sub"), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_higher_priority_start_runs_before_older_held_ones() {
    let app = TestApp::start("flow-orchestration-priority").await;
    let client = &app.client;
    client
        .start(
            OneJobAtATime,
            Work {
                tag: "oprio".into(),
                ..job("blocker", 500)
            },
        )
        .await
        .unwrap();
    eventually("the blocker to run", WAIT, || async {
        (starts("oprio").len() == 1).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let low = Work {
            tag: "oprio".into(),
            ..job(&format!("low-{i}"), 0)
        };
        ids.push(client.start(OneJobAtATime, low).priority(0).await.unwrap());
    }
    let high = Work {
        tag: "oprio".into(),
        ..job("high", 0)
    };
    ids.push(
        client
            .start(OneJobAtATime, high)
            .priority(10)
            .await
            .unwrap(),
    );
    all_completed(client, &ids).await;
    let order: Vec<String> = starts("oprio")
        .into_iter()
        .map(|(_, label)| label)
        .collect();
    assert_eq!(order, ["blocker", "high", "low-0", "low-1", "low-2"]);
    app.stop().await;
}

#[tokio::test]
async fn held_instances_stay_held_across_a_restart_and_then_run_in_turn() {
    let app = TestApp::start("flow-restart").await;
    let ids = start_jobs(&app.client, &["rs"], 6, 400).await;
    eventually("instances held back", WAIT, || async {
        let status = app.client.flow_status(&["limited_job"]).await.unwrap();
        status
            .iter()
            .any(|s| s.running == 2 && s.waiting == 4)
            .then_some(())
    })
    .await;
    let (dir, store) = app.stop().await;
    // The new worker resets the leases the old one left; the held instances stay held.
    let runtime = Runtime::builder(store.clone())
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    all_completed(&client, &ids).await;
    assert_eq!(most_at_once("job:rs"), 2);
    runtime.shutdown().await.unwrap();
    drop(dir);
}

#[tokio::test]
async fn an_orchestration_limit_holds_across_two_workers_on_postgresql() {
    let Some((_, _, store)) =
        postgres("oflow", "the PostgreSQL orchestration flow-control test").await
    else {
        return;
    };
    let workers = two_workers(&store).await;
    // Started from both workers' clients.
    let mut ids = start_jobs(&workers[0].client(), &["pa"], 6, 200).await;
    ids.extend(start_jobs(&workers[1].client(), &["pb"], 6, 200).await);
    all_completed(&workers[0].client(), &ids).await;
    assert_eq!(most_at_once("job:pa"), 2);
    assert_eq!(most_at_once("job:pb"), 2);
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn orchestration_limits_set_at_runtime_override_the_declared_ones_and_bad_ones_are_refused() {
    let app = TestApp::start_with("flow-orchestration-override", |builder| {
        builder.orchestrator_flow_control(
            LimitedJob,
            FlowControl::new().concurrency(1).key("/customer"),
        )
    })
    .await;
    assert_eq!(
        app.client.orchestrator_flow_limits()["limited_job"].concurrency,
        Some(1)
    );
    let ids = start_jobs(&app.client, &["ov1"], 4, 50).await;
    all_completed(&app.client, &ids).await;
    assert_eq!(most_at_once("job:ov1"), 1);
    let (dir, store) = app.stop().await;
    let message = Runtime::builder(store.clone())
        .orchestrator_flow_control(LimitedJob, FlowControl::new().concurrency(0))
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("orchestrator `limited_job`")
            && message.contains("concurrency limit of 0"),
        "{message}"
    );
    // Without limits it runs all at once.
    let runtime = Runtime::builder(store.clone())
        .no_orchestrator_flow_control(LimitedJob)
        .start()
        .await
        .unwrap();
    let ids = start_jobs(&runtime.client(), &["free"], 4, 300).await;
    all_completed(&runtime.client(), &ids).await;
    assert_eq!(most_at_once("job:free"), 4);
    // A client of another configuration (here: the declared limits) holds its starts; a
    // worker without limits on the orchestrator finds them and lets them run, rather than
    // leave them Pending for ever.
    let other = Client::new(store.clone());
    let held = start_jobs(&other, &["stranded"], 3, 0).await;
    let status = other.flow_status(&["limited_job"]).await.unwrap();
    assert!(
        status
            .iter()
            .any(|s| s.key.as_deref() == Some("stranded") && s.waiting > 0),
        "{status:?}"
    );
    all_completed(&runtime.client(), &held).await;
    runtime.shutdown().await.unwrap();
    drop(dir);
}

/// A schedule's runs are starts like any other: an orchestrator limited to one at a time
/// runs its overlapping scheduled runs one after another, the rest held (Pending).
#[tokio::test]
async fn scheduled_runs_of_a_limited_orchestrator_wait_their_turn() {
    use duractor::schedule::{Overlap, Schedule};
    let app = TestApp::start("flow-schedule").await;
    let work = Work {
        tag: "sched".into(),
        ..job("sched", 2_500)
    };
    let schedule = Schedule::every("limited-every-second", Duration::from_secs(1))
        .overlap(Overlap::AllowAll)
        .start(OneJobAtATime, work);
    app.client.create_schedule(&schedule).await.unwrap();
    let held = eventually("scheduled runs held back", WAIT, || async {
        let status = app
            .client
            .flow_status(&["one_job_at_a_time"])
            .await
            .unwrap();
        status
            .iter()
            .any(|s| s.running == 1 && s.waiting >= 2)
            .then_some(status)
    })
    .await;
    assert!(held.iter().all(|s| s.running <= 1), "{held:?}");
    let status = app
        .client
        .schedule("limited-every-second")
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.running.len() >= 3,
        "the schedule started them all (AllowAll): {status:?}"
    );
    app.client
        .delete_schedule("limited-every-second")
        .await
        .unwrap();
    assert_eq!(most_at_once("job:sched"), 1);
    app.stop().await;
}

/// Two worker processes on one PostgreSQL schema, instances started by a client of a third
/// (which only knows the declared limits): admissions in either process, seen by the other
/// through the server (no shared memory), keep 2 at once per customer. Measured from the
/// store: each instance's first turn and its completion, per customer, never overlap more
/// than twice.
#[tokio::test]
async fn an_orchestration_limit_holds_across_worker_processes_on_postgresql() {
    use duractor_tests::ChildGuard;
    use std::process::{Command, Stdio};
    let Some((url, schema, store)) = postgres(
        "oflowx",
        "the cross-process orchestration flow-control test",
    )
    .await
    else {
        return;
    };
    let spawn = || {
        ChildGuard(
            Command::new(env!("CARGO_BIN_EXE_bounded_worker"))
                .args([url.as_str(), schema.as_str(), "all", "3000"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start bounded_worker"),
        )
    };
    let _workers = [spawn(), spawn()];
    let client = Client::new(store.clone());
    let ids = start_jobs(&client, &["xa", "xb"], 6, 300).await;
    all_completed(&client, &ids).await;
    for customer in ["xa", "xb"] {
        let mut spans = Vec::new();
        for id in ids.iter().filter(|id| id.starts_with(customer)) {
            let history = client.history(id).await.unwrap();
            let began = history
                .iter()
                .find_map(|event| match event {
                    Event::OrchestratorStarted { timestamp } => Some(*timestamp),
                    _ => None,
                })
                .unwrap();
            let ended = client.status(id).await.unwrap().completed_at.unwrap();
            spans.push((began, ended));
        }
        let most = spans
            .iter()
            .map(|(began, _)| {
                spans
                    .iter()
                    .filter(|(b, e)| b <= began && began < e)
                    .count()
            })
            .max()
            .unwrap();
        assert_eq!(
            most, 2,
            "{customer}: at most 2 at once, and 2 did run at once: {spans:?}"
        );
    }
}
