//! What a new user, an attacker and a Durable Functions user hit (issue 11), through the
//! library: rewinds of orchestrator-code failures, reserved entity ids, finished instances,
//! purge of nothing, huge durations, a runaway fan-out, deep payloads, event names, status
//! after continue-as-new, and dropping a runtime. The HTTP and command-line sides are in
//! `hardening_http.rs`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use duractor::client::ListQuery;
use duractor::prelude::*;
use duractor::{Error, Event, Limits, Store};
use duractor_sqlx::SqliteStore;
use duractor_tests::{TempDir, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// Whether the instance's history has an event for which `pred` holds.
async fn history_has(client: &Client, id: &str, pred: impl Fn(&Event) -> bool) -> bool {
    client.history(id).await.unwrap().iter().any(pred)
}

async fn wait_until(client: &Client, id: &str, status: RuntimeStatus) {
    eventually(&format!("{id} to be {status}"), WAIT, || async {
        (client.status(id).await.ok()?.status == status).then_some(())
    })
    .await;
}

/// Whether `fussy` accepts its input yet: the "fix" a user deploys before rewinding.
static FIXED: AtomicBool = AtomicBool::new(false);

#[activity]
async fn echo(_ctx: ActivityContext, text: String) -> Result<String, Error> {
    Ok(text)
}

/// Fails in its own code (not in an activity) until `FIXED` is set.
#[orchestrator]
async fn fussy(ctx: OrchestrationContext, text: String) -> Result<String, Error> {
    let echoed = ctx.call_activity(Echo, text).await?;
    #[duractor::allow_nondeterminism(reason = "the test deploys a fix between runs")]
    let fixed = FIXED.load(Ordering::SeqCst);
    if !fixed {
        return Err(Error::msg(format!("cannot handle `{echoed}` yet")));
    }
    Ok(format!("handled {echoed}"))
}

#[tokio::test]
async fn rewinding_an_instance_whose_orchestrator_code_failed_runs_that_code_again() {
    let app = TestApp::start("rewind-code-failure").await;
    let client = &app.client;
    let id = client.start(Fussy, "x".into()).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);

    // Still broken: the rewind re-runs the code, which fails again (not Running forever).
    client.rewind(&id, "try again").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed, "{status:?}");
    assert!(
        status
            .failure
            .as_ref()
            .is_some_and(|f| f.message.contains("cannot handle `x` yet")),
        "{status:?}"
    );

    // Fixed: the rewind completes it, and the activity that succeeded is not run again.
    FIXED.store(true, Ordering::SeqCst);
    client.rewind(&id, "fixed").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "handled x");
    let history = client.history(&id).await.unwrap();
    let scheduled = history
        .iter()
        .filter(|e| matches!(e, Event::TaskScheduled { .. }))
        .count();
    assert_eq!(scheduled, 1, "{history:#?}");
    assert!(matches!(
        history.last(),
        Some(Event::ExecutionCompleted { .. })
    ));
    app.stop().await;
}

#[duractor::entity]
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    total: i64,
}

#[duractor::entity]
impl Tally {
    fn add(&mut self, n: i64) {
        self.total += n;
    }

    fn start_named(&mut self, ctx: &mut EntityContext, id: String) {
        ctx.start_orchestration(Fussy, "from an entity".into(), Some(id));
    }
}

#[orchestrator]
async fn child_with_id(ctx: OrchestrationContext, id: String) -> Result<String, Error> {
    ctx.call_sub_orchestrator_with_id(Fussy, "child".into(), id)
        .await
}

