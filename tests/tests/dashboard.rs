//! The dashboard in a real headless Chromium, driving real `serve` processes of the pattern
//! apps: what an operator sees (lists, statuses, the timeline, what an instance waits on, an
//! entity's state) and what they do from the page (raise an event, terminate, signal), with
//! the API checked behind it. Screenshots are kept in `target/dashboard-screenshots/`.
//!
//! Without Chromium these tests print a notice and pass, unless `DURACTOR_REQUIRE_BROWSER=1`
//! (CI installs Chromium and sets it).

use std::path::PathBuf;
use std::time::Duration;

use duractor_tests::browser::{Browser, Page};
use duractor_tests::{Server, TempDir, wait_until};
use serde_json::{Value, json};

const FAN_OUT_FAN_IN: &str = env!("CARGO_BIN_EXE_fan_out_fan_in");
const HUMAN_INTERACTION: &str = env!("CARGO_BIN_EXE_human_interaction");
const AGGREGATOR: &str = env!("CARGO_BIN_EXE_aggregator");

const WAIT: Duration = Duration::from_secs(20);

fn database(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.file("app.db").display())
}

/// Where the screenshots go: beside the build, kept after the run.
fn screenshot(page: &Page, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("dashboard-screenshots"))
        .unwrap_or_else(|| PathBuf::from("dashboard-screenshots"));
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    let path = dir.join(format!("{name}.png"));
    page.screenshot(&path);
    path
}

fn url(server: &Server, hash: &str) -> String {
    format!("http://{}/#{hash}", server.addr)
}

fn wait_finished(server: &Server, id: &str) -> Value {
    wait_until(&format!("{id} to finish"), WAIT, || {
        let response = server.get(&format!("/instances/{id}"));
        (response.status == 200).then(|| response.json())
    })
}

fn no_console_errors(page: &Page) {
    let errors = page.console_errors();
    assert!(
        errors.is_empty(),
        "the dashboard logged errors: {errors:#?}"
    );
}

#[test]
fn the_list_shows_instances_with_their_statuses_and_a_fan_out_shows_on_the_timeline() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-fan-out");
    let server = Server::start(FAN_OUT_FAN_IN, &database(&dir), &[], &[]);
    assert_eq!(
        server.post("/orchestrators/total_size/sum-12", "12").status,
        202
    );
    wait_finished(&server, "sum-12");
    assert_eq!(
        server.post("/orchestrators/total_size/sum-3", "3").status,
        202
    );
    wait_finished(&server, "sum-3");
    let bad = server.post("/orchestrators/total_size/oops", "\"not a number\"");
    assert_eq!(bad.status, 400, "{}", bad.body);

    let page = browser.open(&url(&server, "/instances"));
    page.wait_for("document.querySelectorAll('[data-row]').length === 2", WAIT);
    for id in ["sum-12", "sum-3"] {
        let status = page.text(&format!("[data-row='{id}'] [data-status]"));
        assert_eq!(status, "Completed", "{id}");
    }
    // The filters live in the URL: a Running filter shows none of them.
    page.goto(&url(&server, "/instances?status=Running"));
    page.wait_for(
        "document.body.innerText.includes('No instances match')",
        WAIT,
    );
    page.goto(&url(&server, "/instances?name=total_size&prefix=sum-1"));
    page.wait_for(
        "document.querySelectorAll('[data-row]').length === 1 && !!document.querySelector(\"[data-row='sum-12']\")",
        WAIT,
    );

    page.goto(&url(&server, "/instance/sum-12"));
    page.wait_for(
        "document.querySelectorAll('#timeline [data-bar=\"activity\"]').length === 12",
        WAIT,
    );
    let labels = page.eval(
        "[...document.querySelectorAll('#timeline [data-bar=\"activity\"]')].map(g => g.getAttribute('data-label'))",
    );
    assert!(
        labels
            .as_array()
            .is_some_and(|l| l.iter().all(|l| l == "file_size")),
        "{labels}"
    );
    assert_eq!(
        page.text("#output").trim(),
        (0..12u64).map(|f| f * 10).sum::<u64>().to_string()
    );
    assert!(
        page.text("#history").contains("TaskScheduled"),
        "the history table lists the calls"
    );
    screenshot(&page, "instance-fan-out-timeline");

    // A history of 10,000 events: the table pages it, the timeline shows its first bars.
    assert_eq!(
        server
            .post("/orchestrators/total_size/sum-5000", "5000")
            .status,
        202
    );
    wait_finished(&server, "sum-5000");
    page.goto(&url(&server, "/instance/sum-5000"));
    let started = std::time::Instant::now();
    page.wait_for(
        "document.body.innerText.includes('Showing the first 400 of 5000 calls') && document.querySelectorAll('#history tbody tr').length === 100",
        WAIT,
    );
    println!(
        "a 10,000-event instance page rendered in {:?}",
        started.elapsed()
    );
    // The history's length depends on how many turns the 5,000 results arrived in: at
    // least one, for 10,004 events (the start turn's `OrchestratorStarted`,
    // `ExecutionStarted` and 5,000 calls; one turn's `OrchestratorStarted`, 5,000 results
    // and `ExecutionCompleted`). The pager must show the stored total.
    let stored = server
        .get("/instances/sum-5000?showHistory=true&showInput=false")
        .json()["historyEvents"]
        .as_array()
        .map(Vec::len)
        .expect("the history");
    assert!(stored >= 10_004, "{stored}");
    let pager = page.text("#history .pager");
    assert!(pager.contains(&format!("of {stored}")), "{pager}");
    page.click("#history .pager a");
    page.wait_for(
        "document.querySelector('#history .pager').innerText.includes('events 100–199')",
        WAIT,
    );

    page.goto(&url(&server, "/"));
    page.wait_for(
        "document.querySelector('[data-count=\"Completed\"] .n') && document.querySelector('[data-count=\"Completed\"] .n').innerText === '3'",
        WAIT,
    );
    screenshot(&page, "overview");
    no_console_errors(&page);
}

