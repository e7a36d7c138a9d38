//! What a new user, an attacker and a Durable Functions user hit (issue 11), through real HTTP
//! requests to a real `serve` of the pattern apps, and through their command line.

use std::time::Duration;

use duractor_tests::{HttpResponse, Server, TempDir, cli, wait_until};
use serde_json::Value;

const CHAINING: &str = env!("CARGO_BIN_EXE_chaining");
const ASYNC_HTTP_API: &str = env!("CARGO_BIN_EXE_async_http_api");
const HUMAN_INTERACTION: &str = env!("CARGO_BIN_EXE_human_interaction");
const AGGREGATOR: &str = env!("CARGO_BIN_EXE_aggregator");
const FAN_OUT: &str = env!("CARGO_BIN_EXE_fan_out_fan_in");
const WAIT: Duration = Duration::from_secs(30);

fn serve(bin: &str, name: &str, args: &[&str]) -> (TempDir, String, Server) {
    let dir = TempDir::new(name);
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(bin, &db, args, &[]);
    (dir, db, server)
}

/// Waits until `GET path` answers with a final status (not 202) and returns that response.
fn finished(server: &Server, path: &str) -> HttpResponse {
    wait_until(&format!("{path} to finish"), WAIT, || {
        let response = server.get(path);
        (response.status != 202).then_some(response)
    })
}

/// The path (and query) of a URL the server returned, checked to start with `base`.
fn path_of(url: &str, base: &str) -> String {
    assert!(
        url.starts_with(base),
        "`{url}` does not start with `{base}`"
    );
    url[base.len()..].to_owned()
}

#[test]
fn rewinding_a_report_whose_orchestrator_failed_ends_failed_again_not_running_forever() {
    let (_dir, _db, server) = serve(ASYNC_HTTP_API, "http-rewind-code", &[]);
    let start = server.post(
        "/orchestrators/export_report/report-0",
        r#"{"customer": "acme", "parts": 0}"#,
    );
    assert_eq!(start.status, 202, "{}", start.body);
    let status = finished(&server, "/instances/report-0");
    assert_eq!(status.json()["runtimeStatus"], "Failed");

    let rewind = server.post("/instances/report-0/rewind?reason=retry", "");
    assert_eq!(rewind.status, 202, "{}", rewind.body);
    let status = finished(&server, "/instances/report-0");
    let json = status.json();
    assert_eq!(json["runtimeStatus"], "Failed", "{json}");
    assert!(
        json["output"]
            .as_str()
            .is_some_and(|m| m.contains("parts must be between 1 and 1000")),
        "{json}"
    );
}

#[test]
fn entity_ids_cannot_be_squatted_and_entity_rows_are_not_instances() {
    let (_dir, db, server) = serve(AGGREGATOR, "http-entity-ids", &[]);
    let squat = server.post("/orchestrators/tally/@Counter@k", "[1]");
    squat.expect_error(400, "invalid_argument");
    assert!(
        squat.body.contains("reserved for entity ids"),
        "{}",
        squat.body
    );
    server
        .post("/orchestrators/tally/%40Counter%40k", "[1]")
        .expect_error(400, "invalid_argument");

    // Signals to the entity are applied, not lost.
    assert_eq!(server.post("/entities/Counter/k?op=add", "3").status, 202);
    wait_until("Counter/k to have the signal applied", WAIT, || {
        let response = server.get("/entities/Counter/k");
        (response.status == 200 && response.json()["state"]["value"] == 3).then_some(())
    });

    // The entity row answers on no instance route.
    server
        .get("/instances/@Counter@k")
        .expect_error(404, "instance_not_found");
    for action in ["terminate", "suspend", "resume", "rewind"] {
        server
            .post(&format!("/instances/@Counter@k/{action}"), "")
            .expect_error(404, "instance_not_found");
    }
    server
        .post("/instances/@Counter@k/raiseEvent/go", "1")
        .expect_error(404, "instance_not_found");
    let list = server.get("/instances").json();
    assert_eq!(
        list["instances"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // The command line refuses the id as a usage error.
    let out = cli(AGGREGATOR, &db, &["start", "tally", "--id", "@Counter@k"]);
    let out = out.expect_code(2);
    assert!(
        out.stderr.contains("reserved for entity ids"),
        "{}",
        out.stderr
    );
    cli(AGGREGATOR, &db, &["status", "@Counter@k"]).expect_code(1);
}

#[test]
fn a_huge_timeout_fails_the_instance_with_a_clear_error_and_the_worker_lives() {
    let (_dir, _db, server) = serve(HUMAN_INTERACTION, "http-huge-timeout", &[]);
    let start = server.post(
        "/orchestrators/approval/po-huge",
        r#"{"request": "PO", "amount": 1, "approver": "ana", "manager": "ben", "timeout_secs": 18446744073709551615}"#,
    );
    assert_eq!(start.status, 202, "{}", start.body);
    let json = finished(&server, "/instances/po-huge").json();
    assert_eq!(json["runtimeStatus"], "Failed", "{json}");
    assert!(
        json["output"]
            .as_str()
            .is_some_and(|m| m.contains("latest time a durable timer can have")),
        "{json}"
    );
    assert!(!server.log().contains("overflowed"), "{}", server.log());
    assert_eq!(server.get("/health").status, 200);
}

/// The peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_runaway_fan_out_fails_at_the_limit_without_exhausting_the_worker() {
    let dir = TempDir::new("runaway-fan-out");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let mut child = std::process::Command::new(FAN_OUT)
        .args(["run", "total_size", "--input", "200000"])
        .env("DURACTOR_DATABASE_URL", &db)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("one turn made 10001 durable calls; the limit is 10000"),
        "{stderr}"
    );
    // Before the limit was enforced at the call, this run grew by ~300 MB.
    assert!(peak < 150 * 1024, "peak RSS {peak} kB");
}

