//! Replay speed: rebuilding an orchestrator from a 10,000-event history, as a worker does
//! after a restart or an unload.
//!
//! ```text
//! cargo bench -p duractor-benches --bench replay
//! ```

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use duractor::prelude::*;
use duractor::registry::OrchestratorEntry;
use duractor::{Event, Payload};

#[activity]
async fn step(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, duractor::Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(Step, value).await?;
    }
    Ok(value)
}

#[activity]
async fn echo(_ctx: ActivityContext, text: String) -> Result<String, duractor::Error> {
    Ok(text)
}

/// `chain` after one step whose input and output are `blob`: the large payload is one step's
/// business, and the other steps' replay should not pay for it.
#[orchestrator]
async fn chain_after_blob(
    ctx: OrchestrationContext,
    (steps, blob): (u64, String),
) -> Result<u64, duractor::Error> {
    let echoed = ctx.call_activity(Echo, blob).await?;
    let mut value = echoed.len() as u64;
    for _ in 0..steps {
        value = ctx.call_activity(Step, value).await?;
    }
    Ok(value)
}

/// The history of `chain` after `steps` completed steps (3 events per step).
fn history(steps: u64) -> Vec<Event> {
    let at = |i: u64| {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + i as i64).unwrap_or_default()
    };
    let input = Payload::encode(&(steps + 1)).unwrap();
    let mut events = vec![
        Event::OrchestratorStarted { timestamp: at(0) },
        Event::ExecutionStarted {
            name: "chain".into(),
            version: String::new(),
            input,
            execution: 0,
            parent: None,
        },
        Event::TaskScheduled {
            seq: 0,
            name: "step".into(),
            input: Payload::encode(&0u64).unwrap(),
        },
    ];
    for i in 0..steps {
        events.push(Event::OrchestratorStarted {
            timestamp: at(i + 1),
        });
        events.push(Event::TaskCompleted {
            seq: i,
            output: Payload::encode(&(i + 1)).unwrap(),
        });
        events.push(Event::TaskScheduled {
            seq: i + 1,
            name: "step".into(),
            input: Payload::encode(&(i + 1)).unwrap(),
        });
    }
    events
}

fn replay(c: &mut Criterion) {
    let entry = OrchestratorEntry::of::<Chain>();
    let events = history(3_333);
    assert_eq!(events.len(), 10_002);
    duractor::replay::check_history(&entry, "bench", &events).expect("the history replays");
    c.bench_function("replay 10,000 events", |b| {
        b.iter(|| duractor::replay::check_history(&entry, "bench", &events))
    });

    // As loaded from the store: decode every event from its JSON text, then replay.
    let stored: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    c.bench_function("decode + replay 10,000 events", |b| {
        b.iter(|| {
            let decoded: Vec<Event> = stored
                .iter()
                .map(|s| serde_json::from_str(s).unwrap())
                .collect();
            duractor::replay::check_history(&entry, "bench", &decoded)
        })
    });
}

/// The history of `chain_after_blob` with `steps` completed steps after the blob's echo.
fn history_after_blob(steps: u64, blob: &str) -> Vec<Event> {
    let at = |i: u64| {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + i as i64).unwrap_or_default()
    };
    let blob_len = blob.len() as u64;
    let mut events = vec![
        Event::OrchestratorStarted { timestamp: at(0) },
        Event::ExecutionStarted {
            name: "chain_after_blob".into(),
            version: String::new(),
            input: Payload::encode(&(steps + 1, blob)).unwrap(),
            execution: 0,
            parent: None,
        },
        Event::TaskScheduled {
            seq: 0,
            name: "echo".into(),
            input: Payload::encode(&blob).unwrap(),
        },
        Event::OrchestratorStarted { timestamp: at(1) },
        Event::TaskCompleted {
            seq: 0,
            output: Payload::encode(&blob).unwrap(),
        },
    ];
    for i in 0..steps {
        events.push(Event::TaskScheduled {
            seq: i + 1,
            name: "step".into(),
            input: Payload::encode(&(blob_len + i)).unwrap(),
        });
        events.push(Event::OrchestratorStarted {
            timestamp: at(i + 2),
        });
        events.push(Event::TaskCompleted {
            seq: i + 1,
            output: Payload::encode(&(blob_len + i + 1)).unwrap(),
        });
    }
    events.push(Event::TaskScheduled {
        seq: steps + 1,
        name: "step".into(),
        input: Payload::encode(&(blob_len + steps)).unwrap(),
    });
    events
}

/// A 512 KiB payload (half the default payload limit) in the first step: replay costs what that step costs (the payload is
/// decoded once, by the future that receives it), not that much again for every other step.
fn replay_after_blob(c: &mut Criterion) {
    let entry = OrchestratorEntry::of::<ChainAfterBlob>();
    let blob = "x".repeat(512 << 10);
    let events = history_after_blob(3_332, &blob);
    assert_eq!(events.len(), 10_002);
    duractor::replay::check_history(&entry, "bench", &events).expect("the history replays");
    c.bench_function("replay 10,000 events after a 512 KiB step", |b| {
        b.iter(|| duractor::replay::check_history(&entry, "bench", &events))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = replay, replay_after_blob
}
criterion_main!(benches);