#[test]
fn a_waiting_approval_shows_the_event_and_the_timer_and_raising_it_from_the_page_completes_it() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-approval");
    let server = Server::start(HUMAN_INTERACTION, &database(&dir), &[], &[]);
    let request = json!({
        "request": "PO-1", "amount": 1200, "approver": "ana", "manager": "ben", "timeout_secs": 3600
    })
    .to_string();
    assert_eq!(
        server.post("/orchestrators/approval/po-1", &request).status,
        202
    );
    assert_eq!(
        server.post("/orchestrators/approval/po-2", &request).status,
        202
    );

    let page = browser.open(&url(&server, "/instance/po-1"));
    page.auto_confirm();
    page.wait_for(
        "!!document.querySelector('[data-wait=\"event\"][data-event=\"approval\"]') && !!document.querySelector('[data-wait=\"timer\"]')",
        WAIT,
    );
    let waits = page.text("#waiting");
    assert!(waits.contains("approval"), "{waits}");
    assert!(waits.contains("timer due"), "{waits}");
    assert!(
        page.eval("!!document.querySelector('#timeline [data-now]')")
            .as_bool()
            .unwrap_or(false),
        "running: now is marked"
    );
    screenshot(&page, "instance-waiting");

    page.fill("#raise-form textarea", r#"{"approved": true, "by": "ana"}"#);
    page.click("#raise-form button[type=submit]");
    page.wait_for(
        "document.querySelector('#instance') && document.querySelector('#instance').getAttribute('data-status') === 'Completed'",
        WAIT,
    );
    let status = wait_finished(&server, "po-1");
    assert_eq!(
        status["output"],
        json!({ "approved": true, "decided_by": "ana", "escalated": false })
    );
    assert!(
        page.dialogs().iter().any(|d| d.contains("Raise event")),
        "the raise was confirmed: {:?}",
        page.dialogs()
    );
    // The approval won over the timeout timer, which was cancelled: its bar says so.
    page.wait_for(
        "!!document.querySelector('#timeline [data-bar=\"timer\"] rect.cancelled')",
        WAIT,
    );
    let cancelled = page.eval(
        "[...document.querySelectorAll('#timeline [data-bar=\"timer\"]')].map(g => g.getAttribute('data-label') + ' | ' + g.querySelector('title').textContent)",
    );
    let cancelled = cancelled.to_string();
    assert!(cancelled.contains("timer (cancelled)"), "{cancelled}");
    assert!(
        cancelled.contains("cancelled: lost a select"),
        "{cancelled}"
    );
    screenshot(&page, "instance-timer-cancelled");

    // Invalid JSON is refused on the page, and nothing is sent.
    page.goto(&url(&server, "/instance/po-2"));
    page.wait_for("!!document.querySelector('#raise-form')", WAIT);
    page.fill("#raise-form textarea", "{not json");
    page.click("#raise-form button[type=submit]");
    page.wait_for(
        "document.getElementById('toast').innerText.includes('not JSON')",
        WAIT,
    );
    assert_eq!(
        server.get("/instances/po-2").json()["runtimeStatus"],
        "Running"
    );

    // Terminate from the page.
    page.click("#terminate");
    page.wait_for(
        "document.querySelector('#instance') && document.querySelector('#instance').getAttribute('data-status') === 'Terminated'",
        WAIT,
    );
    assert_eq!(
        wait_finished(&server, "po-2")["runtimeStatus"],
        "Terminated"
    );
    // Bulk: select two running approvals in the list and terminate them together.
    for id in ["po-3", "po-4"] {
        assert_eq!(
            server
                .post(&format!("/orchestrators/approval/{id}"), &request)
                .status,
            202
        );
    }
    for id in ["po-3", "po-4"] {
        wait_until(&format!("{id} to run"), WAIT, || {
            (server.get(&format!("/instances/{id}")).json()["runtimeStatus"] == "Running")
                .then_some(())
        });
    }
    page.goto(&url(&server, "/instances?status=Running"));
    page.wait_for(
        "!!document.querySelector(\"[data-row='po-3']\") && !!document.querySelector(\"[data-row='po-4']\")",
        WAIT,
    );
    page.click("[data-row='po-3'] input.pick");
    page.click("[data-row='po-4'] input.pick");
    page.click("button.danger");
    for id in ["po-3", "po-4"] {
        assert_eq!(
            wait_finished(&server, id)["runtimeStatus"],
            "Terminated",
            "{id}"
        );
    }
    // Terminations are applied by the worker after the API accepts them: the live list
    // catches up.
    page.goto(&url(&server, "/instances?status=Running&live=1"));
    page.wait_for(
        "document.body.innerText.includes('No instances match')",
        WAIT,
    );

    // An action the API refuses reports the API's text.
    let refused =
        page.eval("fetch('instances/po-2/terminate', {method: 'POST'}).then(r => r.status)");
    assert_eq!(refused, json!(410));
    no_console_errors(&page);
}

