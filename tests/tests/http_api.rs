//! The HTTP management API against bad input: every mistake gets the right status code and a
//! JSON error, and the server goes on serving. Also paging, purge filters, functions, metrics
//! and the bearer token.

use duractor_tests::{Server, TempDir, wait_until};
use serde_json::json;

const CHAINING: &str = env!("CARGO_BIN_EXE_chaining");

fn serve(name: &str, args: &[&str], env: &[(&str, &str)]) -> (TempDir, Server) {
    let dir = TempDir::new(name);
    let db = format!("sqlite://{}", dir.file("app.db").display());
    let server = Server::start(CHAINING, &db, args, env);
    (dir, server)
}

fn assert_healthy(server: &Server) {
    let health = server.get("/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
}

fn wait_completed(server: &Server, id: &str) {
    wait_until(
        &format!("{id} to complete"),
        std::time::Duration::from_secs(30),
        || (server.get(&format!("/instances/{id}")).status == 200).then_some(()),
    );
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let (_dir, server) = serve("http-bad-input", &["--max-body-bytes", "1024"], &[]);

    // Malformed JSON, and JSON of the wrong type.
    server
        .post("/orchestrators/greet_all", "{not json")
        .expect_error(400, "invalid_payload");
    assert_healthy(&server);
    let wrong = server.post("/orchestrators/greet_all", r#"{"cities": 3}"#);
    wrong.expect_error(400, "invalid_payload");
    assert!(
        wrong.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("greet_all"))
    );
    server
        .post("/instances/x/raiseEvent/go", "[1, 2")
        .expect_error(400, "invalid_payload");

    // Unknown orchestrator, instance, route.
    let unknown = server.post("/orchestrators/nope", "null");
    unknown.expect_error(404, "unknown_orchestrator");
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hello_cities")),
        "the message lists what is registered: {}",
        unknown.body
    );
    server
        .get("/instances/nobody")
        .expect_error(404, "instance_not_found");
    server
        .post("/instances/nobody/raiseEvent/go", "1")
        .expect_error(404, "instance_not_found");
    server
        .post("/instances/nobody/terminate", "")
        .expect_error(404, "instance_not_found");
    server
        .request("DELETE", "/instances/nobody", &[], None)
        .expect_error(404, "instance_not_found");
    server.get("/no/such/route").expect_error(404, "not_found");
    assert_healthy(&server);

    // Oversized body.
    let big = format!("[\"{}\"]", "x".repeat(4096));
    server
        .post("/orchestrators/greet_all", &big)
        .expect_error(413, "payload_too_large");
    assert_healthy(&server);

    // Unsupported methods: 405 with Allow.
    let put = server.request("PUT", "/instances/x", &[], Some(b"{}"));
    put.expect_error(405, "method_not_allowed");
    assert_eq!(put.header("allow"), Some("GET, DELETE"));
    server
        .get("/orchestrators/greet_all")
        .expect_error(405, "method_not_allowed");
    server
        .request("DELETE", "/metrics", &[], None)
        .expect_error(405, "method_not_allowed");

    // Bad query strings.
    server
        .get("/instances?top=many")
        .expect_error(400, "invalid_query");
    server
        .get("/instances?top=0")
        .expect_error(400, "invalid_query");
    server
        .get("/instances?runtimeStatus=Sleeping")
        .expect_error(400, "invalid_query");
    server
        .get("/instances?createdTimeFrom=yesterday")
        .expect_error(400, "invalid_query");
    server
        .request("DELETE", "/instances", &[], None)
        .expect_error(400, "invalid_query");
    server
        .request("DELETE", "/instances?runtimeStatus=Running", &[], None)
        .expect_error(400, "invalid_query");

    // After all that, real work still runs.
    let started = server.post("/orchestrators/hello_cities/after-errors", "");
    assert_eq!(started.status, 202, "{}", started.body);
    wait_completed(&server, "after-errors");
    let status = server.get("/instances/after-errors?showInput=false").json();
    assert_eq!(
        status["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    // As in Durable Functions: the field is there, null.
    assert!(status.get("input").is_some_and(|i| i.is_null()), "{status}");

    // Rewind needs a failed instance (a finished one that did not fail is 410 Gone, as in
    // Durable Functions); restart starts a finished one again.
    server
        .post("/instances/after-errors/rewind?reason=why", "")
        .expect_error(410, "instance_finished");
    let restarted = server.post(
        "/instances/after-errors/restart?restartWithNewInstanceId=true",
        "",
    );
    assert_eq!(restarted.status, 202, "{}", restarted.body);
    let new_id = restarted.json()["id"]
        .as_str()
        .expect("a new id")
        .to_owned();
    assert_ne!(new_id, "after-errors");
    wait_completed(&server, &new_id);
    assert_eq!(
        server.get(&format!("/instances/{new_id}")).json()["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    assert_healthy(&server);
}

#[test]
fn a_configured_token_is_required_on_everything_but_health() {
    let (_dir, server) = serve("http-token", &[], &[("DURACTOR_API_TOKEN", "s3cret")]);

    assert_healthy(&server);
    let missing = server.get("/instances");
    missing.expect_error(401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    server
        .get_authorized("/instances", "Bearer wrong")
        .expect_error(401, "unauthorized");
    server
        .get_authorized("/instances", "Basic czNjcmV0")
        .expect_error(401, "unauthorized");
    server
        .post("/orchestrators/hello_cities", "")
        .expect_error(401, "unauthorized");
    server.get("/metrics").expect_error(401, "unauthorized");

    let auth = [("Authorization", "Bearer s3cret")];
    let listed = server.request("GET", "/instances", &auth, None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let started = server.request(
        "POST",
        "/orchestrators/hello_cities/with-token",
        &auth,
        Some(b""),
    );
    assert_eq!(started.status, 202, "{}", started.body);
    // Errors behind the token are the usual ones.
    let unknown = server.request("GET", "/instances/nobody", &auth, None);
    unknown.expect_error(404, "instance_not_found");
    assert_healthy(&server);
}

#[test]
fn instances_list_in_pages_and_purge_by_filter() {
    let (_dir, server) = serve("http-paging", &[], &[]);
    for i in 1..=5 {
        let started = server.post(&format!("/orchestrators/greet_all/page-{i}"), r#"["A"]"#);
        assert_eq!(started.status, 202, "{}", started.body);
    }
    for i in 1..=5 {
        wait_completed(&server, &format!("page-{i}"));
    }

    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(token) => {
                format!("/instances?instanceIdPrefix=page-&top=2&continuationToken={token}")
            }
            None => "/instances?instanceIdPrefix=page-&top=2".to_owned(),
        };
        let page = server.get(&path);
        assert_eq!(page.status, 200, "{}", page.body);
        let json = page.json();
        let instances = json["instances"].as_array().expect("instances");
        assert!(instances.len() <= 2);
        ids.extend(
            instances
                .iter()
                .filter_map(|i| i["instanceId"].as_str().map(str::to_owned)),
        );
        pages += 1;
        match json["continuationToken"].as_str() {
            Some(next) => {
                assert_eq!(page.header("x-ms-continuation-token"), Some(next));
                token = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, ["page-1", "page-2", "page-3", "page-4", "page-5"]);

    let filtered = server
        .get("/instances?runtimeStatus=Completed,Failed&instanceIdPrefix=page-&showInput=true")
        .json();
    assert_eq!(filtered["instances"].as_array().map(Vec::len), Some(5));
    assert_eq!(filtered["instances"][0]["input"], json!(["A"]));

    let functions = server.get("/functions").json();
    let orchestrators: Vec<&str> = functions["orchestrators"]
        .as_array()
        .expect("orchestrators")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(orchestrators, ["greet_all", "hello_cities"]);
    assert_eq!(
        functions["activities"][0]["inputType"],
        "alloc::string::String"
    );

    let purged = server.request("DELETE", "/instances?runtimeStatus=Completed", &[], None);
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(purged.json()["instancesDeleted"], 5);
    assert_eq!(server.get("/instances").json()["instances"], json!([]));
    let metrics = server.get("/metrics");
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert!(
        metrics.body.contains("# TYPE duractor_turns_total counter"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("duractor_store_up 1"),
        "{}",
        metrics.body
    );
}
