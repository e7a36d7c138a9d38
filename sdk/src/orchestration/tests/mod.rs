//! The executor on its own: made-up histories in, decisions and outcomes out, with no store
//! and no actors. Each file is one concern; [`Instance`] drives an executor the way the
//! instance actor does (a turn per batch of messages, history kept as it grows) and can
//! replay what it recorded into a fresh executor, as after a restart.

mod activities;
mod cancellation;
mod continue_as_new;
mod critical_sections;
mod events;
mod nondeterminism;
mod ordering;
mod sub_orchestrations;
mod timers;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entry::OrchestratorEntry;
use super::executor::{Executor, Outcome, TurnOutput};
use super::{Action, OrchestratorBody};
use crate::error::Failure;
use crate::history::Event;
use crate::limits::Limits;
use crate::payload::Payload;

/// The instance id every test uses.
const ID: &str = "test-instance";

/// `seconds` after a fixed start (the clock of the tests: turns say what time it is).
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
}

fn json(value: impl Serialize) -> Payload {
    Payload::encode(&value).unwrap()
}

/// One orchestration instance driven turn by turn.
struct Instance {
    entry: OrchestratorEntry,
    executor: Executor,
    /// Everything the turns recorded, in order.
    history: Vec<Event>,
}

impl Instance {
    /// Starts orchestrator `O` with `input` in a first turn at time 0.
    fn start<O: OrchestratorBody>(_orchestrator: O, input: impl Serialize) -> (Self, TurnOutput) {
        let entry = OrchestratorEntry::of::<O>();
        let mut instance = Instance {
            entry,
            executor: Executor::new(Arc::from(ID), entry, Limits::default()),
            history: Vec::new(),
        };
        let start = Event::ExecutionStarted {
            name: entry.name.to_owned(),
            version: entry.version.to_owned(),
            input: json(input),
            execution: 0,
            parent: None,
        };
        let out = instance.turn(0, vec![start]);
        (instance, out)
    }

    /// Runs a turn at `seconds` with `messages`, recording what it appends.
    fn turn(&mut self, seconds: i64, messages: Vec<Event>) -> TurnOutput {
        let out = self.executor.run_turn(at(seconds), messages);
        self.history.extend(out.new_events.iter().cloned());
        out
    }

    /// The history without its terminal event: what a replay that must find the outcome
    /// again (a rewind) reads.
    fn unfinished_history(&self) -> Vec<Event> {
        self.history
            .iter()
            .filter(|event| !event.is_terminal())
            .cloned()
            .collect()
    }

    /// A fresh executor that replayed this instance's history (as after a restart).
    fn replayed(&self) -> Result<Executor, Failure> {
        replay(self.entry, &self.history)
    }
}

/// Replays `history` into a fresh executor of `entry`.
fn replay(entry: OrchestratorEntry, history: &[Event]) -> Result<Executor, Failure> {
    let mut executor = Executor::new(Arc::from(ID), entry, Limits::default());
    executor.replay(history)?;
    Ok(executor)
}

/// The single activity call among `out`'s actions: `(seq, name, input)`.
fn activity_calls(out: &TurnOutput) -> Vec<(u64, String, Payload)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::CallActivity {
                seq, name, input, ..
            } => Some((*seq, name.clone(), input.clone())),
            _ => None,
        })
        .collect()
}

/// The timers among `out`'s actions: `(seq, fire_at)`.
fn timers(out: &TurnOutput) -> Vec<(u64, DateTime<Utc>)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::CreateTimer { seq, fire_at } => Some((*seq, *fire_at)),
            _ => None,
        })
        .collect()
}

/// The output of a turn that completed the orchestration.
fn completed<T: DeserializeOwned>(out: &TurnOutput) -> T {
    match &out.finished {
        Some(Outcome::Completed(output)) => output.decode().unwrap(),
        other => panic!("expected the orchestration to complete, got {other:?}"),
    }
}

/// The failure of a turn that failed the orchestration.
fn failed(out: &TurnOutput) -> Failure {
    match &out.finished {
        Some(Outcome::Failed(failure)) => failure.clone(),
        other => panic!("expected the orchestration to fail, got {other:?}"),
    }
}

fn task_completed(seq: u64, output: impl Serialize) -> Event {
    Event::TaskCompleted {
        seq,
        output: json(output),
    }
}

fn task_failed(seq: u64, message: &str) -> Event {
    Event::TaskFailed {
        seq,
        failure: Failure::new("test", message),
        heartbeat: None,
    }
}

fn timer_fired(seq: u64, fire_at: DateTime<Utc>) -> Event {
    Event::TimerFired { seq, fire_at }
}

fn raised(name: &str, data: impl Serialize) -> Event {
    Event::EventRaised {
        name: name.to_owned(),
        data: json(data),
    }
}
