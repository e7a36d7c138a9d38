//! Durable schedules: a cron schedule every second with real time, each overlap policy with
//! real runs, a pause that survives a restart, a schedule declared in code reconciled at each
//! startup, each tick run once by three workers on PostgreSQL, a simulated month on the test
//! kit's clock, and bad input. The runs log their own starts and ends to a file.

use std::collections::BTreeSet;
use std::time::Duration;

use duractor::prelude::*;
use duractor::schedule::{CatchUp, Overlap, RunOutcome, Schedule, ScheduleStatus};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore};
use duractor_tests::schedules::{ScheduledRun, TickSpec};
use duractor_tests::{TempDir, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn spec(dir: &TempDir, run_ms: u64) -> TickSpec {
    TickSpec {
        log: dir.file("runs.log").to_string_lossy().into_owned(),
        run_ms,
    }
}

/// The log's lines.
fn log_lines(spec: &TickSpec) -> Vec<String> {
    std::fs::read_to_string(&spec.log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The instance ids the runs logged as started, in order.
fn started(spec: &TickSpec) -> Vec<String> {
    log_lines(spec)
        .iter()
        .filter_map(|line| line.strip_prefix("start ").map(str::to_owned))
        .collect()
}

async fn status_of(client: &Client, id: &str) -> ScheduleStatus {
    client.schedule(id).await.unwrap().expect("the schedule")
}

/// Waits until the schedule exists (a change is applied by a worker, moments after).
async fn applied(client: &Client, id: &str) -> ScheduleStatus {
    eventually("the schedule to be applied", WAIT, || async {
        client.schedule(id).await.unwrap()
    })
    .await
}

#[tokio::test]
async fn a_cron_schedule_every_second_runs_each_tick_once() {
    let app = TestApp::start("schedule-cron").await;
    let client = &app.client;
    let spec = spec(&app.dir, 0);
    let schedule = Schedule::cron("every-second", "* * * * * *").start(ScheduledRun, spec.clone());
    client.create_schedule(&schedule).await.unwrap();
    let status = applied(client, "every-second").await;
    assert!(!status.paused);
    assert!(status.next_run_at.is_some());

    let ends = eventually("three completed runs", WAIT, || async {
        let ends: Vec<String> = log_lines(&spec)
            .iter()
            .filter_map(|line| line.strip_prefix("end ").map(str::to_owned))
            .collect();
        (ends.len() >= 3).then_some(ends)
    })
    .await;
    // One run per second, named by its tick, none twice.
    let ticks: Vec<chrono::DateTime<chrono::Utc>> = ends
        .iter()
        .map(|id| {
            id.strip_prefix("every-second@")
                .expect("a run id names the schedule")
                .parse()
                .expect("and the tick")
        })
        .collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{ends:?}");
    }
    let starts = started(&spec);
    let unique: BTreeSet<&String> = starts.iter().collect();
    assert_eq!(unique.len(), starts.len(), "a tick ran twice: {starts:?}");
    // A run logs its end from its last activity, a moment before its completion commits.
    for id in &ends {
        let run = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(run.status, RuntimeStatus::Completed);
        assert_eq!(run.name, "scheduled_run");
    }
    let status = status_of(client, "every-second").await;
    assert!(status.started >= 3, "{status:?}");
    assert!(
        status
            .recent
            .iter()
            .any(|run| run.outcome == RunOutcome::Completed && ends.contains(&run.instance_id)),
        "{status:?}"
    );

    // Deleted: no more runs.
    client.delete_schedule("every-second").await.unwrap();
    eventually("the schedule to be deleted", WAIT, || async {
        client
            .schedule("every-second")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = started(&spec).len();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(started(&spec).len(), count, "a deleted schedule still ran");
    assert!(client.list_schedules().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn each_overlap_policy_with_runs_longer_than_the_interval() {
    let app = TestApp::start("schedule-overlap").await;
    let client = &app.client;
    let spec = spec(&app.dir, 2_500);
    let policies = [
        ("skip", Overlap::Skip),
        ("buffer", Overlap::BufferOne),
        ("all", Overlap::AllowAll),
        ("terminate", Overlap::TerminatePrevious),
    ];
    for (id, overlap) in policies {
        let schedule = Schedule::every(id, Duration::from_secs(1))
            .overlap(overlap)
            .start(ScheduledRun, spec.clone());
        client.create_schedule(&schedule).await.unwrap();
    }
    // Sample the schedules for five seconds: how many run at once under each policy.
    let mut most_running = std::collections::BTreeMap::<&str, usize>::new();
    let mut buffered_seen = false;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        for (id, _) in policies {
            if let Some(status) = client.schedule(id).await.unwrap() {
                let most = most_running.entry(id).or_default();
                *most = (*most).max(status.running.len());
                if id == "buffer" && status.buffered.is_some() {
                    buffered_seen = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skip = status_of(client, "skip").await;
    assert_eq!(most_running["skip"], 1);
    assert!(skip.skipped >= 2, "{skip:?}");
    assert!(
        skip.recent
            .iter()
            .any(|run| run.outcome == RunOutcome::Skipped),
        "{skip:?}"
    );

    assert_eq!(most_running["buffer"], 1);
    assert!(buffered_seen, "a tick waited for the running run");
    let buffer = status_of(client, "buffer").await;
    assert!(buffer.skipped >= 1, "{buffer:?}");

    assert!(most_running["all"] >= 2, "{most_running:?}");

    let terminate = status_of(client, "terminate").await;
    let terminated = terminate
        .recent
        .iter()
        .find(|run| run.outcome == RunOutcome::Failed)
        .expect("a run ended by the next one");
    let run = client.status(&terminated.instance_id).await.unwrap();
    assert_eq!(run.status, RuntimeStatus::Terminated, "{run:?}");

    // Under skip and buffer-one no two runs ever overlapped, by the runs' own log.
    for id in ["skip", "buffer"] {
        let mut open = 0;
        for line in log_lines(&spec) {
            if line.starts_with(&format!("start {id}@")) {
                open += 1;
                assert!(open <= 1, "two {id} runs at once");
            } else if line.starts_with(&format!("end {id}@")) {
                open -= 1;
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_paused_schedule_stays_paused_across_a_restart_and_resumes() {
    let app = TestApp::start("schedule-pause").await;
    let spec = spec(&app.dir, 0);
    // Every run may overlap: the trigger below comes while the resumed tick's run may still
    // be running, and under the default policy (skip) it would be skipped, as documented.
    let schedule = Schedule::every("paused", Duration::from_secs(1))
        .overlap(Overlap::AllowAll)
        .start(ScheduledRun, spec.clone());
    app.client.create_schedule(&schedule).await.unwrap();
    applied(&app.client, "paused").await;
    app.client
        .pause_schedule("paused", Some("maintenance"))
        .await
        .unwrap();
    let at_pause = eventually("the pause to apply", WAIT, || async {
        let status = status_of(&app.client, "paused").await;
        status.paused.then_some(status)
    })
    .await;
    let paused_at = chrono::Utc::now();
    let (dir, store) = app.stop().await;

    // A new worker on the same file: still paused, nothing new runs. A run its last tick
    // started before the pause applied may still be finishing (and log its start only now),
    // so the check is on what the schedule started and on the ticks the runs are named by.
    let runtime = Runtime::builder(store.clone())
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let status = status_of(&client, "paused").await;
    assert_eq!(status.started, at_pause.started, "a paused schedule ran");
    let ticked_while_paused: Vec<String> = started(&spec)
        .into_iter()
        .filter(|id| {
            let tick: chrono::DateTime<chrono::Utc> = id
                .strip_prefix("paused@")
                .and_then(|tick| tick.parse().ok())
                .expect("a run id names the schedule and its tick");
            tick > paused_at
        })
        .collect();
    assert_eq!(
        ticked_while_paused,
        Vec::<String>::new(),
        "a paused schedule ran"
    );
    let before = started(&spec).len();
    assert!(status.paused);
    assert_eq!(status.note.as_deref(), Some("maintenance"));
    assert_eq!(status.next_run_at, None);

    client.resume_schedule("paused").await.unwrap();
    eventually("a run after the resume", WAIT, || async {
        (started(&spec).len() > before).then_some(())
    })
    .await;
    let status = status_of(&client, "paused").await;
    assert!(!status.paused);
    assert_eq!(status.note, None);

    // Triggered now, and backfilled over a past range.
    client.trigger_schedule("paused").await.unwrap();
    eventually("the triggered run", WAIT, || async {
        started(&spec)
            .iter()
            .any(|id| id.starts_with("paused@") && id.contains("-now"))
            .then_some(())
    })
    .await;
    let from: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:04Z".parse().unwrap();
    client.backfill_schedule("paused", from, to).await.unwrap();
    eventually("the five backfilled runs", WAIT, || async {
        let runs = started(&spec);
        let backfilled: Vec<&String> = runs
            .iter()
            .filter(|id| id.starts_with("paused@2026-01-01T00:00:0"))
            .collect();
        (backfilled.len() == 5).then_some(())
    })
    .await;
    runtime.shutdown().await.unwrap();
    drop(dir);
}

#[tokio::test]
async fn a_schedule_declared_in_code_is_created_once_and_updated_when_it_changes() {
    let dir = TempDir::new("schedule-declared");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    let spec = spec(&dir, 0);
    let declared = || {
        Schedule::cron("declared", "0 0 3 * * *")
            .time_zone("Europe/Paris")
            .start(ScheduledRun, spec.clone())
    };
    let start = |schedule: Schedule| {
        let store = store.clone();
        async move {
            Runtime::builder(store)
                .poll_interval(Duration::from_millis(100))
                .schedule(schedule)
                .start()
                .await
                .unwrap()
        }
    };
    let runtime = start(declared()).await;
    let first = applied(&runtime.client(), "declared").await;
    runtime
        .client()
        .pause_schedule("declared", None)
        .await
        .unwrap();
    eventually("the pause to apply", WAIT, || async {
        status_of(&runtime.client(), "declared")
            .await
            .paused
            .then_some(())
    })
    .await;
    runtime.shutdown().await.unwrap();

    // The same declaration at the next startup changes nothing: one schedule, still paused.
    let runtime = start(declared()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = runtime.client();
    let schedules = client.list_schedules().await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert!(schedules[0].paused, "a restart undid the pause");
    assert_eq!(schedules[0].spec, first.spec);
    client.resume_schedule("declared").await.unwrap();
    let resumed = eventually("the resume to apply", WAIT, || async {
        let status = status_of(&client, "declared").await;
        (!status.paused).then_some(status)
    })
    .await;
    assert_eq!(resumed.next_run_at, first.next_run_at);
    runtime.shutdown().await.unwrap();

    // A changed declaration updates it.
    let runtime = start(declared().overlap(Overlap::AllowAll)).await;
    let client = runtime.client();
    let updated = eventually("the update to apply", WAIT, || async {
        let status = status_of(&client, "declared").await;
        (status.spec.overlap == Overlap::AllowAll).then_some(status)
    })
    .await;
    assert_eq!(client.list_schedules().await.unwrap().len(), 1);
    assert_eq!(updated.next_run_at, first.next_run_at);
    runtime.shutdown().await.unwrap();

    // A bad declaration fails the start, naming the problem.
    let bad = Runtime::builder(store.clone())
        .schedule(Schedule::cron("bad", "0 0 3 * * * * *").start(ScheduledRun, spec.clone()))
        .start()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("has 8 fields"), "{bad}");
}

#[tokio::test]
async fn three_workers_on_postgresql_run_each_tick_once() {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping the PostgreSQL schedule test");
        return;
    };
    duractor_tests::init_tracing();
    let dir = TempDir::new("schedule-pg");
    let options = PostgresStoreOptions {
        schema: format!("schedules_{}", std::process::id()),
        ..Default::default()
    };
    let store = PostgresStore::connect_with(&url, options).await.unwrap();
    let spec = spec(&dir, 0);
    let mut workers = Vec::new();
    for _ in 0..3 {
        // Each declares the schedule, as three copies of one app would.
        let runtime = Runtime::builder(store.clone())
            .poll_interval(Duration::from_millis(100))
            .schedule(
                Schedule::cron("pg-every-second", "* * * * * *")
                    .catch_up(CatchUp::Window(Duration::from_secs(10)))
                    .start(ScheduledRun, spec.clone()),
            )
            .start()
            .await
            .unwrap();
        workers.push(runtime);
    }
    let client = workers[0].client();
    let ids = eventually("six runs", WAIT, || async {
        let ids = started(&spec);
        (ids.len() >= 6).then_some(ids)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ids = {
        let all = started(&spec);
        assert!(all.len() >= ids.len());
        all
    };
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a tick ran twice: {ids:?}");
    // No tick between the first and the last was missed.
    let ticks: Vec<chrono::DateTime<chrono::Utc>> = unique
        .iter()
        .map(|id| {
            id.strip_prefix("pg-every-second@")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{ids:?}");
    }
    assert_eq!(client.list_schedules().await.unwrap().len(), 1);
    for runtime in workers {
        runtime.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bad_schedules_are_clear_errors() {
    let app = TestApp::start("schedule-bad").await;
    let client = &app.client;
    let spec = spec(&app.dir, 0);
    let error = |schedule: Schedule| {
        let client = client.clone();
        async move {
            client
                .create_schedule(&schedule)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let message = error(Schedule::cron("c", "* * *").start(ScheduledRun, spec.clone())).await;
    assert!(
        message.contains("schedule `c`") && message.contains("has 3 fields"),
        "{message}"
    );
    let message = error(Schedule::cron("c", "61 * * * *").start(ScheduledRun, spec.clone())).await;
    assert!(
        message.contains("minute `61`: 61 is out of range 0-59"),
        "{message}"
    );
    let message = error(
        Schedule::cron("c", "0 3 * * *")
            .time_zone("Mars/Olympus")
            .start(ScheduledRun, spec.clone()),
    )
    .await;
    assert!(
        message.contains("unknown time zone `Mars/Olympus`"),
        "{message}"
    );
    let message =
        error(Schedule::every("i", Duration::ZERO).start(ScheduledRun, spec.clone())).await;
    assert!(
        message.contains("an interval of 0 ms is too short"),
        "{message}"
    );
    let message = error(Schedule::cron("c", "0 0 30 2 *").start(ScheduledRun, spec.clone())).await;
    assert!(message.contains("matches no time"), "{message}");
    let message = error(Schedule::cron("c", "@daily")).await;
    assert!(message.contains("starts nothing"), "{message}");
    let message =
        error(Schedule::cron("c", "@daily").start_by_name("nope", serde_json::json!(1))).await;
    assert!(
        message.contains("no orchestrator named `nope`"),
        "{message}"
    );
    let message =
        error(Schedule::cron("c", "@daily").start_by_name("scheduled_run", serde_json::json!("x")))
            .await;
    assert!(message.contains("input"), "{message}");

    let good = Schedule::cron("good", "@daily").start(ScheduledRun, spec.clone());
    client.create_schedule(&good).await.unwrap();
    applied(client, "good").await;
    let taken = client.create_schedule(&good).await.unwrap_err();
    assert!(
        matches!(taken, duractor::Error::ScheduleExists(ref id) if id == "good"),
        "{taken}"
    );
    let missing = client.pause_schedule("nobody", None).await.unwrap_err();
    assert!(
        matches!(missing, duractor::Error::ScheduleNotFound(_)),
        "{missing}"
    );
    let backwards = client
        .backfill_schedule(
            "good",
            chrono::Utc::now(),
            chrono::Utc::now() - chrono::Duration::hours(1),
        )
        .await
        .unwrap_err();
    assert!(
        backwards.to_string().contains("runs backwards"),
        "{backwards}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_month_of_a_daily_schedule_on_the_test_kits_clock() {
    use duractor::testing::TestRuntime;
    let start: chrono::DateTime<chrono::Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let t = TestRuntime::builder()
        .start_time(start)
        .real_time_limit(Duration::from_secs(20))
        .start()
        .await;
    let quiet = TickSpec {
        log: "-".to_owned(),
        run_ms: 60_000,
    };
    let schedule = Schedule::cron("daily", "0 0 9 * * *")
        .time_zone("Europe/Paris")
        .start(ScheduledRun, quiet);
    t.client().create_schedule(&schedule).await.unwrap();
    t.advance(Duration::from_secs(31 * 86_400)).await;

    let status = status_of(t.client(), "daily").await;
    assert_eq!(status.started, 31, "{status:?}");
    assert_eq!(
        status.next_run_at,
        Some("2026-04-01T07:00:00Z".parse().unwrap())
    );
    // 09:00 in Paris: 08:00 UTC until the clocks change on 29 March, 07:00 UTC after.
    for (day, hour) in [(1, 8), (28, 8), (29, 7), (31, 7)] {
        let id = format!("daily@2026-03-{day:02}T{hour:02}:00:00Z");
        let run = t.status(&id).await;
        assert_eq!(run.status, RuntimeStatus::Completed, "{id}");
        let expected: chrono::DateTime<chrono::Utc> = id["daily@".len()..].parse().unwrap();
        assert_eq!(run.created_at, expected, "{id} started at its tick");
    }
    assert!(
        status
            .recent
            .iter()
            .all(|run| run.outcome == RunOutcome::Completed)
    );
    t.shutdown().await;
}

#[test]
fn schedules_over_http_and_the_command_line() {
    use duractor_tests::{Server, cli, wait_until};
    const APP: &str = env!("CARGO_BIN_EXE_bounded_app");
    let dir = TempDir::new("schedule-http");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(APP, &db, &[], &[]);
    let log = dir.file("runs.log").to_string_lossy().into_owned();
    let body = serde_json::json!({
        "id": "web",
        "orchestrator": "scheduled_run",
        "input": {"log": log, "run_ms": 0},
        "timing": {"every": {"everyMs": 1000}},
        "overlap": "bufferOne",
    });
    let created = server.post("/schedules", &body.to_string());
    assert_eq!(created.status, 202, "{}", created.body);
    server
        .post("/schedules", &body.to_string())
        .expect_error(409, "schedule_exists");
    let web = wait_until("the schedule to run", WAIT, || {
        let answer = server.get("/schedules/web");
        (answer.status == 200).then_some(())?;
        let status = answer.json();
        (status["started"].as_u64()? >= 1).then_some(status)
    });
    assert_eq!(web["spec"]["overlap"], "bufferOne");
    assert_eq!(web["paused"], false);
    assert!(web["nextRunAt"].is_string(), "{web}");
    let listed = server.get("/schedules").json();
    assert_eq!(listed["schedules"][0]["spec"]["id"], "web");

    // Paused over HTTP, seen on the command line.
    let paused = server.post("/schedules/web/pause?note=deploying", "");
    assert_eq!(paused.status, 202, "{}", paused.body);
    wait_until("the pause to apply", WAIT, || {
        (server.get("/schedules/web").json()["paused"] == true).then_some(())
    });
    let shown = cli(APP, &db, &["schedule", "show", "web"]).expect_code(0);
    assert!(
        shown.stdout.contains("next run      paused"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("note          deploying"),
        "{}",
        shown.stdout
    );
    let json = cli(APP, &db, &["schedule", "show", "web", "--json"]).expect_code(0);
    assert_eq!(json.json()["note"], "deploying");

    // Created on the command line, listed over HTTP; updated with PUT.
    let made = cli(
        APP,
        &db,
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--time-zone",
            "Europe/Paris",
            "--start",
            "scheduled_run",
            "--input",
            r#"{"log": "-", "run_ms": 0}"#,
        ],
    )
    .expect_code(0);
    assert!(
        made.stdout.contains("created schedule nightly"),
        "{}",
        made.stdout
    );
    wait_until("the CLI's schedule to apply", WAIT, || {
        (server.get("/schedules/nightly").status == 200).then_some(())
    });
    let table = cli(APP, &db, &["schedule", "list"]).expect_code(0);
    assert!(
        table.stdout.contains("cron 0 3 * * * (Europe/Paris)"),
        "{}",
        table.stdout
    );
    let put = server.request(
        "PUT",
        "/schedules/nightly",
        &[("Content-Type", "application/json")],
        Some(
            br#"{"orchestrator": "scheduled_run", "input": {"log": "-", "run_ms": 0},
                 "timing": {"cron": {"cron": "0 4 * * *", "timeZone": "Europe/Paris"}}}"#,
        ),
    );
    assert_eq!(put.status, 202, "{}", put.body);
    wait_until("the update to apply", WAIT, || {
        (server.get("/schedules/nightly").json()["spec"]["timing"]["cron"]["cron"] == "0 4 * * *")
            .then_some(())
    });
    let deleted = server.request("DELETE", "/schedules/nightly", &[], None);
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    wait_until("the delete to apply", WAIT, || {
        (server.get("/schedules/nightly").status == 404).then_some(())
    });

    // Bad input: each a clear error.
    let bad = |body: serde_json::Value| server.post("/schedules", &body.to_string());
    let answer = bad(
        serde_json::json!({"id": "b", "orchestrator": "scheduled_run",
        "timing": {"cron": {"cron": "* * *"}}}),
    );
    answer.expect_error(400, "invalid_argument");
    assert!(answer.body.contains("has 3 fields"), "{}", answer.body);
    let answer = bad(
        serde_json::json!({"id": "b", "orchestrator": "scheduled_run",
        "timing": {"cron": {"cron": "@daily", "timeZone": "Nowhere/Land"}}}),
    );
    assert!(
        answer.body.contains("unknown time zone `Nowhere/Land`"),
        "{}",
        answer.body
    );
    let answer = bad(
        serde_json::json!({"id": "b", "orchestrator": "scheduled_run",
        "timing": {"every": {"everyMs": 0}}}),
    );
    assert!(answer.body.contains("too short"), "{}", answer.body);
    bad(serde_json::json!({"id": "b", "orchestrator": "nope", "timing": {"every": {"everyMs": 1000}}}))
        .expect_error(404, "unknown_orchestrator");
    server
        .post("/schedules", "{not json")
        .expect_error(400, "invalid_payload");
    server
        .get("/schedules/nobody")
        .expect_error(404, "schedule_not_found");
    server
        .post("/schedules/web/backfill?from=2026-01-01T00:00:00Z", "")
        .expect_error(400, "invalid_query");
    let refused = cli(
        APP,
        &db,
        &[
            "schedule",
            "create",
            "x",
            "--every",
            "5",
            "--start",
            "scheduled_run",
        ],
    )
    .expect_code(2);
    assert!(
        refused.stderr.contains("without a unit"),
        "{}",
        refused.stderr
    );
}
