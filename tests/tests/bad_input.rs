//! Bad input gets a clear error and loses nothing.

use std::time::Duration;

use duractor::client::ListQuery;
use duractor::prelude::*;
use duractor_tests::TestApp;

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn echo(_ctx: ActivityContext, text: String) -> Result<String, duractor::Error> {
    Ok(text)
}

#[orchestrator]
async fn greet(ctx: OrchestrationContext, count: u32) -> Result<String, duractor::Error> {
    ctx.call_activity(Echo, format!("hello x{count}")).await
}

#[tokio::test]
async fn malformed_input_json_is_rejected_and_nothing_is_created() {
    let app = TestApp::start("bad-json").await;
    let err = app
        .client
        .start_by_name("greet", "{not json")
        .await
        .unwrap_err();
    assert!(
        matches!(err, duractor::Error::InvalidPayload { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not valid JSON"), "{err}");

    let err = app
        .client
        .start_by_name("greet", r#""three""#)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid input for orchestrator `greet`"),
        "{err}"
    );
    assert!(err.to_string().contains("expected u32"), "{err}");
    assert!(
        app.client
            .list(ListQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Good input by name works.
    let id = app.client.start_by_name("greet", "3").await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "hello x3");
    app.stop().await;
}

#[tokio::test]
async fn unknown_orchestrator_name_is_a_clear_error() {
    let app = TestApp::start("unknown-name").await;
    let err = app.client.start_by_name("gret", "3").await.unwrap_err();
    match &err {
        duractor::Error::UnknownOrchestrator { name, known } => {
            assert_eq!(name, "gret");
            assert!(known.contains("greet"), "{known}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("no orchestrator named `gret` is registered")
    );
    assert!(
        app.client
            .list(ListQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[activity]
async fn explode(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    panic!("the flux capacitor overheated")
}

#[orchestrator]
async fn survive_panic(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    match ctx.call_activity(Explode, ()).await {
        Ok(()) => Ok("no panic?".into()),
        Err(duractor::Error::ActivityFailed { name, failure }) => Ok(format!(
            "{name} failed with {}: {}",
            failure.kind, failure.message
        )),
        Err(other) => Err(other),
    }
}

#[tokio::test]
async fn a_panicking_activity_is_an_error_for_the_orchestrator() {
    let app = TestApp::start("activity-panic").await;
    let id = app.client.start(SurvivePanic, ()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<String>().unwrap(),
        "explode failed with panic: activity `explode` panicked: the flux capacitor overheated"
    );
    app.stop().await;
}

#[orchestrator]
async fn doomed(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    ctx.call_activity(Echo, "before".to_string()).await?;
    panic!("orchestrator bug: index out of range")
}

#[tokio::test]
async fn a_panicking_orchestrator_fails_its_instance_and_the_worker_keeps_serving() {
    let app = TestApp::start("orchestrator-panic").await;
    let doomed = app.client.start(Doomed, ()).await.unwrap();
    let status = app.client.wait_for_completion(&doomed, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Failed);
    let failure = status.failure.unwrap();
    assert_eq!(failure.kind, "panic");
    assert_eq!(
        failure.message,
        "orchestrator `doomed` panicked: orchestrator bug: index out of range"
    );

    let healthy = app.client.start(Greet, 1).await.unwrap();
    let status = app
        .client
        .wait_for_completion(&healthy, WAIT)
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "hello x1");
    app.stop().await;
}

#[orchestrator]
async fn wait_forever(ctx: OrchestrationContext, tag: String) -> Result<String, duractor::Error> {
    ctx.wait_for_event::<()>("stop").await?;
    Ok(tag)
}

#[tokio::test]
async fn a_duplicate_instance_id_is_rejected_while_running() {
    let app = TestApp::start("duplicate").await;
    let id = app
        .client
        .start(WaitForever, "first".to_string())
        .instance_id("order-42")
        .await
        .unwrap();
    assert_eq!(id, "order-42");

    let err = app
        .client
        .start(WaitForever, "second".to_string())
        .instance_id("order-42")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, duractor::Error::InstanceExists { instance_id, .. } if instance_id == "order-42"),
        "{err:?}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");

    // The first instance is untouched and still completes with its own input.
    app.client
        .raise_event("order-42", "stop", &())
        .await
        .unwrap();
    let status = app
        .client
        .wait_for_completion("order-42", WAIT)
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "first");

    // Once finished, the id can be used again.
    app.client
        .start(WaitForever, "third".to_string())
        .instance_id("order-42")
        .await
        .unwrap();
    app.client
        .raise_event("order-42", "stop", &())
        .await
        .unwrap();
    let status = app
        .client
        .wait_for_completion("order-42", WAIT)
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "third");
    let history = app.client.history("order-42").await.unwrap();
    let starts = history
        .iter()
        .filter(|e| matches!(e, duractor::Event::ExecutionStarted { .. }))
        .count();
    assert_eq!(starts, 1, "the old history was replaced");
    app.stop().await;
}

#[tokio::test]
async fn unknown_instances_are_clear_errors() {
    let app = TestApp::start("unknown-instance").await;
    let err = app
        .client
        .raise_event("nope", "stop", &())
        .await
        .unwrap_err();
    assert_eq!(err, duractor::Error::InstanceNotFound("nope".into()));
    let err = app.client.status("nope").await.unwrap_err();
    assert!(
        err.to_string().starts_with("no instance `nope` exists"),
        "{err}"
    );
    assert!(app.client.history("nope").await.is_err());
    let err = app
        .client
        .start(Greet, 1)
        .instance_id("")
        .await
        .unwrap_err();
    assert!(matches!(err, duractor::Error::InvalidArgument(_)));
    app.stop().await;
}

#[tokio::test]
async fn a_second_worker_on_the_same_file_is_refused() {
    let app = TestApp::start("second-worker").await;
    let err = Runtime::builder(app.store.clone())
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another duractor worker is already running"),
        "{err}"
    );
    app.stop().await;
}