#[test]
fn deep_payloads_and_bad_event_names_get_400_and_nothing_is_stored() {
    let (_dir, _db, server) = serve(HUMAN_INTERACTION, "http-deep", &[]);
    let start = server.post(
        "/orchestrators/approval/po-deep",
        r#"{"request": "PO", "amount": 1, "approver": "ana", "manager": "ben", "timeout_secs": 600}"#,
    );
    assert_eq!(start.status, 202, "{}", start.body);
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let response = server.post("/instances/po-deep/raiseEvent/approval", &deep);
    response.expect_error(400, "invalid_payload");
    assert!(
        response.body.contains("5000 levels deep"),
        "{}",
        response.body
    );
    server
        .post("/instances/po-deep/raiseEvent/a%00b", "1")
        .expect_error(400, "invalid_argument");
    server
        .post("/orchestrators/approval", &deep)
        .expect_error(400, "invalid_payload");
    let history = server.get("/instances/po-deep?showHistory=true&showHistoryOutput=true");
    let json = history.json();
    let events = json["historyEvents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events.iter().all(|e| e["eventType"] != "EventRaised"),
        "{json}"
    );
    assert!(events.iter().all(|e| e["eventType"].is_string()));
}

#[test]
fn ids_round_trip_through_the_links_the_api_returns() {
    let (_dir, db, server) = serve(CHAINING, "http-id-links", &[]);
    let base = format!("http://{}", server.addr);
    for (segment, id) in [
        ("order%2B42", "order+42"),
        ("order+43", "order+43"),
        ("a%20b:c", "a b:c"),
        ("%C3%A9t%C3%A9", "été"),
        ("x.y", "x.y"),
        ("~tilde@", "~tilde@"),
    ] {
        let start = server.post(
            &format!("/orchestrators/greet_all/{segment}"),
            r#"["Oslo"]"#,
        );
        assert_eq!(start.status, 202, "{id}: {}", start.body);
        let links = start.json();
        assert_eq!(links["id"], id);
        let status_path = path_of(links["statusQueryGetUri"].as_str().unwrap(), &base);
        let json = finished(&server, &status_path).json();
        assert_eq!(json["instanceId"], id, "{status_path}");
        assert_eq!(json["runtimeStatus"], "Completed");
        // The other links name the same instance.
        let purge = path_of(links["purgeHistoryDeleteUri"].as_str().unwrap(), &base);
        assert_eq!(purge, status_path);
        let restart = path_of(links["restartPostUri"].as_str().unwrap(), &base);
        assert_eq!(server.post(&restart, "").status, 202, "{restart}");
        let deleted = server.request("DELETE", &purge, &[], None);
        // The restarted run may still be going; either way the id resolved.
        assert!(
            deleted.status == 200 || deleted.status == 409,
            "{}",
            deleted.body
        );
    }
    // Ids that cannot round-trip are refused, with the rule.
    for segment in ["a%2Fb", "%2E%2E", "%2E", "a%25b", "a%3Fb", "a%23b", "a%5Cb"] {
        server
            .post(&format!("/orchestrators/greet_all/{segment}"), "[]")
            .expect_error(400, "invalid_argument");
    }
    for id in ["a/b", "..", "50%"] {
        let out = cli(CHAINING, &db, &["start", "greet_all", "--id", id]).expect_code(2);
        assert!(out.stderr.contains("instance id"), "{id}: {}", out.stderr);
    }
    let out = cli(
        CHAINING,
        &db,
        &["run", "hello_cities", "--id", "bad\u{7}id"],
    )
    .expect_code(2);
    assert!(out.stderr.contains("control characters"), "{}", out.stderr);
    let long = "x".repeat(300);
    cli(CHAINING, &db, &["start", "greet_all", "--id", &long]).expect_code(2);
}

