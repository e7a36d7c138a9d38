//! The orchestration executor: feeds history into the orchestrator future event by event.
//!
//! An [`Executor`] owns one instance's live orchestrator future and the state its
//! [`OrchestrationContext`] reads. It is driven in two ways:
//!
//! * [`Executor::replay`] rebuilds an instance from recorded history (after a restart or an
//!   unload). Every recorded decision (a `TaskScheduled`, a `TimerCreated`) must match the durable
//!   call the code makes now at the same point, else the instance fails with
//!   [`Error::NonDeterminism`].
//! * [`Executor::run_turn`] applies new messages (activity results, fired timers, raised events)
//!   one at a time, polling the future after each, and returns the events to append to history
//!   and the work to send out.
//!
//! Both paths apply one event and then poll, so the code observes completions in exactly the
//! order history records them: a `select` is won by the first completion in history, on every
//! replay. The future is polled with a no-op waker: durable futures only read the state that
//! applying events changes, so there is nothing to wake.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};

use crate::context::OrchestrationContext;
use crate::error::{Error, Failure};
use crate::history::{Event, Payload};
use crate::registry::{LocalBoxFuture, OrchestratorEntry};

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
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Action::CallActivity { seq, .. } | Action::CreateTimer { seq, .. } => *seq,
        }
    }

    fn kind(&self) -> CallKind {
        match self {
            Action::CallActivity { .. } => CallKind::Activity,
            Action::CreateTimer { .. } => CallKind::Timer,
        }
    }

    /// Whether a recorded decision is this call. Activities must have the same name; timers
    /// match any recorded timer (the recorded due time stays authoritative).
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Activity,
    Timer,
}

/// The result a completion event delivers to the future of a durable call.
#[derive(Debug)]
pub(crate) enum Completion {
    Activity(Result<Payload, Failure>),
    Timer,
}

#[derive(Debug, Clone, Copy)]
struct CallState {
    kind: CallKind,
    done: bool,
}

/// The state an [`OrchestrationContext`] reads and writes, shared with the executor.
pub(crate) struct ReplayState {
    pub(crate) version: String,
    pub(crate) now: DateTime<Utc>,
    pub(crate) replaying: bool,
    /// History position of the event being applied; completions remember it as their
    /// "ready at" position, which orders `select` winners.
    pub(crate) position: u64,
    next_seq: u64,
    /// Calls the code made that are not yet matched against history or recorded.
    produced: VecDeque<Action>,
    /// Every recorded call of this execution, indexed by `seq`.
    calls: Vec<CallState>,
    /// Delivered completions not yet taken by their future: seq -> (ready_at, completion).
    results: HashMap<u64, (u64, Completion)>,
    next_waiter: u64,
    /// Event waiters in creation order, per event name.
    waiters: HashMap<String, VecDeque<u64>>,
    /// Events raised while nobody waited for them, per name, in arrival order.
    buffered: HashMap<String, VecDeque<(u64, Payload)>>,
    /// Events handed to a waiter and not yet taken: waiter id -> (ready_at, data).
    event_results: HashMap<u64, (u64, Payload)>,
    pub(crate) custom_status: Option<Payload>,
    pub(crate) custom_status_changed: bool,
    pub(crate) uuid_counter: u64,
    pub(crate) rng_state: u64,
}

impl ReplayState {
    pub(crate) fn new(instance_id: &str) -> Self {
        ReplayState {
            version: String::new(),
            now: DateTime::<Utc>::UNIX_EPOCH,
            replaying: false,
            position: 0,
            next_seq: 0,
            produced: VecDeque::new(),
            calls: Vec::new(),
            results: HashMap::new(),
            next_waiter: 0,
            waiters: HashMap::new(),
            buffered: HashMap::new(),
            event_results: HashMap::new(),
            custom_status: None,
            custom_status_changed: false,
            uuid_counter: 0,
            rng_state: seed_from(instance_id),
        }
    }

