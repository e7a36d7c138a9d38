//! The pattern apps of `examples/`, as users run them: the real binaries (built from the same
//! files as binaries of this package), on fresh SQLite files, driven through their command line
//! and their HTTP API. One of them is SIGKILLed in the middle of a run and restarted.

use std::time::Duration;

use duractor_tests::{HttpResponse, Server, TempDir, cli, wait_until};
use serde_json::{Value, json};

const CHAINING: &str = env!("CARGO_BIN_EXE_chaining");
const FAN_OUT_FAN_IN: &str = env!("CARGO_BIN_EXE_fan_out_fan_in");
const ASYNC_HTTP_API: &str = env!("CARGO_BIN_EXE_async_http_api");
const MONITOR: &str = env!("CARGO_BIN_EXE_monitor");
const HUMAN_INTERACTION: &str = env!("CARGO_BIN_EXE_human_interaction");

const WAIT: Duration = Duration::from_secs(30);

fn database(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.file("app.db").display())
}

/// Polls `GET /instances/{id}` until it answers 200 (finished) and returns the status.
fn wait_finished(server: &Server, id: &str) -> Value {
    wait_until(&format!("instance {id} to finish"), WAIT, || {
        let response = server.get(&format!("/instances/{id}"));
        match response.status {
            200 => Some(response.json()),
            202 => None,
            other => panic!("unexpected {other}: {}", response.body),
        }
    })
}

/// Polls the status until `check` accepts it.
fn wait_status(server: &Server, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, WAIT, || {
        let status = server.get(&format!("/instances/{id}")).json();
        check(&status).then_some(status)
    })
}

/// The path of a check-status URL (`http://127.0.0.1:PORT/instances/x` → `/instances/x`).
fn path_of(url: &Value) -> String {
    let url = url.as_str().unwrap_or_else(|| panic!("not a URL: {url}"));
    let rest = url.strip_prefix("http://").expect("an http URL");
    rest[rest.find('/').expect("a path")..].to_owned()
}

