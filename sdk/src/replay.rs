//! The orchestration executor: feeds history into the orchestrator future event by event.
//!
//! An `Executor` owns one instance's live orchestrator future and the state its
//! [`OrchestrationContext`] reads. It is driven in two ways:
//!
//! * `Executor::replay` rebuilds an instance from recorded history (after a restart or an
//!   unload). Every recorded decision (a `TaskScheduled`, `TimerCreated`,
//!   `SubOrchestrationScheduled`, `PatchApplied`) must match what the code does now at the same
//!   point, else the instance fails with [`Error::NonDeterminism`].
//! * `Executor::run_turn` applies new messages (activity results, fired timers, raised
//!   events, control messages) one at a time, polling the future after each, and returns the
//!   events to append to history and the work to send out.
//!
//! Both paths apply one event and then poll, so the code observes completions in exactly the
//! order history records them: a `select` is won by the first completion in history, on every
//! replay. The future is polled with a no-op waker: durable futures only read the state that
//! applying events changes, so there is nothing to wake. While replaying, `tracing` events
//! emitted by orchestrator code are dropped: they were emitted when the step first ran.
//!
//! [`check_history`] runs a recorded history against the current code without a store: use it
//! in tests to check that a new version of an orchestrator can still replay old instances.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};

use crate::context::OrchestrationContext;
use crate::entity::EntityId;
use crate::error::{Error, Failure};
use crate::history::{Event, ParentInstance, Payload};
use crate::registry::{LocalBoxFuture, OrchestratorEntry};

/// Guard rails on what one instance may do; see `RuntimeBuilder::limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input, output, event data or custom status, in bytes of JSON (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Most events one execution's history may hold (default 100,000); an eternal
    /// orchestration stays under it with `continue_as_new`.
    pub max_history_events: u64,
    /// Most durable calls one turn may make (default 10,000).
    pub max_actions_per_turn: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_history_events: 100_000,
            max_actions_per_turn: 10_000,
        }
    }
}

/// How deeply a payload's arrays and objects may nest: serde_json's recursion limit, beyond
/// which no payload can be decoded, so deeper ones are refused where they enter.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

impl Limits {
    /// Checks a payload against `max_payload_bytes`, and that it nests at most
    /// [`MAX_PAYLOAD_DEPTH`] levels deep ([`Error::InvalidPayload`] otherwise).
    pub fn check_payload(&self, what: &str, payload: &Payload) -> Result<(), Error> {
        let depth = payload.nesting_depth();
        if depth > MAX_PAYLOAD_DEPTH {
            return Err(Error::InvalidPayload {
                what: what.to_owned(),
                message: format!(
                    "its arrays and objects nest {depth} levels deep; the limit is \
                     {MAX_PAYLOAD_DEPTH} (deeper JSON cannot be decoded)"
                ),
            });
        }
        if payload.len() > self.max_payload_bytes {
            return Err(Error::LimitExceeded {
                limit: "max_payload_bytes",
                message: format!(
                    "{what} is {} bytes of JSON; the limit is {} bytes (Limits::max_payload_bytes). \
                     Store large data elsewhere and pass a reference",
                    payload.len(),
                    self.max_payload_bytes
                ),
            });
        }
        Ok(())
    }
}

/// A durable call the orchestrator code made, not yet matched against history or recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    CallActivity {
        seq: u64,
        name: String,
        input: Payload,
    },
    CreateTimer {
        seq: u64,
        fire_at: DateTime<Utc>,
    },
    CallSubOrchestrator {
        seq: u64,
        name: String,
        version: String,
        instance_id: String,
        input: Payload,
    },
    Patch {
        name: String,
    },
    CallEntity {
        seq: u64,
        entity: EntityId,
        operation: String,
        input: Payload,
    },
    SignalEntity {
        seq: u64,
        entity: EntityId,
        operation: String,
        input: Payload,
        at: Option<DateTime<Utc>>,
    },
    LockEntities {
        seq: u64,
        entities: Vec<EntityId>,
    },
    UnlockEntities {
        seq: u64,
        entities: Vec<EntityId>,
    },
}