#[test]
fn an_empty_api_token_is_a_usage_error() {
    let dir = TempDir::new("empty-token");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let out = cli(
        CHAINING,
        &db,
        &["serve", "--bind", "127.0.0.1:0", "--api-token", ""],
    );
    let out = out.expect_code(2);
    assert!(out.stderr.contains("API token is empty"), "{}", out.stderr);

    let out = std::process::Command::new(CHAINING)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DURACTOR_DATABASE_URL", &db)
        .env("DURACTOR_API_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("API token is empty"),
        "{out:?}"
    );
}

#[test]
fn links_ignore_proxy_headers_unless_configured_and_malformed_hosts_are_refused() {
    let (_dir, _db, server) = serve(CHAINING, "http-links", &[]);
    let base = format!("http://{}", server.addr);
    let spoofed = server.request(
        "POST",
        "/orchestrators/hello_cities",
        &[
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "host=evil.example;proto=https"),
        ],
        Some(b"null"),
    );
    assert_eq!(spoofed.status, 202, "{}", spoofed.body);
    let links = spoofed.json();
    assert!(
        links["statusQueryGetUri"]
            .as_str()
            .is_some_and(|u| u.starts_with(&base)),
        "{links}"
    );
    assert!(
        spoofed
            .header("location")
            .is_some_and(|l| l.starts_with(&base))
    );
    for host in ["evil.example/x", "a b", "x\"><script>", "host:99999"] {
        server
            .request("GET", "/health", &[("Host", host)], None)
            .expect_error(400, "invalid_host");
    }

    // A configured public URL wins over everything the request says.
    let (_dir, _db, public) = serve(
        CHAINING,
        "http-public-url",
        &["--public-url", "https://api.example.com/durable/"],
    );
    let links = public
        .request(
            "POST",
            "/orchestrators/hello_cities/pub-1",
            &[("X-Forwarded-Host", "evil.example")],
            Some(b"null"),
        )
        .json();
    assert_eq!(
        links["statusQueryGetUri"],
        "https://api.example.com/durable/instances/pub-1"
    );

    // Behind a proxy that is trusted, its headers choose the links.
    let (_dir, _db, proxied) = serve(
        CHAINING,
        "http-trusted-proxy",
        &["--trust-forwarded-headers"],
    );
    let links = proxied
        .request(
            "POST",
            "/orchestrators/hello_cities/prox-1",
            &[
                ("X-Forwarded-Host", "gateway.internal:8443"),
                ("X-Forwarded-Proto", "https"),
            ],
            Some(b"null"),
        )
        .json();
    assert_eq!(
        links["statusQueryGetUri"],
        "https://gateway.internal:8443/instances/prox-1"
    );
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let dir = TempDir::new("bearer-case");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(CHAINING, &db, &["--api-token", "s3cret"], &[]);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = server.get_authorized("/instances", &format!("{scheme} s3cret"));
        assert_eq!(response.status, 200, "{scheme}: {}", response.body);
    }
    for wrong in ["Basic s3cret", "BEARER wrong"] {
        server
            .get_authorized("/instances", wrong)
            .expect_error(401, "unauthorized");
    }
}