#[tokio::test]
async fn entity_ids_are_reserved_for_entities_everywhere_ids_enter() {
    let app = TestApp::start("entity-ids-reserved").await;
    let client = &app.client;
    let entity = EntityId::of::<Tally>("k").instance_id();
    assert_eq!(entity, "@Tally@k");

    // The client.
    let err = client
        .start(Fussy, "x".into())
        .instance_id(&entity)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("reserved for entity ids"), "{err}");
    let err = client
        .start_by_name("fussy", "\"x\"")
        .instance_id("@anything")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // A sub-orchestration id: the call fails before anything is scheduled.
    let id = client.start(ChildWithId, entity.clone()).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert!(
        failure.message.contains("reserved for entity ids"),
        "{failure:?}"
    );
    assert!(
        !history_has(client, &id, |e| matches!(
            e,
            Event::SubOrchestrationScheduled { .. }
        ))
        .await
    );

    // `EntityContext::start_orchestration`: the operation fails and leaves no trace; the
    // next operation runs on the state as it was.
    let starter = client.signal_entity::<Tally>("starter");
    starter.start_named(entity.clone()).await.unwrap();
    starter.add(2).await.unwrap();
    let state = eventually("the operations of Tally/starter", WAIT, || async {
        client.entity_state::<Tally>("starter").await.ok().flatten()
    })
    .await;
    assert_eq!(state.total, 2);

    // Signals to the entity whose id was tried are not lost.
    client.signal_entity::<Tally>("k").add(5).await.unwrap();
    let state = eventually("the signal to Tally/k", WAIT, || async {
        client.entity_state::<Tally>("k").await.ok().flatten()
    })
    .await;
    assert_eq!(state.total, 5);
    let instances = client.list(ListQuery::default()).await.unwrap();
    assert!(
        instances.iter().all(|i| !i.instance_id.starts_with('@')),
        "{instances:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn entity_rows_are_not_instances() {
    let app = TestApp::start("entity-rows-not-instances").await;
    let client = &app.client;
    client.signal_entity::<Tally>("k").add(1).await.unwrap();
    eventually("Tally/k to exist", WAIT, || async {
        client.entity_state::<Tally>("k").await.ok().flatten()
    })
    .await;
    let id = "@Tally@k";
    for result in [
        client.status(id).await.map(|_| ()),
        client.history(id).await.map(|_| ()),
        client.terminate(id, "no").await,
        client.suspend(id, "no").await,
        client.resume(id, "no").await,
        client.rewind(id, "no").await,
        client.raise_event(id, "go", &1).await,
        client.restart(id, false).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::InstanceNotFound(_))),
            "{result:?}"
        );
    }
    assert!(!client.purge(id).await.unwrap());
    // The store agrees: an entity row is no instance status.
    assert!(app.store.get_instance(id).await.unwrap().is_none());
    // The entity is untouched.
    assert_eq!(
        client
            .entity_state::<Tally>("k")
            .await
            .unwrap()
            .unwrap()
            .total,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn purging_nothing_returns_false() {
    let app = TestApp::start("purge-nothing").await;
    assert!(!app.client.purge("nobody").await.unwrap());
    let id = app.client.start(Fussy, "p".into()).await.unwrap();
    app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert!(app.client.purge(&id).await.unwrap());
    assert!(!app.client.purge(&id).await.unwrap());
    app.stop().await;
}

#[orchestrator]
async fn waits_forever(ctx: OrchestrationContext, secs: u64) -> Result<String, Error> {
    match ctx
        .wait_for_event_timeout::<String>("go", Duration::from_secs(secs))
        .await
    {
        Ok(_) => Ok("waited".into()),
        Err(error) => Ok(format!("refused: {error}")),
    }
}

#[orchestrator]
async fn sleeps_forever(ctx: OrchestrationContext, secs: u64) -> Result<(), Error> {
    ctx.sleep(Duration::from_secs(secs)).await;
    // Never reached: the sleep failed the execution.
    ctx.call_activity(Echo, "after the sleep".into()).await?;
    Ok(())
}

#[tokio::test]
async fn huge_durations_fail_the_call_with_a_clear_error_instead_of_panicking() {
    let app = TestApp::start("huge-durations").await;
    let client = &app.client;

    // A wait with a timeout fails the call: the code sees the error.
    let id = client.start(WaitsForever, u64::MAX).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    let text = status.output::<String>().unwrap();
    assert!(text.starts_with("refused: "), "{text}");
    assert!(text.contains("9999-12-31"), "{text}");

    // A plain sleep has no error to return: the execution fails, saying why, and the code
    // after it does not run.
    let id = client.start(SleepsForever, u64::MAX).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert!(failure.message.contains("ctx.sleep("), "{failure:?}");
    assert!(failure.message.contains("latest time"), "{failure:?}");
    assert!(
        !history_has(client, &id, |e| matches!(
            e,
            Event::TaskScheduled { .. } | Event::TimerCreated { .. }
        ))
        .await
    );

    // The client's own waits: a timeout too long to represent waits without a deadline.
    let id = client.start(WaitsForever, 1).await.unwrap();
    let status = client
        .wait_for_completion(&id, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "waited");

    // The worker survived all of it. (An hour's timeout: with none, the wait could end, and
    // the instance finish, before the event is raised.)
    let id = client.start(WaitsForever, 3600).await.unwrap();
    client.raise_event(&id, "go", "still here").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "waited");
    app.stop().await;
}

