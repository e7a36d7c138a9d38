//! The state of one execution: what its context and futures read and write, and what the
//! executor feeds — the durable calls made and their results, event waiters and buffered
//! events, the turn's time, the deterministic counters (uuids, random numbers), the custom
//! status, a pending continue-as-new, and the critical section with its rules.
//!
//! Fields are private: every change goes through a method named after what happens, so the
//! rules (what a call may do inside a critical section, when a result is expected, how a
//! dropped future gives its result up) live here once. [`StateHandle`] is the shared handle the
//! context and each durable future hold.

use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use chrono::{DateTime, Utc};

use super::actions::{Action, CancelTarget};
use crate::error::{Error, Failure};
use crate::history::Event;
use crate::id::EntityId;
use crate::limits::Limits;
use crate::payload::Payload;

/// The kind of a durable call that gets a completion.
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
    /// The code cancelled the call: it is done without a completion.
    cancelled: bool,
}

/// The critical section of an execution.
#[derive(Debug, Clone)]
struct CriticalSection {
    /// The lock request's sequence number.
    seq: u64,
    /// The entities, sorted.
    entities: Vec<EntityId>,
    /// All entities are locked.
    granted: bool,
    /// The lock future was dropped before the grant: release as soon as it comes.
    abandoned: bool,
}

/// A pending `continue_as_new` request.
pub(crate) struct ContinueRequest {
    pub(crate) input: Payload,
    pub(crate) preserve_events: bool,
}

/// The unwind payload that stops orchestrator code at once when it breaks a limit while it
/// runs (e.g. a loop making a million calls in one turn): the failure is kept as the
/// execution's fatal failure; unwinding frees what the code built so far. It is raised with
/// `resume_unwind`, so no panic hook prints it.
struct LimitReached;

/// The shared handle to an execution's [`State`], held by the context and every durable
/// future. Executions run on one thread: it is `Rc`, not `Arc`.
#[derive(Clone)]
pub(crate) struct StateHandle(Rc<RefCell<State>>);

thread_local! {
    /// The state of the execution being polled on this thread (set by the executor around
    /// each poll): how a `Durable` future, which holds no handle, finds its scope's state.
    static POLLING: RefCell<Option<StateHandle>> = const { RefCell::new(None) };
}

impl StateHandle {
    pub(crate) fn new(instance_id: &str, limits: Limits) -> Self {
        StateHandle(Rc::new(RefCell::new(State::new(instance_id, limits))))
    }

    /// Runs `poll` with this state as the one being polled on this thread.
    pub(crate) fn polling<R>(&self, poll: impl FnOnce() -> R) -> R {
        /// Puts the previous state back, also when `poll` unwinds.
        struct Restore(Option<StateHandle>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                POLLING.with(|current| *current.borrow_mut() = previous);
            }
        }
        let _restore = Restore(POLLING.with(|current| current.replace(Some(self.clone()))));
        poll()
    }

    /// The state of the execution being polled on this thread, if any.
    pub(crate) fn current() -> Option<StateHandle> {
        POLLING.with(|current| current.borrow().clone())
    }

    /// The state, if nobody has it borrowed (a drop during teardown may find it borrowed).
    pub(crate) fn try_borrow(&self) -> Option<RefMut<'_, State>> {
        self.0.try_borrow_mut().ok()
    }

    /// The state, borrowed for one step (never across an `.await`).
    pub(crate) fn borrow(&self) -> RefMut<'_, State> {
        self.0.borrow_mut()
    }
}