#[test]
fn chaining_runs_from_the_command_line_and_over_http() {
    let dir = TempDir::new("app-chaining");
    let db = database(&dir);

    // README's first command: run one orchestration in-process and print its output.
    let run = cli(CHAINING, &db, &["run", "hello_cities"]).expect_code(0);
    assert_eq!(
        run.stdout.trim(),
        r#"["Hello Tokyo!","Hello Seattle!","Hello London!"]"#
    );
    assert!(run.stderr.contains("Completed"), "{}", run.stderr);

    let functions = cli(CHAINING, &db, &["functions"]).expect_code(0);
    assert!(
        functions.stdout.lines().any(|l| l.split_whitespace().eq([
            "orchestrator",
            "hello_cities",
            "()",
            "Vec<String>"
        ])),
        "{}",
        functions.stdout
    );
    assert!(
        functions.stdout.lines().any(|l| l.split_whitespace().eq([
            "activity",
            "say_hello",
            "String",
            "String"
        ])),
        "{}",
        functions.stdout
    );

    let server = Server::start(CHAINING, &db, &[], &[]);

    // The async HTTP API: 202 with the check-status links, then poll until 200.
    let started = server.post("/orchestrators/greet_all", r#"["Oslo", "Lima"]"#);
    assert_eq!(started.status, 202, "{}", started.body);
    let links = started.json();
    let id = links["id"].as_str().expect("an id").to_owned();
    for key in [
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "purgeHistoryDeleteUri",
        "suspendPostUri",
        "resumePostUri",
    ] {
        assert!(
            links[key].as_str().is_some_and(
                |url| url.starts_with(&format!("http://{}/instances/{id}", server.addr))
            ),
            "{key}: {links}"
        );
    }
    assert_eq!(
        started.header("location"),
        links["statusQueryGetUri"].as_str()
    );
    let status = wait_until("the greeting to finish", WAIT, || {
        let response = server.get(&path_of(&links["statusQueryGetUri"]));
        (response.status == 200).then(|| response.json())
    });
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], json!(["Hello Oslo!", "Hello Lima!"]));
    assert_eq!(status["input"], json!(["Oslo", "Lima"]));

    // The CLI is a client of the same database while the server runs.
    let cli_status = cli(CHAINING, &db, &["status", &id, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(cli_status["runtimeStatus"], "Completed");
    assert_eq!(cli_status["output"], status["output"]);
    let history = cli(CHAINING, &db, &["history", &id]).expect_code(0);
    assert!(history.stdout.starts_with('#'), "{}", history.stdout);
    assert_eq!(
        history.stdout.matches("TaskCompleted").count(),
        2,
        "{}",
        history.stdout
    );
    assert!(
        history.stdout.contains("ExecutionCompleted"),
        "{}",
        history.stdout
    );
    let history_json = cli(CHAINING, &db, &["history", &id, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(history_json[0]["eventType"], "OrchestratorStarted");

    let list = cli(CHAINING, &db, &["list", "--status", "completed"]).expect_code(0);
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);
    assert!(list.stdout.contains(&id), "{}", list.stdout);

    // start --wait from another process: the server's worker runs it.
    let waited = cli(
        CHAINING,
        &db,
        &[
            "start",
            "greet_all",
            "--input",
            r#"["Rome"]"#,
            "--wait",
            "--timeout",
            "30",
        ],
    )
    .expect_code(0);
    assert_eq!(waited.stdout.trim(), r#"["Hello Rome!"]"#);

    // `run` needs the worker lock, which the server holds: a clear error and a hint.
    let refused = cli(CHAINING, &db, &["run", "hello_cities"]).expect_code(1);
    assert!(
        refused.stderr.contains("already running"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("start hello_cities --wait"),
        "{}",
        refused.stderr
    );

    // Usage errors exit 2, failures 1.
    let unknown = cli(CHAINING, &db, &["start", "nope"]).expect_code(2);
    assert!(
        unknown.stderr.contains("no orchestrator named `nope`"),
        "{}",
        unknown.stderr
    );
    let bad_json = cli(CHAINING, &db, &["start", "greet_all", "--input", "{oops"]).expect_code(2);
    assert!(
        bad_json.stderr.contains("not valid JSON"),
        "{}",
        bad_json.stderr
    );
    let wrong_type = cli(CHAINING, &db, &["start", "greet_all", "--input", "42"]).expect_code(2);
    assert!(
        wrong_type.stderr.contains("invalid input"),
        "{}",
        wrong_type.stderr
    );
    let missing = cli(CHAINING, &db, &["status", "no-such-instance"]).expect_code(1);
    assert!(
        missing.stderr.contains("no instance `no-such-instance`"),
        "{}",
        missing.stderr
    );
    cli(CHAINING, &db, &["frobnicate"]).expect_code(2);
    let help = cli(CHAINING, &db, &["--help"]).expect_code(0);
    assert!(help.stdout.contains("Usage: chaining"), "{}", help.stdout);
    assert!(help.stdout.contains("serve"), "{}", help.stdout);
    cli(CHAINING, &db, &[]).expect_code(2);

    // SIGTERM stops the server cleanly.
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn fan_out_fan_in_sums_activities_run_in_parallel() {
    let dir = TempDir::new("app-fan-out");
    let db = database(&dir);

    let run = cli(
        FAN_OUT_FAN_IN,
        &db,
        &["run", "total_size", "--input", "200"],
    )
    .expect_code(0);
    assert_eq!(
        run.stdout.trim(),
        (0..200u64).map(|f| f * 10).sum::<u64>().to_string()
    );

    let server = Server::start(FAN_OUT_FAN_IN, &db, &[], &[]);
    let started = server.post("/orchestrators/total_size/sum-500", "500");
    assert_eq!(started.status, 202, "{}", started.body);
    let status = wait_finished(&server, "sum-500");
    assert_eq!(
        status["output"],
        json!((0..500u64).map(|f| f * 10).sum::<u64>())
    );

    let history = server.get("/instances/sum-500?showHistory=true").json();
    let events = history["historyEvents"].as_array().expect("history events");
    let scheduled = events
        .iter()
        .filter(|e| e["eventType"] == "TaskScheduled")
        .count();
    assert_eq!(scheduled, 500);
    assert!(
        events.iter().all(|e| e.get("input").is_none()),
        "payloads only with showHistoryOutput"
    );

    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("duractor_activity_executions_total{outcome=\"completed\"} 500\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("duractor_queue_depth{queue=\"activities\"} 0\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("duractor_instances{status=\"Completed\"} 2\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("duractor_turn_duration_seconds_count"),
        "{}",
        metrics.body
    );
}

/// What `export_report` computes for a customer and a number of parts.
fn expected_report(customer: &str, parts: u32) -> Value {
    let mut rows = 0u64;
    let mut checksum = 0u64;
    for index in 0..parts {
        rows += 100 + u64::from(index) * 7;
        let part = customer.bytes().fold(u64::from(index) + 1, |sum, byte| {
            sum.wrapping_mul(1_099_511_628_211)
                .wrapping_add(u64::from(byte))
        });
        checksum = checksum.wrapping_mul(31).wrapping_add(part);
    }
    json!({ "customer": customer, "parts": parts, "rows": rows, "checksum": checksum })
}

#[test]
fn async_http_api_survives_sigkill_of_the_server_mid_run() {
    let dir = TempDir::new("app-async-http");
    let db = database(&dir);
    let server = Server::start(ASYNC_HTTP_API, &db, &[], &[]);

    let started = server.post(
        "/orchestrators/export_report",
        r#"{"customer": "acme", "parts": 8, "part_ms": 150}"#,
    );
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.header("retry-after"), Some("1"));
    let links = started.json();
    let id = links["id"].as_str().expect("an id").to_owned();
    let status_path = path_of(&links["statusQueryGetUri"]);

    // While it runs: 202, Location, progress in customStatus.
    let running: HttpResponse = wait_until("some parts to be exported", WAIT, || {
        let response = server.get(&status_path);
        assert!(matches!(response.status, 200 | 202), "{}", response.body);
        let done = response.json()["customStatus"]["parts_done"]
            .as_u64()
            .unwrap_or(0);
        (done >= 3).then_some(response)
    });
    assert_eq!(running.status, 202, "{}", running.body);
    assert_eq!(running.json()["runtimeStatus"], "Running");
    assert!(
        running
            .header("location")
            .is_some_and(|l| l.ends_with(&status_path))
    );

    // SIGKILL in the middle of the export; a new server on the same file carries on.
    server.kill();
    let server = Server::start(ASYNC_HTTP_API, &db, &[], &[]);
    let status = wait_finished(&server, &id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], expected_report("acme", 8));
    assert_eq!(
        status["customStatus"],
        json!({ "parts_done": 8, "parts": 8 })
    );

    // Every part was scheduled once and completed once, despite the crash.
    let history = cli(ASYNC_HTTP_API, &db, &["history", &id, "--json"])
        .expect_code(0)
        .json();
    let events = history.as_array().expect("an array of events");
    for kind in ["TaskScheduled", "TaskCompleted"] {
        let mut seqs: Vec<u64> = events
            .iter()
            .filter(|e| e["eventType"] == kind)
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..8).collect::<Vec<u64>>(), "{kind}: {history}");
    }

    // Through the CLI too, waiting with progress.
    let waited = cli(
        ASYNC_HTTP_API,
        &db,
        &[
            "start",
            "export_report",
            "--input",
            r#"{"customer": "globex", "parts": 2, "part_ms": 10}"#,
            "--wait",
        ],
    )
    .expect_code(0);
    let report: Value = serde_json::from_str(waited.stdout.trim()).expect("the report");
    assert_eq!(report, expected_report("globex", 2));

    // A failing orchestration: exit code 1 and the failure on stderr.
    let failed = cli(
        ASYNC_HTTP_API,
        &db,
        &[
            "start",
            "export_report",
            "--input",
            r#"{"customer": "x", "parts": 0}"#,
            "--wait",
        ],
    )
    .expect_code(1);
    assert!(
        failed.stderr.contains("parts must be between 1 and 1000"),
        "{}",
        failed.stderr
    );
}

#[test]
fn monitor_polls_with_timers_and_continue_as_new_until_the_file_appears() {
    let dir = TempDir::new("app-monitor");
    let db = database(&dir);
    let flag = dir.file("report.csv");
    let server = Server::start(MONITOR, &db, &[], &[]);

    let input = json!({ "path": flag.display().to_string(), "interval_ms": 100 }).to_string();
    cli(
        MONITOR,
        &db,
        &[
            "start",
            "monitor",
            "--id",
            "watch-report",
            "--input",
            &input,
        ],
    )
    .expect_code(0);

    // It keeps checking; each check is a new execution, so the history stays short. (Right
    // after a continue-as-new the new execution's history is empty until its first turn.)
    let status = wait_status(&server, "watch-report", "three checks", |s| {
        s["customStatus"].as_u64().is_some_and(|checks| checks >= 3)
    });
    assert_eq!(status["runtimeStatus"], "Running");
    let history = wait_until("a later execution's history", WAIT, || {
        let history = server
            .get("/instances/watch-report?showHistory=true")
            .json();
        let events = history["historyEvents"].as_array()?;
        events
            .iter()
            .any(|e| e["eventType"] == "ExecutionStarted" && e["execution"].as_u64() >= Some(2))
            .then_some(history.clone())
    });
    let events = history["historyEvents"].as_array().expect("history events");
    assert!(
        events.len() < 12,
        "continue_as_new keeps the history short: {history}"
    );

    std::fs::write(&flag, "a,b\n").expect("create the watched file");
    let status = wait_finished(&server, "watch-report");
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"]["found"], true);
    let checks = status["output"]["checks"].as_u64().expect("checks");
    assert!(checks >= 4, "{status}");

    // A watch that gives up.
    let input = json!({ "path": dir.file("never").display().to_string(), "interval_ms": 50, "max_checks": 2 });
    let started = server.post("/orchestrators/monitor/gives-up", &input.to_string());
    assert_eq!(started.status, 202, "{}", started.body);
    let status = wait_finished(&server, "gives-up");
    assert_eq!(status["output"]["found"], false);
    assert_eq!(status["output"]["checks"], 2);
}

#[test]
fn human_interaction_approves_escalates_and_times_out() {
    let dir = TempDir::new("app-approval");
    let db = database(&dir);
    let server = Server::start(HUMAN_INTERACTION, &db, &[], &[]);
    let request = |timeout_secs: u64| {
        json!({
            "request": "PO-1", "amount": 1200, "approver": "ana", "manager": "ben",
            "timeout_secs": timeout_secs
        })
        .to_string()
    };

    // Approved by the approver, through the CLI.
    cli(
        HUMAN_INTERACTION,
        &db,
        &["start", "approval", "--id", "po-1", "--input", &request(60)],
    )
    .expect_code(0);
    wait_status(&server, "po-1", "po-1 to wait for ana", |s| {
        s["customStatus"] == "waiting for ana"
    });
    // The id is taken while it waits.
    server
        .post("/orchestrators/approval/po-1", &request(60))
        .expect_error(409, "instance_exists");
    let raised = cli(
        HUMAN_INTERACTION,
        &db,
        &[
            "raise",
            "po-1",
            "approval",
            "--data",
            r#"{"approved": true, "by": "ana"}"#,
        ],
    )
    .expect_code(0);
    assert!(
        raised.stdout.contains("raised event `approval`"),
        "{}",
        raised.stdout
    );
    let status = wait_finished(&server, "po-1");
    assert_eq!(
        status["output"],
        json!({ "approved": true, "decided_by": "ana", "escalated": false })
    );
    // Nothing can receive events any more.
    server
        .post("/instances/po-1/raiseEvent/approval", "{}")
        .expect_error(410, "instance_finished");
    cli(HUMAN_INTERACTION, &db, &["raise", "po-1", "approval"]).expect_code(1);

    // No answer in time: escalated to the manager, who decides over HTTP.
    assert_eq!(
        server
            .post("/orchestrators/approval/po-2", &request(1))
            .status,
        202
    );
    wait_status(&server, "po-2", "po-2 to be escalated", |s| {
        s["customStatus"] == "escalated to ben"
    });
    let raised = server.post(
        "/instances/po-2/raiseEvent/approval",
        r#"{"approved": false, "by": "ben"}"#,
    );
    assert_eq!(raised.status, 202, "{}", raised.body);
    let status = wait_finished(&server, "po-2");
    assert_eq!(
        status["output"],
        json!({ "approved": false, "decided_by": "ben", "escalated": true })
    );

    // Nobody answers: rejected after the second timeout.
    assert_eq!(
        server
            .post("/orchestrators/approval/po-3", &request(1))
            .status,
        202
    );
    let status = wait_finished(&server, "po-3");
    assert_eq!(
        status["output"],
        json!({ "approved": false, "decided_by": "timeout", "escalated": true })
    );

    // Suspend (CLI), resume (HTTP), terminate (HTTP), purge (HTTP).
    assert_eq!(
        server
            .post("/orchestrators/approval/po-4", &request(600))
            .status,
        202
    );
    wait_status(&server, "po-4", "po-4 to wait", |s| {
        s["customStatus"] == "waiting for ana"
    });
    cli(HUMAN_INTERACTION, &db, &["suspend", "po-4"]).expect_code(0);
    wait_status(&server, "po-4", "po-4 to be suspended", |s| {
        s["runtimeStatus"] == "Suspended"
    });
    assert_eq!(
        server.post("/instances/po-4/resume?reason=back", "").status,
        202
    );
    wait_status(&server, "po-4", "po-4 to run again", |s| {
        s["runtimeStatus"] == "Running"
    });
    server
        .request("DELETE", "/instances/po-4", &[], None)
        .expect_error(409, "invalid_state");
    assert_eq!(
        server
            .post("/instances/po-4/terminate?reason=cancelled", "")
            .status,
        202
    );
    let status = wait_finished(&server, "po-4");
    assert_eq!(status["runtimeStatus"], "Terminated");
    let purged = server.request("DELETE", "/instances/po-4", &[], None);
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(purged.json()["instancesDeleted"], 1);
    server
        .get("/instances/po-4")
        .expect_error(404, "instance_not_found");

    // A wait that gives up: exit code 3, and the instance goes on.
    let timed_out = cli(
        HUMAN_INTERACTION,
        &db,
        &[
            "start",
            "approval",
            "--id",
            "po-5",
            "--input",
            &request(600),
            "--wait",
            "--timeout",
            "0.5",
        ],
    )
    .expect_code(3);
    assert!(
        timed_out.stderr.contains("timed out"),
        "{}",
        timed_out.stderr
    );
    cli(
        HUMAN_INTERACTION,
        &db,
        &["terminate", "po-5", "--reason", "done testing"],
    )
    .expect_code(0);
    wait_finished(&server, "po-5");
    let purged = cli(HUMAN_INTERACTION, &db, &["purge", "po-5"]).expect_code(0);
    assert!(
        purged.stdout.contains("purged instance po-5"),
        "{}",
        purged.stdout
    );
    cli(HUMAN_INTERACTION, &db, &["purge"]).expect_code(2);
    cli(HUMAN_INTERACTION, &db, &["purge", "--status", "Running"]).expect_code(2);

    let listed = cli(
        HUMAN_INTERACTION,
        &db,
        &["list", "--prefix", "po-", "--json"],
    )
    .expect_code(0)
    .json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["instanceId"].as_str())
        .collect();
    assert_eq!(ids, ["po-1", "po-2", "po-3"]);
}

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_aggregator");
const BANK_TRANSFER: &str = env!("CARGO_BIN_EXE_bank_transfer");

/// Polls `GET /entities/{name}/{key}` until its state satisfies `check`.
fn wait_entity(server: &Server, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        &format!("entity {path} to reach the expected state"),
        WAIT,
        || {
            let response = server.get(path);
            (response.status == 200 && check(&response.json()["state"])).then(|| response.json())
        },
    )
}

#[test]
fn aggregator_entity_is_signalled_and_read_over_http_and_the_command_line() {
    let dir = TempDir::new("app-aggregator");
    let db = database(&dir);

    // Signals from the command line wait in the database until a worker runs.
    cli(
        AGGREGATOR,
        &db,
        &["signal", "Counter", "visits", "add", "--input", "5"],
    )
    .expect_code(0);
    cli(
        AGGREGATOR,
        &db,
        &["signal", "Counter", "visits", "add", "--input", "7"],
    )
    .expect_code(0);

    // Bad input is refused before anything is stored, with what to do.
    let unknown = cli(AGGREGATOR, &db, &["signal", "Countr", "visits", "add"]).expect_code(2);
    assert!(
        unknown.stderr.contains("no entity named `Countr`"),
        "{}",
        unknown.stderr
    );
    assert!(unknown.stderr.contains("Counter"), "{}", unknown.stderr);
    let no_op = cli(AGGREGATOR, &db, &["signal", "Counter", "visits", "ad"]).expect_code(2);
    assert!(no_op.stderr.contains("add, get, reset"), "{}", no_op.stderr);
    let wrong_type = cli(
        AGGREGATOR,
        &db,
        &["signal", "Counter", "visits", "add", "--input", r#""a""#],
    )
    .expect_code(2);
    assert!(
        wrong_type.stderr.contains("Counter.add"),
        "{}",
        wrong_type.stderr
    );
    let functions = cli(AGGREGATOR, &db, &["functions"]).expect_code(0);
    assert!(
        functions.stdout.lines().any(|l| l.split_whitespace().eq([
            "entity",
            "operation",
            "Counter.add",
            "i64",
            "()"
        ])),
        "{}",
        functions.stdout
    );

    let server = Server::start(AGGREGATOR, &db, &[], &[]);
    let visits = wait_entity(&server, "/entities/Counter/visits", |s| s["value"] == 12);
    assert_eq!(visits["name"], "Counter");
    assert_eq!(visits["key"], "visits");
    assert_eq!(visits["state"], json!({"value": 12, "updates": 2}));
    assert!(visits["lockOwner"].is_null(), "{visits}");
    // Times as the instances' are written: RFC 3339 in UTC with a `Z`, milliseconds.
    for field in ["createdTime", "lastModifiedTime"] {
        let time = visits[field].as_str().expect("a time");
        assert!(
            time.ends_with('Z') && time.len() == "2026-01-01T00:00:00.000Z".len(),
            "{field}: {time}"
        );
    }

    // 50 signals over HTTP, each applied exactly once.
    for n in 1..=50 {
        let response = server.post("/entities/Counter/http?op=add", &n.to_string());
        assert_eq!(response.status, 202, "{}", response.body);
    }
    wait_entity(&server, "/entities/Counter/http", |s| {
        s["value"] == 1275 && s["updates"] == 50
    });

    // An orchestration signals and then calls the entity.
    let started = server.post("/orchestrators/tally", "[1, 2, 3]");
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.json()["id"].as_str().expect("an id").to_owned();
    assert_eq!(wait_finished(&server, &id)["output"], 6);

    // The command line reads what the server wrote.
    let state = cli(AGGREGATOR, &db, &["entity", "Counter", "totals", "--json"]).expect_code(0);
    assert_eq!(state.json()["state"], json!({"value": 6, "updates": 3}));
    let listed = cli(AGGREGATOR, &db, &["entities", "--json"])
        .expect_code(0)
        .json();
    let keys: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["key"].as_str().expect("a key"))
        .collect();
    assert_eq!(keys, ["http", "totals", "visits"]);

    // Listing pages through entities in key order.
    let first = server.get("/entities/Counter?top=2");
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["entities"].as_array().map(Vec::len), Some(2));
    let token = first["continuationToken"].as_str().expect("a token");
    let rest = server
        .get(&format!(
            "/entities/Counter?top=2&continuationToken={token}"
        ))
        .json();
    assert_eq!(rest["entities"][0]["key"], "visits");
    assert!(rest["continuationToken"].is_null(), "{rest}");
    let prefixed = server.get("/entities?keyPrefix=to").json();
    assert_eq!(prefixed["entities"].as_array().map(Vec::len), Some(1));

    // Errors name what was wrong.
    server
        .get("/entities/Counter/nobody")
        .expect_error(404, "entity_not_found");
    server
        .get("/entities/Countr/visits")
        .expect_error(404, "unknown_entity");
    server
        .post("/entities/Counter/visits", "1")
        .expect_error(400, "invalid_query");
    server
        .post("/entities/Counter/visits?op=add", "{not json")
        .expect_error(400, "invalid_payload");
    server
        .post("/entities/Counter/visits?op=add", r#""seven""#)
        .expect_error(400, "invalid_payload");
    server
        .post("/entities/Counter/visits?op=nope", "1")
        .expect_error(400, "unknown_operation");
    let unchanged = server.get("/entities/Counter/visits").json();
    assert_eq!(unchanged["state"], json!({"value": 12, "updates": 2}));

    // Delete runs in order after earlier messages; clean then removes the empty entity.
    let deleted = server.request("DELETE", "/entities/Counter/visits", &[], None);
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    wait_until("the entity to lose its state", WAIT, || {
        let response = server.get("/entities/Counter/visits");
        (response.status == 404 || response.json()["state"].is_null()).then_some(())
    });
    let cleaned = server.post("/entities/clean", "");
    assert_eq!(cleaned.status, 200, "{}", cleaned.body);
    assert_eq!(cleaned.json()["releasedLocks"], 0);
    server
        .get("/entities/Counter/visits")
        .expect_error(404, "entity_not_found");
    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn bank_transfer_moves_money_between_locked_accounts() {
    let dir = TempDir::new("app-bank-transfer");
    let db = database(&dir);
    cli(
        BANK_TRANSFER,
        &db,
        &["signal", "Account", "alice", "deposit", "--input", "100"],
    )
    .expect_code(0);

    let moved = cli(
        BANK_TRANSFER,
        &db,
        &["run", "transfer", "--input", r#"["alice", "bob", 30]"#],
    )
    .expect_code(0);
    assert_eq!(moved.stdout.trim(), r#""moved 30 from alice to bob""#);
    let refused = cli(
        BANK_TRANSFER,
        &db,
        &["run", "transfer", "--input", r#"["bob", "alice", 31]"#],
    )
    .expect_code(0);
    assert_eq!(refused.stdout.trim(), r#""refused: bob has 30, needs 31""#);

    for (account, balance) in [("alice", 70), ("bob", 30)] {
        let shown = cli(
            BANK_TRANSFER,
            &db,
            &["entity", "Account", account, "--json"],
        )
        .expect_code(0)
        .json();
        assert_eq!(shown["state"]["balance"], balance, "{shown}");
        assert!(shown["lockOwner"].is_null(), "{shown}");
    }
}

/// The database URL of a fresh PostgreSQL schema (`None`, with a notice, without
/// `DURACTOR_TEST_POSTGRES_URL`).
fn postgres_app_url(test: &str, schema: &str) -> Option<String> {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping `{test}`");
        return None;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}schema={schema}"))
}

/// Drops the schema the test's apps created.
fn drop_schema(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        let schema = url.rsplit_once("schema=").expect("a schema").1;
        let store = duractor_sqlx::PostgresStore::connect_with(
            base,
            duractor_sqlx::PostgresStoreOptions {
                schema: schema.to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect("connect to drop the schema");
        store.drop_schema().await.expect("drop the schema");
    });
}

#[test]
fn chaining_app_runs_on_postgresql_with_two_serving_processes() {
    let schema = format!("app_chaining_{}", std::process::id());
    let Some(db) = postgres_app_url("chaining_app_runs_on_postgresql", &schema) else {
        return;
    };

    // README's first command, on PostgreSQL instead of the SQLite default.
    let run = cli(CHAINING, &db, &["run", "hello_cities"]).expect_code(0);
    assert_eq!(
        run.stdout.trim(),
        r#"["Hello Tokyo!","Hello Seattle!","Hello London!"]"#
    );

    // Two worker processes share the schema; either may run any instance.
    let first = Server::start(CHAINING, &db, &[], &[]);
    let second = Server::start(CHAINING, &db, &[], &[]);
    let mut ids = Vec::new();
    for n in 0..20 {
        let server = if n % 2 == 0 { &first } else { &second };
        let started = server.post("/orchestrators/greet_all", &format!(r#"["a{n}", "b{n}"]"#));
        assert_eq!(started.status, 202, "{}", started.body);
        ids.push(started.json()["id"].as_str().expect("an id").to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let status = wait_finished(&second, id);
        assert_eq!(status["runtimeStatus"], "Completed", "{status}");
        assert_eq!(
            status["output"],
            json!([format!("Hello a{n}!"), format!("Hello b{n}!")])
        );
    }
    // The command line is one more client of the same schema.
    let listed = cli(CHAINING, &db, &["list", "--status", "Completed", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(21), "{listed}");
    assert_eq!(first.terminate(), Some(0));
    assert_eq!(second.terminate(), Some(0));
    drop_schema(&db);
}

const APPROVAL_CHANGED: &str = env!("CARGO_BIN_EXE_approval_changed");

#[test]
fn replay_checks_live_instances_against_a_build_before_it_is_deployed() {
    let dir = TempDir::new("app-replay");
    let db = database(&dir);
    let server = Server::start(HUMAN_INTERACTION, &db, &[], &[]);
    let input = json!({
        "request": "PO-7", "amount": 70, "approver": "ana", "manager": "ben", "timeout_secs": 3600
    })
    .to_string();
    cli(
        HUMAN_INTERACTION,
        &db,
        &["start", "approval", "--id", "po-7", "--input", &input],
    )
    .expect_code(0);
    wait_status(&server, "po-7", "po-7 to wait for ana", |s| {
        s["customStatus"] == "waiting for ana"
    });

    // The build that runs it replays it.
    let same = cli(HUMAN_INTERACTION, &db, &["replay", "--all"]).expect_code(0);
    assert!(
        same.stdout.starts_with("ok      po-7  (approval, "),
        "{}",
        same.stdout
    );
    assert!(
        same.stderr
            .contains("1 instance(s) replay against this build"),
        "{}",
        same.stderr
    );

    // The changed build would fail it: position, the recorded call and the call made now.
    let changed = cli(APPROVAL_CHANGED, &db, &["replay", "po-7"]).expect_code(1);
    assert!(
        changed.stdout.starts_with("FAILED  po-7  "),
        "{}",
        changed.stdout
    );
    for expected in [
        "at history position 2",
        "history recorded a call to activity `notify` (TaskScheduled #0)",
        "now calls activity `audit` as durable call #0",
    ] {
        assert!(
            changed.stdout.contains(expected),
            "{expected}: {}",
            changed.stdout
        );
    }
    assert!(
        changed
            .stderr
            .contains("1 of 1 instance(s) would not replay against this build"),
        "{}",
        changed.stderr
    );
    let all = cli(
        APPROVAL_CHANGED,
        &db,
        &["replay", "--all", "--status", "Running"],
    );
    assert_eq!(all.code, Some(1), "{}", all.stdout);

    // The history exported for a replay test is the stored events, which parse back.
    let exported = cli(HUMAN_INTERACTION, &db, &["history", "po-7", "--export"]).expect_code(0);
    let events: Vec<duractor::Event> = serde_json::from_str(&exported.stdout)
        .unwrap_or_else(|e| panic!("not events ({e}): {}", exported.stdout));
    assert!(
        matches!(events.get(1), Some(duractor::Event::ExecutionStarted { name, .. }) if name == "approval")
    );

    // Bad input gets a usage error, and nothing is replayed.
    cli(HUMAN_INTERACTION, &db, &["replay"]).expect_code(2);
    let unknown = cli(HUMAN_INTERACTION, &db, &["replay", "no-such-id"]);
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("no-such-id"), "{}", unknown.stderr);
}
