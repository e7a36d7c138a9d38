//! Replay-safe tracing: events logged by orchestrator code appear once, not on every replay,
//! and turns and activities run in spans carrying the instance id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duractor::prelude::*;
use duractor_tests::TestApp;
use duractor_tests::trace::TraceFields;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

#[derive(Clone, Default)]
struct Recorder {
    messages: Arc<Mutex<Vec<String>>>,
    spans: Arc<Mutex<Vec<(String, String)>>>,
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let message = TraceFields::of(event).get("message").to_owned();
        if message.starts_with("orchestrator step") {
            self.messages.lock().unwrap().push(message);
        }
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        let id = TraceFields::of_span(attrs).get("instance_id").to_owned();
        if !id.is_empty() {
            self.spans
                .lock()
                .unwrap()
                .push((attrs.metadata().name().to_owned(), id));
        }
    }
}

#[activity]
async fn work(_ctx: ActivityContext, step: u32) -> Result<u32, duractor::Error> {
    Ok(step)
}

#[orchestrator]
async fn chatty(ctx: OrchestrationContext, steps: u32) -> Result<u32, duractor::Error> {
    for step in 0..steps {
        tracing::info!("orchestrator step {step}");
        ctx.call_activity(Work, step).await?;
    }
    Ok(steps)
}

#[tokio::test]
async fn orchestrator_logs_are_emitted_once_despite_replays() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber in this test binary");

    // Unloaded after every turn: each step replays all previous ones.
    let app = TestApp::start_with("tracing", |b| b.idle_unload_after(Duration::ZERO)).await;
    let id = app
        .client
        .start(Chatty, 5)
        .instance_id("chatty-1")
        .await
        .unwrap();
    let status = app
        .client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.output::<u32>().unwrap(), 5);
    app.stop().await;

    let messages = recorder.messages.lock().unwrap().clone();
    let expected: Vec<String> = (0..5)
        .map(|step| format!("orchestrator step {step}"))
        .collect();
    assert_eq!(messages, expected);

    let spans = recorder.spans.lock().unwrap().clone();
    for kind in ["turn", "replay", "activity"] {
        assert!(
            spans
                .iter()
                .any(|(name, id)| name == kind && id == "chatty-1"),
            "no `{kind}` span with the instance id: {spans:?}"
        );
    }
}