/// The state of one execution; see the module docs.
pub(crate) struct State {
    name: String,
    version: String,
    execution: u32,
    now: DateTime<Utc>,
    replaying: bool,
    limits: Limits,
    /// History position of the event being applied; completions remember it as their
    /// "ready at" position, which orders `select` winners.
    position: u64,
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
    custom_status: Option<Payload>,
    custom_status_changed: bool,
    uuid_counter: u64,
    rng_state: u64,
    continue_as_new: Option<ContinueRequest>,
    /// The critical section this execution holds or is acquiring.
    critical_section: Option<CriticalSection>,
    /// Calls in flight to entities of the critical section: seq -> entity.
    locked_calls: HashMap<u64, EntityId>,
    /// A failure found outside any future (a `continue_as_new` input that cannot be
    /// serialized, a limit broken): it fails the execution after the current poll.
    fatal: Option<Failure>,
    /// Durable calls made since the current turn began (not counting replayed ones).
    turn_actions: usize,
    /// Cancellation scopes being polled, innermost last (see [`State::enter_scope`]).
    scope_stack: Vec<u64>,
    /// The calls made inside each live scope, by scope id.
    scope_calls: HashMap<u64, Vec<u64>>,
    next_scope: u64,
    /// The last heartbeat details of failed activity attempts, by `seq`, until a retry takes
    /// them.
    failed_heartbeats: HashMap<u64, Payload>,
}

impl State {
    fn new(instance_id: &str, limits: Limits) -> Self {
        State {
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
            scope_stack: Vec::new(),
            scope_calls: HashMap::new(),
            next_scope: 0,
            failed_heartbeats: HashMap::new(),
        }
    }

    // --- What the execution is and when it is ---

    /// The orchestrator's name, version and execution number, from its `ExecutionStarted`.
    pub(crate) fn start_execution(&mut self, name: String, version: String, execution: u32) {
        self.name = name;
        self.version = version;
        self.execution = execution;
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn execution(&self) -> u32 {
        self.execution
    }

    /// The current turn's time (`ctx.now()`).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub(crate) fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = now;
    }

    /// The history position of the event being applied.
    pub(crate) fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    pub(crate) fn is_replaying(&self) -> bool {
        self.replaying
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    // --- Replaying and running turns ---

    /// Starts replaying a history whose decisions are `decisions`.
    pub(crate) fn begin_replay(&mut self, decisions: Vec<Event>) {
        self.replaying = true;
        self.recorded_decisions = decisions;
        self.decisions_seen = 0;
    }

    pub(crate) fn end_replay(&mut self) {
        self.replaying = false;
        self.recorded_decisions = Vec::new();
    }

    /// Starts a turn of new steps.
    pub(crate) fn begin_turn(&mut self) {
        self.replaying = false;
        self.decisions_seen = usize::MAX;
        self.turn_actions = 0;
    }

    /// The oldest call the code made that is not recorded yet.
    pub(crate) fn next_produced(&mut self) -> Option<Action> {
        self.produced.pop_front()
    }

    /// Every call the code made that is not recorded yet, oldest first.
    pub(crate) fn drain_produced(&mut self) -> Vec<Action> {
        self.produced.drain(..).collect()
    }

    // --- Durable calls ---

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
                self.fail(failure);
                std::panic::resume_unwind(Box::new(LimitReached));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.produced.push_back(make(seq));
        self.decisions_seen = self.decisions_seen.saturating_add(1);
        for scope in &self.scope_stack {
            self.scope_calls.entry(*scope).or_default().push(seq);
        }
        seq
    }

    /// Cancels call `seq` if it is open: its completion is no longer expected, and the turn
    /// carries the cancellation out (a running activity is told to stop, a child instance is
    /// terminated). Recorded in history as `CallCancelled`.
    ///
    /// While replaying, the cancellation is made only where history recorded it: a history
    /// written by code that did not cancel here (an older build) replays as it ran, the call
    /// staying open, instead of failing as nondeterministic.
    pub(crate) fn cancel_call(&mut self, seq: u64, reason: &str) {
        let Some(call) = self.calls.get(seq as usize).copied() else {
            // Made in this poll and not recorded yet: find it among the produced actions.
            if self.produced.iter().any(|a| a.seq() == Some(seq)) {
                self.push_cancel(seq, self.produced_target(seq), reason);
            }
            return;
        };
        if call.done {
            return;
        }
        let target = match call.kind {
            CallKind::Activity => CancelTarget::Activity,
            CallKind::SubOrchestration => match self.children.get(&seq) {
                Some(child) => CancelTarget::SubOrchestration(child.clone()),
                None => CancelTarget::Nothing,
            },
            CallKind::Timer => CancelTarget::Timer,
            CallKind::Entity | CallKind::Lock => CancelTarget::Nothing,
        };
        self.push_cancel(seq, target, reason);
    }