#[test]
fn an_entity_page_shows_its_state_after_signals_and_signals_from_the_page() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-entity");
    let server = Server::start(AGGREGATOR, &database(&dir), &[], &[]);
    for amount in [5, 7] {
        let signalled = server.post("/entities/Counter/north?op=add", &amount.to_string());
        assert_eq!(signalled.status, 202, "{}", signalled.body);
    }
    wait_until("the signals to apply", WAIT, || {
        let e = server.get("/entities/Counter/north");
        (e.status == 200 && e.json()["state"]["value"] == 12).then_some(())
    });

    let page = browser.open(&url(&server, "/entities"));
    page.wait_for(
        "!!document.querySelector(\"[data-entity='Counter/north']\")",
        WAIT,
    );
    page.goto(&url(&server, "/entity/Counter/north"));
    page.wait_for(
        "document.querySelector('#entity-state') && document.querySelector('#entity-state').innerText.includes('12')",
        WAIT,
    );
    let ops = page.eval("[...document.querySelectorAll('#signal-form option')].map(o => o.value)");
    assert!(
        ops.as_array().is_some_and(|o| o.contains(&json!("add"))),
        "the operations come from /functions: {ops}"
    );
    page.eval("document.querySelector('#signal-form select').value = 'add'");
    page.fill("#signal-form textarea", "30");
    page.click("#signal-form button[type=submit]");
    page.wait_for(
        "document.querySelector('#entity-state') && document.querySelector('#entity-state').innerText.includes('42')",
        WAIT,
    );
    assert_eq!(
        server.get("/entities/Counter/north").json()["state"]["value"],
        42
    );
    screenshot(&page, "entity");

    // On a phone, in the dark.
    page.set_viewport(390, 844, true);
    page.goto(&url(&server, "/functions"));
    page.wait_for(
        "!!document.querySelector(\"[data-function='tally']\")",
        WAIT,
    );
    page.click("#theme");
    assert_eq!(
        page.eval("document.documentElement.getAttribute('data-theme')"),
        json!("dark")
    );
    screenshot(&page, "functions-phone-dark");
    no_console_errors(&page);
}

#[test]
fn with_a_token_nothing_loads_until_it_is_given() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-token");
    let server = Server::start(
        FAN_OUT_FAN_IN,
        &database(&dir),
        &[],
        &[("DURACTOR_API_TOKEN", "s3cret-token")],
    );
    let started = server.request(
        "POST",
        "/orchestrators/total_size/secret-run",
        &[
            ("Authorization", "Bearer s3cret-token"),
            ("Content-Type", "application/json"),
        ],
        Some(b"4"),
    );
    assert_eq!(started.status, 202, "{}", started.body);

    let page = browser.open(&url(&server, "/instances"));
    page.wait_for("!!document.querySelector('#token-form')", WAIT);
    let shown = page.eval("document.body.innerText");
    assert!(
        !shown.as_str().unwrap_or_default().contains("secret-run"),
        "no data without the token: {shown}"
    );
    // The page and its assets carry no data, and the API refuses the page's calls.
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/instances").status, 401);

    page.fill("#token-form input[name=token]", "wrong");
    page.click("#token-form button");
    page.wait_for("document.body.innerText.includes('refused')", WAIT);
    page.fill("#token-form input[name=token]", "s3cret-token");
    page.click("#token-form button");
    page.wait_for(
        "!!document.querySelector(\"[data-row='secret-run']\")",
        WAIT,
    );
}