static CALLS_MADE: AtomicUsize = AtomicUsize::new(0);

#[orchestrator]
async fn runaway(ctx: OrchestrationContext, width: usize) -> Result<usize, Error> {
    let calls = (0..width).map(|i| {
        #[duractor::allow_nondeterminism(reason = "the test counts how far the loop got")]
        CALLS_MADE.fetch_add(1, Ordering::SeqCst);
        ctx.call_activity(Echo, i.to_string())
    });
    let all = ctx.join_all(calls).await;
    Ok(all.len())
}

#[tokio::test]
async fn the_calls_per_turn_limit_stops_the_code_at_the_call_that_goes_over() {
    let limits = Limits {
        max_actions_per_turn: 100,
        ..Limits::default()
    };
    let app = TestApp::start_with("calls-per-turn", |b| b.limits(limits)).await;
    let client = &app.client;
    let id = client.start(Runaway, 1_000_000).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, "limit_exceeded");
    assert!(
        failure
            .message
            .contains("one turn made 101 durable calls; the limit is 100"),
        "{failure:?}"
    );
    // The loop was stopped at the 101st call, not run to its end.
    assert_eq!(CALLS_MADE.load(Ordering::SeqCst), 101);
    // Nothing of the failing turn was scheduled.
    let history = client.history(&id).await.unwrap();
    assert!(
        history
            .iter()
            .all(|e| !matches!(e, Event::TaskScheduled { .. })),
        "{} events",
        history.len()
    );
    app.stop().await;
}

#[orchestrator]
async fn waits_for_go(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    ctx.wait_for_event::<String>("go").await
}

#[tokio::test]
async fn deep_payloads_and_bad_event_names_are_refused_where_they_enter() {
    let app = TestApp::start("deep-payloads").await;
    let client = &app.client;
    let id = client.start(WaitsForever, 60).await.unwrap();

    let deep: serde_json::Value =
        serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).unwrap();
    client.raise_event(&id, "fine", &deep).await.unwrap();
    let deeper = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let err = client
        .start_by_name("waits_forever", &deeper)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPayload { .. }), "{err:?}");
    assert!(err.to_string().contains("nest 5000 levels deep"), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid input of orchestrator `waits_forever`: "),
        "{err}"
    );

    for name in ["", "a\0b", "line\nbreak"] {
        let err = client.raise_event(&id, name, &1).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{name:?}: {err:?}"
        );
    }
    assert!(client.raise_event(&id, &"e".repeat(257), &1).await.is_err());
    app.stop().await;
}