    /// What cancelling a call made in this poll (not recorded yet) does.
    fn produced_target(&self, seq: u64) -> CancelTarget {
        match self.produced.iter().find(|a| a.seq() == Some(seq)) {
            Some(Action::CallActivity { .. }) => CancelTarget::Activity,
            Some(Action::CallSubOrchestrator { instance_id, .. }) => {
                CancelTarget::SubOrchestration(instance_id.clone())
            }
            Some(Action::CreateTimer { .. }) => CancelTarget::Timer,
            _ => CancelTarget::Nothing,
        }
    }

    fn push_cancel(&mut self, seq: u64, target: CancelTarget, reason: &str) {
        if self
            .produced
            .iter()
            .any(|a| matches!(a, Action::CancelCall { seq: s, .. } if *s == seq))
        {
            return;
        }
        if self.replaying {
            let recorded = self.recorded_decisions.get(self.decisions_seen);
            if !matches!(recorded, Some(Event::CallCancelled { seq: s, .. }) if *s == seq) {
                return;
            }
        }
        self.produced.push_back(Action::CancelCall {
            seq,
            target,
            reason: reason.to_owned(),
        });
        self.decisions_seen = self.decisions_seen.saturating_add(1);
        self.results.remove(&seq);
    }

    /// Keeps the last heartbeat details of failed attempt `seq` for its retry.
    pub(crate) fn keep_failed_heartbeat(&mut self, seq: u64, details: Payload) {
        self.failed_heartbeats.insert(seq, details);
    }

    /// The last heartbeat details of failed attempt `seq`, if it left any.
    pub(crate) fn take_failed_heartbeat(&mut self, seq: u64) -> Option<Payload> {
        self.failed_heartbeats.remove(&seq)
    }

    /// Whether call `seq` was cancelled by the code.
    pub(crate) fn is_cancelled(&self, seq: u64) -> bool {
        self.calls
            .get(seq as usize)
            .is_some_and(|call| call.cancelled)
    }

    // --- Cancellation scopes ---

    /// A new scope: the calls made while it is entered belong to it (and to the scopes
    /// around it), so cancelling it cancels them. A `Durable` future (a helper's, an `async`
    /// block's, a retry loop's) is a scope around what its body calls.
    pub(crate) fn new_scope(&mut self) -> u64 {
        let id = self.next_scope;
        self.next_scope += 1;
        id
    }

    pub(crate) fn enter_scope(&mut self, scope: u64) {
        self.scope_stack.push(scope);
    }

    pub(crate) fn exit_scope(&mut self, scope: u64) {
        if let Some(i) = self.scope_stack.iter().rposition(|s| *s == scope) {
            self.scope_stack.remove(i);
        }
    }

    /// Cancels every open call made inside `scope`, oldest first, and forgets the scope.
    pub(crate) fn cancel_scope(&mut self, scope: u64, reason: &str) {
        for seq in self.scope_calls.remove(&scope).unwrap_or_default() {
            self.cancel_call(seq, reason);
        }
    }

    /// Forgets a scope whose future finished or was dropped.
    pub(crate) fn drop_scope(&mut self, scope: u64) {
        self.scope_calls.remove(&scope);
    }

    /// Records that the call an action made is in history now (its completion is expected).
    pub(crate) fn record(&mut self, action: &Action) {
        let (seq, kind) = match action {
            Action::CallActivity { seq, .. } => (*seq, CallKind::Activity),
            Action::CreateTimer { seq, .. } => (*seq, CallKind::Timer),
            Action::CallSubOrchestrator {
                seq, instance_id, ..
            } => {
                self.children.insert(*seq, instance_id.clone());
                (*seq, CallKind::SubOrchestration)
            }
            Action::CallEntity { seq, .. } => (*seq, CallKind::Entity),
            Action::LockEntities { seq, .. } => (*seq, CallKind::Lock),
            Action::CancelCall { seq, .. } => {
                if let Some(call) = self.calls.get_mut(*seq as usize) {
                    call.done = true;
                    call.cancelled = true;
                }
                self.results.remove(seq);
                self.locked_calls.remove(seq);
                return;
            }
            Action::Patch { .. } | Action::SignalEntity { .. } | Action::UnlockEntities { .. } => {
                return;
            }
        };
        let index = seq as usize;
        if self.calls.len() <= index {
            self.calls.resize(
                index + 1,
                CallState {
                    kind: CallKind::Timer,
                    done: true,
                    cancelled: false,
                },
            );
        }
        self.calls[index] = CallState {
            kind,
            done: false,
            cancelled: false,
        };
    }