const APPROVAL_CHANGED: &str = env!("CARGO_BIN_EXE_approval_changed");

#[test]
fn a_nondeterminism_failure_shows_the_position_and_both_calls() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-nondeterminism");
    let db = database(&dir);
    let old = Server::start(HUMAN_INTERACTION, &db, &[], &[]);
    let request = json!({
        "request": "PO-9", "amount": 9, "approver": "ana", "manager": "ben", "timeout_secs": 3600
    })
    .to_string();
    assert_eq!(
        old.post("/orchestrators/approval/po-9", &request).status,
        202
    );
    wait_until("po-9 to wait for ana", WAIT, || {
        (old.get("/instances/po-9").json()["customStatus"] == "waiting for ana").then_some(())
    });
    old.kill();

    // A build whose `approval` calls another activity first loads it when the event arrives.
    let new = Server::start(APPROVAL_CHANGED, &db, &[], &[]);
    let raised = new.post(
        "/instances/po-9/raiseEvent/approval",
        r#"{"approved": true}"#,
    );
    assert_eq!(raised.status, 202, "{}", raised.body);
    let status = wait_finished(&new, "po-9");
    assert_eq!(status["runtimeStatus"], "Failed", "{status}");

    let page = browser.open(&url(&new, "/instance/po-9"));
    page.wait_for("!!document.querySelector('#nondeterminism')", WAIT);
    let shown = page.text("#nondeterminism");
    for expected in [
        "2",
        "a call to activity `notify` (TaskScheduled #0)",
        "calls activity `audit` as durable call #0",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    screenshot(&page, "instance-nondeterminism");
    no_console_errors(&page);
}