impl Action {
    /// The event that records this decision in history.
    pub(crate) fn to_event(&self) -> Event {
        match self {
            Action::CallActivity { seq, name, input } => Event::TaskScheduled {
                seq: *seq,
                name: name.clone(),
                input: input.clone(),
            },
            Action::CreateTimer { seq, fire_at } => Event::TimerCreated {
                seq: *seq,
                fire_at: *fire_at,
            },
            Action::CallSubOrchestrator {
                seq,
                name,
                instance_id,
                input,
                ..
            } => Event::SubOrchestrationScheduled {
                seq: *seq,
                name: name.clone(),
                instance_id: instance_id.clone(),
                input: input.clone(),
            },
            Action::Patch { name } => Event::PatchApplied { name: name.clone() },
            Action::CallEntity {
                seq,
                entity,
                operation,
                input,
            } => Event::EntityCalled {
                seq: *seq,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
            },
            Action::SignalEntity {
                seq,
                entity,
                operation,
                input,
                at,
            } => Event::EntitySignaled {
                seq: *seq,
                entity: entity.clone(),
                operation: operation.clone(),
                input: input.clone(),
                at: *at,
            },
            Action::LockEntities { seq, entities } => Event::EntityLockRequested {
                seq: *seq,
                entities: entities.clone(),
            },
            Action::UnlockEntities { seq, entities } => Event::EntityUnlockSent {
                seq: *seq,
                entities: entities.clone(),
            },
        }
    }

    /// Whether a recorded decision is this call. Activities and sub-orchestrators must have
    /// the same name; timers match any recorded timer (the recorded due time stays
    /// authoritative).
    fn matches(&self, recorded: &Event) -> bool {
        match (self, recorded) {
            (
                Action::CallActivity { seq, name, .. },
                Event::TaskScheduled {
                    seq: rseq,
                    name: rname,
                    ..
                },
            ) => seq == rseq && name == rname,
            (Action::CreateTimer { seq, .. }, Event::TimerCreated { seq: rseq, .. }) => seq == rseq,
            (
                Action::CallSubOrchestrator { seq, name, .. },
                Event::SubOrchestrationScheduled {
                    seq: rseq,
                    name: rname,
                    ..
                },
            ) => seq == rseq && name == rname,
            (Action::Patch { name }, Event::PatchApplied { name: rname }) => name == rname,
            (
                Action::CallEntity {
                    seq,
                    entity,
                    operation,
                    ..
                },
                Event::EntityCalled {
                    seq: rseq,
                    entity: rentity,
                    operation: roperation,
                    ..
                },
            )
            | (
                Action::SignalEntity {
                    seq,
                    entity,
                    operation,
                    ..
                },
                Event::EntitySignaled {
                    seq: rseq,
                    entity: rentity,
                    operation: roperation,
                    ..
                },
            ) => seq == rseq && entity == rentity && operation == roperation,
            (
                Action::LockEntities { seq, entities },
                Event::EntityLockRequested {
                    seq: rseq,
                    entities: rentities,
                },
            )
            | (
                Action::UnlockEntities { seq, entities },
                Event::EntityUnlockSent {
                    seq: rseq,
                    entities: rentities,
                },
            ) => seq == rseq && entities == rentities,
            _ => false,
        }
    }

    /// What the code does, phrased to follow "the orchestrator code now …".
    fn describe_now(&self) -> String {
        match self {
            Action::CallActivity { seq, name, .. } => {
                format!("calls activity `{name}` as durable call #{seq}")
            }
            Action::CreateTimer { seq, .. } => {
                format!("creates a durable timer as durable call #{seq}")
            }
            Action::CallSubOrchestrator { seq, name, .. } => {
                format!("calls sub-orchestrator `{name}` as durable call #{seq}")
            }
            Action::Patch { name } => format!("takes the patched path `{name}`"),
            Action::CallEntity {
                seq,
                entity,
                operation,
                ..
            } => format!("calls entity operation `{entity}.{operation}` as durable call #{seq}"),
            Action::SignalEntity {
                seq,
                entity,
                operation,
                ..
            } => format!("signals entity operation `{entity}.{operation}` as durable call #{seq}"),
            Action::LockEntities { seq, .. } => {
                format!("locks entities as durable call #{seq}")
            }
            Action::UnlockEntities { seq, .. } => {
                format!("releases a critical section as durable call #{seq}")
            }
        }
    }