    /// Whether the timer a call arms for its own schedule-to-close deadline (firing at
    /// `fire_at`, the next call) is made here: always when running new steps; while
    /// replaying, only where history recorded it next, so a history written before calls
    /// armed their deadline (an older build) replays as it ran, without it.
    pub(crate) fn deadline_timer_here(&self, fire_at: DateTime<Utc>) -> bool {
        match self.recorded_decisions.get(self.decisions_seen) {
            Some(Event::TimerCreated { seq, fire_at: at }) => {
                *seq == self.next_seq && *at == fire_at
            }
            Some(_) => false,
            None => !self.replaying,
        }
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

    /// Whether a completion for call `seq` of `kind` is expected (the call was recorded and
    /// has not completed yet). Duplicates from at-least-once delivery are not.
    pub(crate) fn expects(&self, seq: u64, kind: CallKind) -> bool {
        self.calls
            .get(seq as usize)
            .is_some_and(|c| c.kind == kind && !c.done)
    }

    /// Whether call `seq` was made and has not completed.
    pub(crate) fn is_open(&self, seq: u64) -> bool {
        self.calls.get(seq as usize).is_some_and(|call| !call.done)
    }

    /// Delivers the completion of call `seq` (at the current history position).
    pub(crate) fn complete(&mut self, seq: u64, completion: Completion) {
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

    /// Sub-orchestrations called and not finished, by instance id.
    pub(crate) fn open_children(&self) -> Vec<String> {
        let mut open: Vec<(u64, String)> = self
            .children
            .iter()
            .filter(|(seq, _)| self.is_open(**seq))
            .map(|(seq, id)| (*seq, id.clone()))
            .collect();
        open.sort();
        open.into_iter().map(|(_, id)| id).collect()
    }

    // --- External events ---

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

    /// The names of the events the code waits for now, each once, sorted.
    pub(crate) fn awaited_events(&self) -> Vec<String> {
        self.waiters
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(name, _)| name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Takes the event delivered to waiter `id`, if any.
    pub(crate) fn take_event(&mut self, id: u64) -> Option<Payload> {
        self.event_results.remove(&id).map(|(_, data)| data)
    }

    /// The history position at which waiter `id` got its event, if it has.
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

    /// An event raised to the instance: to its oldest waiter, or buffered.
    pub(crate) fn raise(&mut self, name: &str, data: Payload) {
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
    pub(crate) fn take_buffered(&mut self) -> Vec<(String, Payload)> {
        let mut out = Vec::new();
        for name in std::mem::take(&mut self.buffered_order) {
            if let Some((_, data)) = self.buffered.get_mut(&name).and_then(VecDeque::pop_front) {
                out.push((name, data));
            }
        }
        self.buffered.clear();
        out
    }

    // --- Deterministic values ---

    /// The next number of `ctx.new_uuid()`'s counter.
    pub(crate) fn next_uuid_number(&mut self) -> u64 {
        let number = self.uuid_counter;
        self.uuid_counter += 1;
        number
    }

    /// The next 64 random bits of the execution's SplitMix64 stream.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    // --- Custom status, continue-as-new, failures ---

    /// Sets the custom status (saved with the turn, if it changed).
    pub(crate) fn set_custom_status(&mut self, status: Payload) {
        if self.custom_status.as_ref() != Some(&status) {
            self.custom_status = Some(status);
            self.custom_status_changed = true;
        }
    }

    /// The custom status, if it changed since the last call.
    pub(crate) fn take_custom_status_change(&mut self) -> Option<Payload> {
        if !self.custom_status_changed {
            return None;
        }
        self.custom_status_changed = false;
        self.custom_status.clone()
    }

    /// Asks to end this execution and start a new one with `input`.
    pub(crate) fn continue_as_new(&mut self, input: Payload, preserve_events: bool) {
        self.continue_as_new = Some(ContinueRequest {
            input,
            preserve_events,
        });
    }

    pub(crate) fn take_continue_request(&mut self) -> Option<ContinueRequest> {
        self.continue_as_new.take()
    }

    /// Fails the execution after the current poll (the first failure wins). Calls made in
    /// that poll are not carried out.
    pub(crate) fn fail(&mut self, failure: Failure) {
        self.fatal.get_or_insert(failure);
    }

    /// The failure the execution ends with, if one was found; drops the poll's calls.
    pub(crate) fn take_fatal(&mut self) -> Option<Failure> {
        let fatal = self.fatal.take();
        if fatal.is_some() {
            self.produced.clear();
        }
        fatal
    }

    // --- Critical sections ---

    /// `ctx.lock(entities)`: schedules the lock request of a critical section over the
    /// sorted, deduplicated `entities`. Critical sections do not nest.
    pub(crate) fn lock(&mut self, entities: Vec<EntityId>) -> Result<u64, Error> {
        if self.critical_section.is_some() {
            return Err(Error::CriticalSection(
                "this orchestration already holds (or is acquiring) a critical section; \
                 critical sections do not nest: lock every entity you need in one `ctx.lock(..)`"
                    .to_owned(),
            ));
        }
        if entities.is_empty() {
            return Err(Error::CriticalSection(
                "`ctx.lock` needs at least one entity".to_owned(),
            ));
        }
        let locked = entities.clone();
        let seq = self.schedule(|seq| Action::LockEntities {
            seq,
            entities: locked,
        });
        self.critical_section = Some(CriticalSection {
            seq,
            entities,
            granted: false,
            abandoned: false,
        });
        Ok(seq)
    }

    /// Schedules a two-way call to `entity`. Inside a granted critical section, only locked
    /// entities may be called, one call in flight per entity.
    pub(crate) fn call_entity(
        &mut self,
        entity: &EntityId,
        operation: &'static str,
        input: Payload,
    ) -> Result<u64, Error> {
        let in_section = match &self.critical_section {
            Some(section) if section.granted => {
                if !section.entities.contains(entity) {
                    return Err(Error::CriticalSection(format!(
                        "entity `{entity}` is not locked by this critical section; inside a critical \
                         section an orchestration may call only the entities it locked"
                    )));
                }
                if self.locked_calls.values().any(|e| e == entity) {
                    return Err(Error::CriticalSection(format!(
                        "a call to locked entity `{entity}` is already in flight; await it before \
                         calling the same entity again"
                    )));
                }
                true
            }
            _ => false,
        };
        let seq = self.schedule(|seq| Action::CallEntity {
            seq,
            entity: entity.clone(),
            operation: operation.to_owned(),
            input,
        });
        if in_section {
            self.locked_calls.insert(seq, entity.clone());
        }
        Ok(seq)
    }

    /// The lock request `seq`'s future was dropped before the grant: the section is released
    /// as soon as the grant comes.
    pub(crate) fn lock_abandoned(&mut self, seq: u64) {
        self.forget_result(seq);
        if let Some(section) = self.critical_section.as_mut()
            && section.seq == seq
        {
            section.abandoned = true;
        }
    }

    /// The guard of the critical section locked by request `seq` was dropped: release it.
    pub(crate) fn guard_dropped(&mut self, seq: u64) {
        if self
            .critical_section
            .as_ref()
            .is_some_and(|section| section.seq == seq)
        {
            self.release_critical_section();
        }
    }

    /// Sends the release of the current critical section, if any.
    pub(crate) fn release_critical_section(&mut self) {
        if let Some(section) = self.critical_section.take() {
            let entities = section.entities;
            self.schedule(|seq| Action::UnlockEntities { seq, entities });
            self.locked_calls.clear();
        }
    }
}

/// A deterministic 64-bit seed from the instance id (FNV-1a).
fn seed_from(instance_id: &str) -> u64 {
    instance_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