    /// Records a new durable call made by the code and returns its sequence number.
    pub(crate) fn schedule(&mut self, make: impl FnOnce(u64) -> Action) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.produced.push_back(make(seq));
        seq
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
            None => self
                .buffered
                .entry(name.to_owned())
                .or_default()
                .push_back((at, data)),
        }
    }

    fn record_call(&mut self, action: &Action) {
        let seq = action.seq() as usize;
        if self.calls.len() <= seq {
            self.calls.resize(
                seq + 1,
                CallState {
                    kind: CallKind::Timer,
                    done: true,
                },
            );
        }
        self.calls[seq] = CallState {
            kind: action.kind(),
            done: false,
        };
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
        self.results.insert(seq, (self.position, completion));
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
    /// Durable calls to carry out (activities to run, timers to arm).
    pub(crate) actions: Vec<Action>,
    /// Set when the orchestrator finished in this turn.
    pub(crate) finished: Option<Result<Payload, Failure>>,
}

/// One instance's live orchestrator future and its replay state.
pub(crate) struct Executor {
    ctx: OrchestrationContext,
    entry: OrchestratorEntry,
    root: Option<LocalBoxFuture<'static, Result<Payload, Failure>>>,
    outcome: Option<Result<Payload, Failure>>,
    history_len: u64,
}

impl Executor {
    pub(crate) fn new(instance_id: Arc<str>, entry: OrchestratorEntry) -> Self {
        Executor {
            ctx: OrchestrationContext::new(instance_id),
            entry,
            root: None,
            outcome: None,
            history_len: 0,
        }
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

    /// Rebuilds the orchestrator's state from recorded history.
    ///
    /// Fails with the [`Error::NonDeterminism`] failure when the code's durable calls do not
    /// match what history recorded.
    pub(crate) fn replay(&mut self, history: &[Event]) -> Result<(), Failure> {
        self.ctx.state().replaying = true;
        for event in history {
            if event.is_decision() {
                let produced = self.ctx.state().produced.pop_front();
                match produced {
                    Some(action) if action.matches(event) => self.ctx.state().record_call(&action),
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
        self.ctx.state().replaying = false;
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
    /// result for a finished instance) are skipped, so at-least-once delivery never
    /// duplicates a step in history.
    pub(crate) fn run_turn(&mut self, now: DateTime<Utc>, messages: Vec<Event>) -> TurnOutput {
        let mut out = TurnOutput::default();
        self.ctx.state().replaying = false;
        self.record(&mut out, Event::OrchestratorStarted { timestamp: now });
        for message in messages {
            if self.outcome.is_some() {
                break;
            }
            if !self.accepts(&message) {
                tracing::debug!(
                    instance_id = %self.ctx.instance_id(),
                    event = message.kind(),
                    "skipping a message that is not expected (duplicate delivery)"
                );
                continue;
            }
            self.record(&mut out, message);
            let produced: Vec<Action> = self.ctx.state().produced.drain(..).collect();
            for action in produced {
                self.ctx.state().record_call(&action);
                self.record(&mut out, action.to_event());
                out.actions.push(action);
            }
        }
        if let Some(outcome) = self.outcome.clone() {
            let terminal = match &outcome {
                Ok(output) => Event::ExecutionCompleted {
                    output: output.clone(),
                },
                Err(failure) => Event::ExecutionFailed {
                    failure: failure.clone(),
                },
            };
            self.record(&mut out, terminal);
            out.finished = Some(outcome);
        }
        out
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
            Event::ExecutionStarted { .. } => self.root.is_none(),
            Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. } => {
                state.expects(*seq, CallKind::Activity)
            }
            Event::TimerFired { seq, .. } => state.expects(*seq, CallKind::Timer),
            Event::EventRaised { .. } => self.root.is_some(),
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
            Event::ExecutionStarted { input, version, .. } => {
                self.ctx.state().version = version;
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
            Event::EventRaised { name, data } => self.ctx.state().raise(&name, data),
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
        match catch_unwind(AssertUnwindSafe(|| root.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(result)) => self.outcome = Some(result),
            Err(panic) => {
                let message = panic_message(&*panic);
                self.outcome = Some(Err(Failure::panic(format!(
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