    fn record(&self, state: &mut ReplayState) {
        let (seq, kind) = match self {
            Action::CallActivity { seq, .. } => (*seq, CallKind::Activity),
            Action::CreateTimer { seq, .. } => (*seq, CallKind::Timer),
            Action::CallSubOrchestrator {
                seq, instance_id, ..
            } => {
                state.children.insert(*seq, instance_id.clone());
                (*seq, CallKind::SubOrchestration)
            }
            Action::CallEntity { seq, .. } => (*seq, CallKind::Entity),
            Action::LockEntities { seq, .. } => (*seq, CallKind::Lock),
            Action::Patch { .. } | Action::SignalEntity { .. } | Action::UnlockEntities { .. } => {
                return;
            }
        };
        let index = seq as usize;
        if state.calls.len() <= index {
            state.calls.resize(
                index + 1,
                CallState {
                    kind: CallKind::Timer,
                    done: true,
                },
            );
        }
        state.calls[index] = CallState { kind, done: false };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Activity,
    Timer,
    SubOrchestration,
    Entity,
    Lock,
}

/// The result a completion event delivers to the future of a durable call.
#[derive(Debug)]
pub(crate) enum Completion {
    Activity(Result<Payload, Failure>),
    Timer,
    SubOrchestration(Result<Payload, Failure>),
    Entity(Result<Payload, Failure>),
    Lock,
}

#[derive(Debug, Clone, Copy)]
struct CallState {
    kind: CallKind,
    done: bool,
}

/// How an execution ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Completed(Payload),
    Failed(Failure),
    Terminated(String),
    /// `continue_as_new`: a new execution starts with `input`, receiving `carried` events.
    ContinuedAsNew {
        input: Payload,
        carried: Vec<(String, Payload)>,
        preserve_events: bool,
    },
}

/// The critical section of an execution.
#[derive(Debug, Clone)]
pub(crate) struct CriticalSectionState {
    /// The lock request's sequence number.
    pub(crate) seq: u64,
    /// The entities, sorted.
    pub(crate) entities: Vec<EntityId>,
    /// All entities are locked.
    pub(crate) granted: bool,
    /// The lock future was dropped before the grant: release as soon as it comes.
    pub(crate) abandoned: bool,
}

/// A pending `continue_as_new` request.
pub(crate) struct ContinueRequest {
    pub(crate) input: Payload,
    pub(crate) preserve_events: bool,
}

/// The state an [`OrchestrationContext`] reads and writes, shared with the executor.
pub(crate) struct ReplayState {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) execution: u32,
    pub(crate) now: DateTime<Utc>,
    pub(crate) replaying: bool,
    pub(crate) limits: Limits,
    /// History position of the event being applied; completions remember it as their
    /// "ready at" position, which orders `select` winners.
    pub(crate) position: u64,
    next_seq: u64,
    /// Calls the code made that are not yet matched against history or recorded.
    produced: VecDeque<Action>,
    /// The decisions of the history being replayed, and how many are matched or queued in
    /// `produced`: `is_patched` looks at the next one.
    recorded_decisions: Vec<Event>,
    decisions_seen: usize,
    /// Every recorded call of this execution, indexed by `seq`.
    calls: Vec<CallState>,
    /// Instance ids of sub-orchestrations, by `seq`.
    children: HashMap<u64, String>,
    /// Delivered completions not yet taken by their future: seq -> (ready_at, completion).
    results: HashMap<u64, (u64, Completion)>,
    next_waiter: u64,
    /// Event waiters in creation order, per event name.
    waiters: HashMap<String, VecDeque<u64>>,
    /// Events raised while nobody waited for them, per name, in arrival order.
    buffered: HashMap<String, VecDeque<(u64, Payload)>>,
    /// Order in which events were buffered (for carrying them over in arrival order).
    buffered_order: VecDeque<String>,
    /// Events handed to a waiter and not yet taken: waiter id -> (ready_at, data).
    event_results: HashMap<u64, (u64, Payload)>,
    pub(crate) custom_status: Option<Payload>,
    pub(crate) custom_status_changed: bool,
    pub(crate) uuid_counter: u64,
    pub(crate) rng_state: u64,
    pub(crate) continue_as_new: Option<ContinueRequest>,
    /// The critical section this execution holds or is acquiring.
    pub(crate) critical_section: Option<CriticalSectionState>,
    /// Calls in flight to entities of the critical section: seq -> entity.
    pub(crate) locked_calls: HashMap<u64, EntityId>,
    /// A failure found outside any future (a `continue_as_new` input that cannot be
    /// serialized): it fails the execution after the current poll.
    pub(crate) fatal: Option<Failure>,
    /// Durable calls made since the current turn began (not counting replayed ones).
    turn_actions: usize,
}

/// The unwind payload that stops orchestrator code at once when it breaks a limit while it
/// runs (e.g. a loop making a million calls in one turn): the failure is in
/// [`ReplayState::fatal`]; unwinding frees what the code built so far. It is raised with
/// `resume_unwind`, so no panic hook prints it.
struct LimitReached;