#[test]
fn a_schedule_made_on_the_page_runs_pauses_and_runs_now_and_flow_control_shows_what_waits() {
    const APP: &str = env!("CARGO_BIN_EXE_bounded_app");
    let Some(browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new("dash-schedules");
    let server = Server::start(APP, &database(&dir), &[], &[]);
    let page = browser.open(&url(&server, "/schedules"));
    page.auto_confirm();
    page.wait_for(
        "document.querySelector('#schedules') && document.querySelector('#schedules').innerText.includes('No schedules yet')",
        WAIT,
    );

    // Made from the form: every second, buffer one, with an input.
    page.fill("#schedule-form input[name=id]", "web");
    page.eval("document.querySelector('#schedule-form select[name=orchestrator]').value = 'scheduled_run'");
    page.eval("document.querySelector('#schedule-form select[name=kind]').value = 'every'");
    page.fill("#schedule-form input[name=when]", "1");
    page.eval("document.querySelector('#schedule-form select[name=overlap]').value = 'bufferOne'");
    page.fill(
        "#schedule-form textarea[name=input]",
        r#"{"log": "-", "run_ms": 0}"#,
    );
    page.click("#schedule-form button[type=submit]");
    page.wait_for(
        "location.hash === '#/schedule/web' && !!document.querySelector('#schedule')",
        WAIT,
    );
    let spec = server.get("/schedules/web").json()["spec"].clone();
    assert_eq!(spec["orchestrator"], "scheduled_run");
    assert_eq!(
        spec["timing"],
        json!({"every": {"everyMs": 1000, "offsetMs": 0}})
    );
    assert_eq!(spec["overlap"], "bufferOne");
    assert_eq!(spec["input"], json!({"log": "-", "run_ms": 0}));
    assert_eq!(page.text("#timing"), "every 1 s");

    // Its runs show up as they end, each linking to its instance.
    page.wait_for(
        "!!document.querySelector('[data-run] [data-outcome=completed]')",
        WAIT,
    );
    let run = page.eval(
        "document.querySelector('[data-run] a[data-instance]').getAttribute('data-instance')",
    );
    let run = run
        .as_str()
        .expect("a run links to its instance")
        .to_owned();
    assert!(run.starts_with("web@"), "run ids are schedule@tick: {run}");
    assert_eq!(
        server.get(&format!("/instances/{run}")).json()["runtimeStatus"],
        "Completed"
    );

    // Paused from the page (the prompt's default note), then run now while paused.
    page.click("#pause");
    page.wait_for(
        "document.querySelector('#schedule') && document.querySelector('#schedule').dataset.paused === 'true'",
        WAIT,
    );
    let paused = server.get("/schedules/web").json();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["note"], "paused from the dashboard");
    assert_eq!(page.text("#next-run"), "paused");
    let started = paused["started"].as_u64().unwrap();
    page.click("#trigger");
    let after = wait_until("the run-now to start a run", WAIT, || {
        let status = server.get("/schedules/web").json();
        (status["started"].as_u64()? > started).then_some(status)
    });
    assert_eq!(after["paused"], true, "a run-now does not resume it");
    page.wait_for(
        &format!(
            "document.querySelector('#started') && Number(document.querySelector('#started').innerText) >= {}",
            started + 1
        ),
        WAIT,
    );
    screenshot(&page, "schedule");

    // The list shows it paused.
    page.goto(&url(&server, "/schedules"));
    page.wait_for(
        "!!document.querySelector(\"[data-schedule='web'] [data-paused]\")",
        WAIT,
    );
    assert_eq!(
        page.text("[data-schedule='web'] td:nth-child(3)"),
        "every 1 s"
    );
    screenshot(&page, "schedules");

    // Flow control: 3 at once per customer, the rest waiting, as the page shows them.
    let started = server.post(
        "/orchestrators/fan_out_limited/limited",
        r#"{"activity": "per_customer", "prefix": "dash", "keys": 2, "count": 24, "ms": 1500}"#,
    );
    assert_eq!(started.status, 202, "{}", started.body);
    page.goto(&url(&server, "/functions"));
    page.wait_for(
        "!!document.querySelector(\"[data-flow='per_customer']\")",
        WAIT,
    );
    assert_eq!(
        page.text("[data-flow='per_customer']"),
        "3 at once (per /customer)"
    );
    assert_eq!(page.text("[data-flow='rate_limited']"), "50 per 1 s");
    assert_eq!(page.text("[data-flow='record_run']"), "unlimited");
    assert_eq!(
        page.text("[data-flow='limited_job']"),
        "2 at once (per /customer)"
    );
    let row = "[data-flow-row='per_customer/dash-0']";
    page.wait_for(
        &format!(
            "!!document.querySelector(\"{row}\") && document.querySelector(\"{row} td:nth-child(3)\").innerText === '3' && Number(document.querySelector(\"{row} td:nth-child(4)\").innerText) > 0"
        ),
        WAIT,
    );
    let api = server.get("/flow?activity=per_customer").json();
    let key = api["flow"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == "dash-0"))
        .cloned()
        .unwrap_or_else(|| panic!("GET /flow has no row for dash-0: {api}"));
    assert!(key["running"].as_u64().unwrap() <= 3, "{key}");
    screenshot(&page, "flow-control");
    wait_finished(&server, "limited");

    // Orchestrations beyond their limit: held, Pending, and the page says why.
    for i in 0..3 {
        let started = server.post(
            &format!("/orchestrators/limited_job/dash-job-{i}"),
            r#"{"customer": "dash", "tag": "dash", "ms": 4000}"#,
        );
        assert_eq!(started.status, 202, "{}", started.body);
    }
    page.goto(&url(&server, "/schedules"));
    page.goto(&url(&server, "/functions"));
    let row = "[data-flow-row='limited_job/dash']";
    page.wait_for(
        &format!(
            "!!document.querySelector(\"{row}\") && document.querySelector(\"{row} td:nth-child(3)\").innerText === '2' && document.querySelector(\"{row} td:nth-child(4)\").innerText === '1'"
        ),
        WAIT,
    );
    assert_eq!(
        page.eval(&format!("document.querySelector(\"{row}\").dataset.kind")),
        json!("orchestration")
    );
    page.goto(&url(&server, "/instance/dash-job-2"));
    page.wait_for("!!document.querySelector(\"[data-wait='flow']\")", WAIT);
    assert!(
        page.text("[data-wait='flow']").contains(
            "limited_job runs 2 at once (per /customer); 2 running for key dash, 1 waiting"
        ),
        "{}",
        page.text("[data-wait='flow']")
    );
    assert_eq!(
        page.eval("document.querySelector('#instance').dataset.status"),
        json!("Pending")
    );
    screenshot(&page, "instance-held");
    for i in 0..3 {
        wait_finished(&server, &format!("dash-job-{i}"));
    }
    no_console_errors(&page);
}
