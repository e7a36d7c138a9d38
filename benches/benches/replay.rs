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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = replay
}
criterion_main!(benches);