impl ReplayState {
    pub(crate) fn new(instance_id: &str, limits: Limits) -> Self {
        ReplayState {
            name: String::new(),
            version: String::new(),
            execution: 0,
            now: DateTime::<Utc>::UNIX_EPOCH,
            replaying: false,
            limits,
            position: 0,
            next_seq: 0,
            produced: VecDeque::new(),
            recorded_decisions: Vec::new(),
            decisions_seen: 0,
            calls: Vec::new(),
            children: HashMap::new(),
            results: HashMap::new(),
            next_waiter: 0,
            waiters: HashMap::new(),
            buffered: HashMap::new(),
            buffered_order: VecDeque::new(),
            event_results: HashMap::new(),
            custom_status: None,
            custom_status_changed: false,
            uuid_counter: 0,
            rng_state: seed_from(instance_id),
            continue_as_new: None,
            critical_section: None,
            locked_calls: HashMap::new(),
            fatal: None,
            turn_actions: 0,
        }
    }

    /// Records a new durable call made by the code and returns its sequence number.
    ///
    /// The call that would exceed [`Limits::max_actions_per_turn`] fails the execution on the
    /// spot: it unwinds out of the orchestrator code (caught by the executor's poll), so a
    /// loop that makes calls without end cannot exhaust the worker's memory first.
    pub(crate) fn schedule(&mut self, make: impl FnOnce(u64) -> Action) -> u64 {
        if !self.replaying {
            self.turn_actions += 1;
            if self.turn_actions > self.limits.max_actions_per_turn {
                let error = Error::LimitExceeded {
                    limit: "max_actions_per_turn",
                    message: format!(
                        "one turn made {} durable calls; the limit is {} \
                         (Limits::max_actions_per_turn), and the orchestrator was stopped at \
                         the call that went over. Split the fan-out into batches or \
                         sub-orchestrations",
                        self.turn_actions, self.limits.max_actions_per_turn
                    ),
                };
                let mut failure = error.to_failure();
                failure.non_retriable = true;
                self.fatal.get_or_insert(failure);
                std::panic::resume_unwind(Box::new(LimitReached));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.produced.push_back(make(seq));
        self.decisions_seen = self.decisions_seen.saturating_add(1);
        seq
    }

    /// `ctx.is_patched(name)`: while replaying, whether history took the patched path at this
    /// point; when running new steps, always (and the choice is recorded).
    pub(crate) fn patched(&mut self, name: &str) -> bool {
        let recorded_here = self.recorded_decisions.get(self.decisions_seen);
        let take = match recorded_here {
            Some(Event::PatchApplied { name: recorded }) => recorded == name,
            Some(_) => false,
            None => !self.replaying,
        };
        if take {
            self.produced.push_back(Action::Patch {
                name: name.to_owned(),
            });
            self.decisions_seen = self.decisions_seen.saturating_add(1);
        }
        take
    }

    /// Takes the completion of call `seq`, if it has arrived.
    pub(crate) fn take_result(&mut self, seq: u64) -> Option<Completion> {
        self.results.remove(&seq).map(|(_, completion)| completion)
    }

    /// The history position at which call `seq` completed, if it has.
    pub(crate) fn result_ready_at(&self, seq: u64) -> Option<u64> {
        self.results.get(&seq).map(|(at, _)| *at)
    }

    /// Forgets a call whose future was dropped before it completed.
    pub(crate) fn forget_result(&mut self, seq: u64) {
        self.results.remove(&seq);
    }

    /// Registers a waiter for the next event named `name`; takes a buffered one at once.
    pub(crate) fn add_waiter(&mut self, name: &str) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        if let Some((ready_at, data)) = self.buffered.get_mut(name).and_then(VecDeque::pop_front) {
            if let Some(i) = self.buffered_order.iter().position(|n| n == name) {
                self.buffered_order.remove(i);
            }
            self.event_results.insert(id, (ready_at, data));
        } else {
            self.waiters
                .entry(name.to_owned())
                .or_default()
                .push_back(id);
        }
        id
    }

    /// Takes the event delivered to waiter `id`, if any.
    pub(crate) fn take_event(&mut self, id: u64) -> Option<Payload> {
        self.event_results.remove(&id).map(|(_, data)| data)
    }

    pub(crate) fn event_ready_at(&self, id: u64) -> Option<u64> {
        self.event_results.get(&id).map(|(at, _)| *at)
    }

    /// Removes a waiter whose future was dropped. An event it had already received but not
    /// taken goes back to the front of the buffer, so no raised event is ever lost.
    pub(crate) fn remove_waiter(&mut self, name: &str, id: u64) {
        if let Some(delivered) = self.event_results.remove(&id) {
            self.buffered
                .entry(name.to_owned())
                .or_default()
                .push_front(delivered);
            self.buffered_order.push_front(name.to_owned());
        } else if let Some(queue) = self.waiters.get_mut(name) {
            queue.retain(|w| *w != id);
        }
    }

    fn raise(&mut self, name: &str, data: Payload) {
        let at = self.position;
        match self.waiters.get_mut(name).and_then(VecDeque::pop_front) {
            Some(waiter) => {
                self.event_results.insert(waiter, (at, data));
            }
            None => {
                self.buffered
                    .entry(name.to_owned())
                    .or_default()
                    .push_back((at, data));
                self.buffered_order.push_back(name.to_owned());
            }
        }
    }

    /// Events raised but never waited for, in arrival order.
    fn take_buffered(&mut self) -> Vec<(String, Payload)> {
        let mut out = Vec::new();
        for name in std::mem::take(&mut self.buffered_order) {
            if let Some((_, data)) = self.buffered.get_mut(&name).and_then(VecDeque::pop_front) {
                out.push((name, data));
            }
        }
        self.buffered.clear();
        out
    }

    /// Whether a completion for call `seq` of `kind` is expected (the call was recorded and
    /// has not completed yet). Duplicates from at-least-once delivery are not.
    fn expects(&self, seq: u64, kind: CallKind) -> bool {
        self.calls
            .get(seq as usize)
            .is_some_and(|c| c.kind == kind && !c.done)
    }

    fn complete(&mut self, seq: u64, completion: Completion) {
        if let Some(call) = self.calls.get_mut(seq as usize) {
            call.done = true;
        }
        self.locked_calls.remove(&seq);
        if let Completion::Lock = completion
            && let Some(section) = self.critical_section.as_mut()
            && section.seq == seq
        {
            section.granted = true;
            if section.abandoned {
                // Nobody holds the guard any more (its future was dropped): release at once.
                self.release_critical_section();
                return;
            }
        }
        self.results.insert(seq, (self.position, completion));
    }

    /// Sends the release of the current critical section, if any.
    pub(crate) fn release_critical_section(&mut self) {
        if let Some(section) = self.critical_section.take() {
            let entities = section.entities;
            self.schedule(|seq| Action::UnlockEntities { seq, entities });
            self.locked_calls.clear();
        }
    }

    /// Sub-orchestrations called and not finished, by instance id.
    fn open_children(&self) -> Vec<String> {
        let mut open: Vec<(u64, String)> = self
            .children
            .iter()
            .filter(|(seq, _)| self.calls.get(**seq as usize).is_some_and(|c| !c.done))
            .map(|(seq, id)| (*seq, id.clone()))
            .collect();
        open.sort();
        open.into_iter().map(|(_, id)| id).collect()
    }
}

/// A deterministic 64-bit seed from the instance id (FNV-1a).
fn seed_from(instance_id: &str) -> u64 {
    instance_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What one turn produced.
#[derive(Debug, Default)]
pub(crate) struct TurnOutput {
    /// Events to append to history, in order.
    pub(crate) new_events: Vec<Event>,
    /// Durable calls to carry out (activities to run, timers to arm, children to start).
    pub(crate) actions: Vec<Action>,
    /// Set when the execution ended in this turn.
    pub(crate) finished: Option<Outcome>,
    /// Indexes of messages not consumed because the instance is suspended.
    pub(crate) deferred: Vec<usize>,
    /// Sub-orchestrations to terminate with this instance (cascading terminate).
    pub(crate) terminate_children: Vec<String>,
}

/// One instance's live orchestrator future and its replay state.
pub(crate) struct Executor {
    ctx: OrchestrationContext,
    entry: OrchestratorEntry,
    root: Option<LocalBoxFuture<'static, Result<Payload, Failure>>>,
    outcome: Option<Outcome>,
    parent: Option<ParentInstance>,
    suspended: bool,
    history_len: u64,
}

impl Executor {
    pub(crate) fn new(instance_id: Arc<str>, entry: OrchestratorEntry, limits: Limits) -> Self {
        Executor {
            ctx: OrchestrationContext::new(instance_id, limits),
            entry,
            root: None,
            outcome: None,
            parent: None,
            suspended: false,
            history_len: 0,
        }
    }

    /// The parent to notify when this execution ends, for sub-orchestrations.
    pub(crate) fn parent(&self) -> Option<&ParentInstance> {
        self.parent.as_ref()
    }

    /// The current execution number.
    pub(crate) fn execution(&self) -> u32 {
        self.ctx.state().execution
    }

    /// The orchestrator's name and version for this instance.
    pub(crate) fn name_and_version(&self) -> (String, String) {
        let state = self.ctx.state();
        (state.name.clone(), state.version.clone())
    }

    /// `true` when the orchestrator has ended (returned, failed, continued as new) but no
    /// turn has recorded it yet: after a replay of a history that stops short of the end,
    /// such as a rewound one whose failure came from the orchestrator code itself. A turn
    /// with no messages records the outcome.
    pub(crate) fn has_unrecorded_outcome(&self) -> bool {
        self.outcome.is_some()
    }

    /// `true` while suspended.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// The custom status, if the code set one since the last call.
    pub(crate) fn take_custom_status(&mut self) -> Option<Payload> {
        let mut state = self.ctx.state();
        if state.custom_status_changed {
            state.custom_status_changed = false;
            state.custom_status.clone()
        } else {
            None
        }
    }

    /// Calls made and not completed: what a rewound instance must run again.
    pub(crate) fn open_calls(&self, history: &[Event]) -> Vec<Event> {
        let state = self.ctx.state();
        history
            .iter()
            .filter(|event| match event {
                Event::TaskScheduled { seq, .. }
                | Event::TimerCreated { seq, .. }
                | Event::SubOrchestrationScheduled { seq, .. } => state
                    .calls
                    .get(*seq as usize)
                    .is_some_and(|call| !call.done),
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// Rebuilds the orchestrator's state from recorded history.
    ///
    /// Fails with the [`Error::NonDeterminism`] failure when the code's durable calls do not
    /// match what history recorded.
    pub(crate) fn replay(&mut self, history: &[Event]) -> Result<(), Failure> {
        {
            let mut state = self.ctx.state();
            state.replaying = true;
            state.recorded_decisions = history
                .iter()
                .filter(|e| e.is_decision())
                .cloned()
                .collect();
            state.decisions_seen = 0;
        }
        for event in history {
            if event.is_decision() {
                let produced = self.ctx.state().produced.pop_front();
                match produced {
                    Some(action) if action.matches(event) => action.record(&mut self.ctx.state()),
                    Some(action) => {
                        return Err(self.nondeterminism(event.describe(), action.describe_now()));
                    }
                    None => {
                        let now = if self.outcome.is_some() {
                            "returned before making it".to_owned()
                        } else {
                            "makes no durable call at this point".to_owned()
                        };
                        return Err(self.nondeterminism(event.describe(), now));
                    }
                }
            } else if !event.is_terminal() {
                self.ctx.state().position = self.history_len;
                self.apply(event.clone());
            }
            self.history_len += 1;
        }
        let extra = self.ctx.state().produced.pop_front();
        if let Some(action) = extra {
            return Err(
                self.nondeterminism("no further durable call".to_owned(), action.describe_now())
            );
        }
        let mut state = self.ctx.state();
        state.replaying = false;
        state.recorded_decisions = Vec::new();
        Ok(())
    }

    fn nondeterminism(&self, recorded: String, now: String) -> Failure {
        Error::NonDeterminism {
            instance_id: self.ctx.instance_id().to_owned(),
            position: self.history_len,
            recorded,
            now,
        }
        .to_failure()
    }

    /// Runs one turn: records `OrchestratorStarted { now }`, then applies each message and
    /// polls after each. Messages that are not expected (a duplicate activity result, a
    /// result for a finished execution) are skipped, so at-least-once delivery never
    /// duplicates a step in history. While suspended, messages other than control messages are
    /// left unconsumed (`deferred`).
    pub(crate) fn run_turn(&mut self, now: DateTime<Utc>, messages: Vec<Event>) -> TurnOutput {
        let mut out = TurnOutput::default();
        {
            let mut state = self.ctx.state();
            state.replaying = false;
            state.decisions_seen = usize::MAX;
            state.turn_actions = 0;
        }
        self.record(&mut out, Event::OrchestratorStarted { timestamp: now });
        for (index, message) in messages.into_iter().enumerate() {
            if let Some(outcome) = &mut self.outcome {
                // Events that arrived in the turn that continued-as-new are unprocessed
                // events too: the new execution gets them if it asked for them.
                if let (
                    Outcome::ContinuedAsNew {
                        carried,
                        preserve_events: true,
                        ..
                    },
                    Event::EventRaised { name, data },
                ) = (outcome, &message)
                {
                    carried.push((name.clone(), data.clone()));
                }
                continue;
            }
            if self.suspended && !message.is_control() {
                out.deferred.push(index);
                continue;
            }
            if !self.accepts(&message) {
                tracing::debug!(
                    instance_id = %self.ctx.instance_id(),
                    event = message.kind(),
                    "skipping a message that is not expected (duplicate delivery)"
                );
                continue;
            }
            if let Event::ExecutionTerminated { reason, cascade } = &message {
                if *cascade {
                    out.terminate_children = self.ctx.state().open_children();
                }
                self.outcome = Some(Outcome::Terminated(reason.clone()));
                self.root = None;
            }
            self.record(&mut out, message);
            let produced: Vec<Action> = self.ctx.state().produced.drain(..).collect();
            for action in produced {
                action.record(&mut self.ctx.state());
                self.record(&mut out, action.to_event());
                out.actions.push(action);
            }
            self.check_limits(&out);
        }
        if self.outcome.is_some() {
            // An execution never ends holding entities: release its critical section.
            self.ctx.state().release_critical_section();
        }
        let produced: Vec<Action> = self.ctx.state().produced.drain(..).collect();
        for action in produced {
            action.record(&mut self.ctx.state());
            self.record(&mut out, action.to_event());
            out.actions.push(action);
        }
        if let Some(outcome) = self.outcome.clone() {
            match &outcome {
                Outcome::Completed(output) => self.record(
                    &mut out,
                    Event::ExecutionCompleted {
                        output: output.clone(),
                    },
                ),
                Outcome::Failed(failure) => self.record(
                    &mut out,
                    Event::ExecutionFailed {
                        failure: failure.clone(),
                    },
                ),
                // The terminate message itself was recorded; a new execution replaces this
                // history entirely.
                Outcome::Terminated(_) | Outcome::ContinuedAsNew { .. } => {}
            }
            out.finished = Some(outcome);
        }
        out
    }

    /// Fails the execution when the turn broke a guard rail.
    fn check_limits(&mut self, out: &TurnOutput) {
        if self.outcome.is_some() {
            return;
        }
        let limits = self.ctx.state().limits;
        let failure = if out.actions.len() > limits.max_actions_per_turn {
            Some(Error::LimitExceeded {
                limit: "max_actions_per_turn",
                message: format!(
                    "one turn made {} durable calls; the limit is {} (Limits::max_actions_per_turn). \
                     Split the fan-out into batches or sub-orchestrations",
                    out.actions.len(),
                    limits.max_actions_per_turn
                ),
            })
        } else if self.history_len > limits.max_history_events {
            Some(Error::LimitExceeded {
                limit: "max_history_events",
                message: format!(
                    "the history has {} events; the limit is {} (Limits::max_history_events). \
                     Long-running orchestrations should call `ctx.continue_as_new(..)` to start \
                     over with a fresh history",
                    self.history_len, limits.max_history_events
                ),
            })
        } else {
            None
        };
        if let Some(error) = failure {
            let mut failure = error.to_failure();
            failure.non_retriable = true;
            self.outcome = Some(Outcome::Failed(failure));
            self.root = None;
        }
    }

    /// Appends `event` to the turn's output and applies it (decisions are only recorded).
    fn record(&mut self, out: &mut TurnOutput, event: Event) {
        self.ctx.state().position = self.history_len;
        self.history_len += 1;
        if !event.is_decision() && !event.is_terminal() {
            self.apply(event.clone());
        }
        out.new_events.push(event);
    }

    fn accepts(&self, message: &Event) -> bool {
        let state = self.ctx.state();
        match message {
            Event::ExecutionStarted { .. } => self.root.is_none() && self.outcome.is_none(),
            Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. } => {
                state.expects(*seq, CallKind::Activity)
            }
            Event::TimerFired { seq, .. } => state.expects(*seq, CallKind::Timer),
            Event::SubOrchestrationCompleted { seq, .. }
            | Event::SubOrchestrationFailed { seq, .. } => {
                state.expects(*seq, CallKind::SubOrchestration)
            }
            Event::EntityCompleted { seq, .. } | Event::EntityFailed { seq, .. } => {
                state.expects(*seq, CallKind::Entity)
            }
            Event::EntityLockGranted { seq } => state.expects(*seq, CallKind::Lock),
            Event::EventRaised { .. } => self.root.is_some(),
            Event::ExecutionSuspended { .. } => !self.suspended,
            Event::ExecutionResumed { .. } => self.suspended,
            Event::ExecutionTerminated { .. } => true,
            _ => false,
        }
    }

    /// Applies one input event to the state and polls the orchestrator.
    fn apply(&mut self, event: Event) {
        match event {
            Event::OrchestratorStarted { timestamp } => {
                self.ctx.state().now = timestamp;
                return;
            }
            Event::ExecutionStarted {
                name,
                input,
                version,
                execution,
                parent,
            } => {
                {
                    let mut state = self.ctx.state();
                    state.name = name;
                    state.version = version;
                    state.execution = execution;
                }
                self.parent = parent;
                self.root = Some((self.entry.invoke)(self.ctx.clone(), input));
            }
            Event::TaskCompleted { seq, output } => {
                self.ctx
                    .state()
                    .complete(seq, Completion::Activity(Ok(output)));
            }
            Event::TaskFailed { seq, failure } => {
                self.ctx
                    .state()
                    .complete(seq, Completion::Activity(Err(failure)));
            }
            Event::TimerFired { seq, .. } => self.ctx.state().complete(seq, Completion::Timer),
            Event::SubOrchestrationCompleted { seq, output } => self
                .ctx
                .state()
                .complete(seq, Completion::SubOrchestration(Ok(output))),
            Event::SubOrchestrationFailed { seq, failure } => self
                .ctx
                .state()
                .complete(seq, Completion::SubOrchestration(Err(failure))),
            Event::EntityCompleted { seq, output } => self
                .ctx
                .state()
                .complete(seq, Completion::Entity(Ok(output))),
            Event::EntityFailed { seq, failure } => self
                .ctx
                .state()
                .complete(seq, Completion::Entity(Err(failure))),
            Event::EntityLockGranted { seq } => self.ctx.state().complete(seq, Completion::Lock),
            Event::EventRaised { name, data } => self.ctx.state().raise(&name, data),
            Event::ExecutionSuspended { .. } => {
                self.suspended = true;
                return;
            }
            Event::ExecutionResumed { .. } => {
                self.suspended = false;
                return;
            }
            _ => return,
        }
        self.poll();
    }

    fn poll(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let Some(root) = self.root.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        let replaying = self.ctx.state().replaying;
        let mut poll = || {
            catch_unwind(AssertUnwindSafe(|| {
                crate::panics::caught(|| root.as_mut().poll(&mut cx))
            }))
        };
        let result = if replaying {
            // Orchestrator code logged these events when the step first ran.
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), poll)
        } else {
            poll()
        };
        let fatal = self.ctx.state().fatal.take();
        if let Some(failure) = fatal {
            // The execution fails here: calls made in this poll are not carried out.
            self.ctx.state().produced.clear();
            self.outcome = Some(Outcome::Failed(failure));
            self.root = None;
            return;
        }
        match result {
            Ok(Poll::Pending) => {
                let request = self.ctx.state().continue_as_new.take();
                if let Some(request) = request {
                    let carried = if request.preserve_events {
                        self.ctx.state().take_buffered()
                    } else {
                        Vec::new()
                    };
                    self.outcome = Some(Outcome::ContinuedAsNew {
                        input: request.input,
                        carried,
                        preserve_events: request.preserve_events,
                    });
                }
            }
            Ok(Poll::Ready(Ok(output))) => {
                let limits = self.ctx.state().limits;
                self.outcome = Some(
                    match limits.check_payload(
                        &format!("the output of orchestrator `{}`", self.entry.name),
                        &output,
                    ) {
                        Ok(()) => Outcome::Completed(output),
                        Err(error) => Outcome::Failed(error.to_failure()),
                    },
                );
            }
            Ok(Poll::Ready(Err(failure))) => self.outcome = Some(Outcome::Failed(failure)),
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(
                    instance_id = %self.ctx.instance_id(),
                    orchestrator = self.entry.name,
                    at = crate::panics::take_location().as_deref().unwrap_or("?"),
                    "orchestrator panicked: {message}"
                );
                self.outcome = Some(Outcome::Failed(Failure::panic(format!(
                    "orchestrator `{}` panicked: {message}",
                    self.entry.name
                ))));
            }
        }
        if self.outcome.is_some() {
            // Drop the finished future now: durable futures it still holds (a losing timer)
            // must not keep anything alive.
            self.root = None;
        }
    }
}

/// Replays `history` with the orchestrator `entry` and reports whether the current code
/// makes the same durable calls: `Err` carries the NonDeterminism failure (or the
/// orchestrator's own failure if it fails during replay).
///
/// ```
/// use duractor::prelude::*;
/// use duractor::registry::OrchestratorEntry;
///
/// #[orchestrator]
/// async fn noop(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
///     Ok(())
/// }
///
/// let history = vec![duractor::Event::ExecutionStarted {
///     name: "noop".into(),
///     version: String::new(),
///     input: duractor::Payload::null(),
///     execution: 0,
///     parent: None,
/// }];
/// duractor::replay::check_history(&OrchestratorEntry::of::<Noop>(), "id-1", &history).unwrap();
/// ```
pub fn check_history(
    entry: &OrchestratorEntry,
    instance_id: &str,
    history: &[Event],
) -> Result<(), Failure> {
    let mut executor = Executor::new(Arc::from(instance_id), *entry, Limits::default());
    executor.replay(history)
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}