#[test]
fn durable_functions_clients_get_what_they_read() {
    let (_dir, _db, server) = serve(ASYNC_HTTP_API, "http-df-compat", &[]);

    // A Failed instance's output is its error message; a Terminated one's its reason.
    server.post(
        "/orchestrators/export_report/bad",
        r#"{"customer": "a", "parts": 0}"#,
    );
    let failed = finished(&server, "/instances/bad").json();
    assert_eq!(failed["runtimeStatus"], "Failed");
    assert_eq!(
        failed["output"], failed["failureDetails"]["message"],
        "{failed}"
    );
    assert_eq!(failed["failureDetails"]["nonRetriable"], true, "{failed}");
    assert!(failed["failureDetails"].get("non_retriable").is_none());
    let internal = server.get("/instances/bad?returnInternalServerErrorOnFailure=true");
    assert_eq!(internal.status, 500, "{}", internal.body);
    assert_eq!(internal.json()["runtimeStatus"], "Failed");

    server.post(
        "/orchestrators/export_report/slow",
        r#"{"customer": "a", "parts": 100, "part_ms": 1000}"#,
    );
    assert_eq!(
        server
            .post("/instances/slow/terminate?reason=changed%20my%20mind", "")
            .status,
        202
    );
    let terminated = finished(&server, "/instances/slow").json();
    assert_eq!(terminated["runtimeStatus"], "Terminated");
    assert_eq!(terminated["output"], "changed my mind");

    // Managing a finished instance is 410 Gone, as in Durable Functions.
    for action in ["terminate", "suspend", "resume"] {
        server
            .post(&format!("/instances/slow/{action}"), "")
            .expect_error(410, "instance_finished");
    }
    server
        .post("/instances/slow/rewind", "")
        .expect_error(410, "instance_finished");
    server
        .post("/instances/slow/raiseEvent/go", "1")
        .expect_error(410, "instance_finished");

    // showInput=false is `"input": null`; lists carry inputs.
    server.post(
        "/orchestrators/export_report/ok",
        r#"{"customer": "b", "parts": 1, "part_ms": 1}"#,
    );
    finished(&server, "/instances/ok");
    let hidden = server.get("/instances/ok?showInput=false").json();
    assert!(hidden.get("input").is_some_and(Value::is_null), "{hidden}");
    let list = server.get("/instances?instanceIdPrefix=ok").json();
    assert_eq!(list["instances"][0]["input"]["customer"], "b", "{list}");

    // Statuses duractor never reports are accepted and match nothing.
    for (filter, count) in [
        ("ContinuedAsNew", 0),
        ("Canceled", 0),
        ("Canceled,ContinuedAsNew", 0),
        ("Canceled,Completed", 1),
    ] {
        let list = server
            .get(&format!("/instances?runtimeStatus={filter}"))
            .json();
        let found = list["instances"].as_array().map(Vec::len);
        assert_eq!(found, Some(count), "{filter}: {list}");
    }

    // History events carry the fields a DF client reads.
    let json = server
        .get("/instances/ok?showHistory=true&showHistoryOutput=true")
        .json();
    let events = json["historyEvents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let completed = events
        .iter()
        .find(|e| e["eventType"] == "TaskCompleted")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(completed["functionName"], "export_part", "{completed}");
    assert!(completed["scheduledTime"].is_string(), "{completed}");
    assert!(!completed["result"].is_null(), "{completed}");
    let started = events.iter().find(|e| e["eventType"] == "ExecutionStarted");
    assert_eq!(
        started.map(|e| &e["functionName"]),
        Some(&Value::from("export_report"))
    );
    let end = events.last().cloned().unwrap_or_default();
    assert_eq!(end["orchestrationStatus"], "Completed", "{end}");
    assert!(!end["result"].is_null(), "{end}");

    // The Durable Functions base path answers too, and its links stay under it.
    let df = "/runtime/webhooks/durabletask";
    let start = server.post(
        &format!("{df}/orchestrators/export_report/df-1?taskHub=x&code=y"),
        r#"{"customer": "c", "parts": 1, "part_ms": 1}"#,
    );
    assert_eq!(start.status, 202, "{}", start.body);
    let base = format!("http://{}{df}", server.addr);
    let status_path = path_of(start.json()["statusQueryGetUri"].as_str().unwrap(), &base);
    let json = finished(&server, &format!("{df}{status_path}")).json();
    assert_eq!(json["runtimeStatus"], "Completed");
    assert_eq!(server.get(&format!("{df}/health")).status, 200);
    assert_eq!(
        server.get(&format!("{df}/instances?top=1")).json()["instances"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn purging_nothing_is_404_on_http_and_exit_1_on_the_command_line() {
    let (_dir, db, server) = serve(CHAINING, "http-purge-nothing", &[]);
    server
        .request("DELETE", "/instances/nobody", &[], None)
        .expect_error(404, "instance_not_found");
    let out = cli(CHAINING, &db, &["purge", "nobody"]).expect_code(1);
    assert!(
        out.stderr.contains("no instance `nobody`"),
        "{}",
        out.stderr
    );
}

const PANICKY: &str = env!("CARGO_BIN_EXE_panicky");

#[test]
fn a_caught_panic_is_logged_once_per_attempt_without_the_default_hook_or_a_backtrace() {
    let dir = TempDir::new("quiet-panics");
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let run = |name: &str| {
        std::process::Command::new(PANICKY)
            .args(["run", name])
            .env("DURACTOR_DATABASE_URL", &db)
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run("flaky");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"true true\"");
    assert_eq!(stderr.matches("activity panicked").count(), 3, "{stderr}");
    assert_eq!(
        stderr.matches("entity operation panicked").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("the flux capacitor overheated"), "{stderr}");
    assert!(
        stderr.contains("panicky.rs:"),
        "the log says where: {stderr}"
    );
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");

    let out = run("doomed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("orchestrator panicked").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}