#[tokio::test]
async fn raising_an_event_to_a_finished_instance_is_an_error() {
    let app = TestApp::start("raise-finished").await;
    let client = &app.client;
    let id = client.start(WaitsForGo, ()).await.unwrap();
    client.raise_event(&id, "go", "now").await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "now");
    let err = client.raise_event(&id, "go", "again").await.unwrap_err();
    assert!(matches!(err, Error::InstanceFinished { .. }), "{err:?}");
    assert!(
        err.to_string().contains("can no longer receive events"),
        "{err}"
    );
    // Nothing was stored for it.
    let events = client.history(&id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::EventRaised { .. }))
            .count(),
        1
    );
    let err = client.raise_event("nobody", "go", "x").await.unwrap_err();
    assert!(matches!(err, Error::InstanceNotFound(_)), "{err:?}");
    app.stop().await;
}

#[orchestrator]
async fn counts_up(ctx: OrchestrationContext, n: u32) -> Result<u32, Error> {
    if n < 3 {
        return ctx.continue_as_new(n + 1).await;
    }
    ctx.wait_for_event::<()>("stop").await?;
    Ok(n)
}

#[tokio::test]
async fn the_status_shows_the_current_executions_input_after_continue_as_new() {
    let app = TestApp::start("input-after-continue").await;
    let client = &app.client;
    let id = client.start(CountsUp, 0).await.unwrap();
    eventually("the third continue-as-new", WAIT, || async {
        let status = client.status(&id).await.ok()?;
        (status.input.decode::<u32>().ok()? == 3).then_some(())
    })
    .await;
    client.raise_event(&id, "stop", &()).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u32>().unwrap(), 3);
    assert_eq!(status.input.decode::<u32>().unwrap(), 3);
    app.stop().await;
}

#[tokio::test]
async fn dropping_a_runtime_frees_the_sqlite_worker_lock_while_clients_live() {
    duractor_tests::init_tracing();
    let dir = TempDir::new("drop-frees-lock");
    let store = SqliteStore::open(dir.file("app.db")).await.unwrap();
    let runtime = Runtime::builder(store.clone()).start().await.unwrap();
    let client = runtime.client();
    let id = client.start(WaitsForGo, ()).await.unwrap();
    wait_until(&client, &id, RuntimeStatus::Running).await;
    drop(runtime);

    // At once, on the same store, with the first runtime's client still alive.
    let runtime = Runtime::builder(store.clone())
        .start()
        .await
        .expect("a new runtime starts once the old one is dropped");
    client
        .raise_event(&id, "go", "after the drop")
        .await
        .unwrap();
    let status = runtime
        .client()
        .wait_for_completion(&id, WAIT)
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "after the drop");
    // A second live runtime is still refused.
    let err = Runtime::builder(store.clone()).start().await.unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    runtime.shutdown().await.unwrap();
    drop(client);
}

#[tokio::test]
async fn dropping_a_runtime_releases_its_postgres_leases() {
    let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
        println!(
            "DURACTOR_TEST_POSTGRES_URL is not set: skipping `dropping_a_runtime_releases_its_postgres_leases`"
        );
        return;
    };
    let options = duractor_sqlx::PostgresStoreOptions {
        schema: format!("dropped_{}", std::process::id()),
        ..Default::default()
    };
    let store = duractor_sqlx::PostgresStore::connect_with(&url, options)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let runtime = Runtime::builder(store.clone())
        .lease_duration(lease)
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let id = client.start(WaitsForGo, ()).await.unwrap();
    wait_until(&client, &id, RuntimeStatus::Running).await;
    drop(runtime);

    // Another worker takes the instance over at once, not after the 60 s lease.
    let runtime = Runtime::builder(store.clone())
        .lease_duration(lease)
        .start()
        .await
        .unwrap();
    client.raise_event(&id, "go", "taken over").await.unwrap();
    let started = std::time::Instant::now();
    let status = client
        .wait_for_completion(&id, Duration::from_secs(20))
        .await
        .expect("the second worker runs the instance before the first one's lease lapses");
    assert_eq!(status.output::<String>().unwrap(), "taken over");
    assert!(started.elapsed() < Duration::from_secs(20));
    runtime.shutdown().await.unwrap();
    store.drop_schema().await.unwrap();
}
