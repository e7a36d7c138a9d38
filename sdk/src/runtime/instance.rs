//! The instance actor: one loaded orchestration instance, its live future and its turns.
//! Its lifecycle (load, idle, unload, give up) is [`residency`](super::residency)'s; what a
//! turn writes is planned by [`turn`](super::turn); whether this worker runs the instance at
//! all is [`versioning`](super::versioning)'s answer.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::Shared;
use super::activity;
use super::messages::{
    CancelActivities, Deliver, Drain, GiveUp, Inbound, RunActivities, TimersArmed, ToDispatcher,
    ToWorker, UNQUEUED_START, Unload,
};
use super::quick;
use super::residency::{self, Phase, Residency, Resident};
use super::timers::SharedTimers;
use super::turn::{self, Extra, Facts};
use super::versioning::{self, Refusal};
use crate::clock::saturating_after;
use crate::error::{Error, Failure};
use crate::history::Event;
use crate::orchestration::{Executor, Outcome, TurnOutput};
use crate::store::{
    ActivityCompletion, ActivityWorkItem, NewActivity, NewInstance, OrchestrationMessage,
};

/// How many calls an instance keeps in memory at once
/// ([`NewActivity::in_memory`](crate::store::NewActivity::in_memory)); further calls get work
/// items. A kept call saves a step its work item's insert and delete, but its record is part
/// of the instance row every turn rewrites: a fan-out of 1,000 kept calls made each of its
/// turns rewrite a 1,000-entry record (W2 13 % slower on SQLite).
const MAX_CALLS_IN_MEMORY: usize = 8;

/// How many turns one commit may carry: a turn whose calls run in memory holds its commit for
/// their results ([`HeldTurn`]), and the turns they wake join it, up to this many. A crash
/// before the commit runs those calls again (at least once), so the number stays small.
const MAX_TURNS_PER_COMMIT: u32 = 4;

/// How long a held turn waits for the results of its calls before it commits without them.
/// Tokio's timers tick in milliseconds, so in effect up to about a millisecond: a call that
/// takes longer runs while the commit does, as before.
const HOLD_FOR: std::time::Duration = std::time::Duration::from_micros(200);

/// A turn not committed yet, held for the results of the calls it started in memory: a call
/// that answers within [`HOLD_FOR`] (a computation, a cache
/// read) then costs no commit of its own. The next turn's commit carries this one's events
/// and consumed messages with its own, and the call scheduled and finished in between leaves
/// no record in the store ([`TurnCommit::finished_calls`](crate::store::TurnCommit::finished_calls)).
struct HeldTurn {
    /// The held turns' output, in order.
    out: TurnOutput,
    /// The messages they consumed.
    messages: Vec<Inbound>,
    /// The calls they started in memory (not to be started again after the commit).
    started: HashSet<u64>,
    /// How many turns are held.
    turns: u32,
    /// The custom status they set last (taken from the executor), unless a later turn sets
    /// another.
    custom_status: Option<crate::Payload>,
    /// Ends the hold at [`HOLD_FOR`].
    timer: SpawnHandle,
}

pub(super) struct InstanceActor {
    res: Residency,
    worker: ToWorker,
    executor: Option<Executor>,
    /// History ends with a terminal event: messages are only consumed (or rewind it).
    finished: bool,
    /// Length of the committed history (the next turn appends from here).
    history_len: u64,
    /// When the turn being run or committed started (for the turn latency metric).
    turn_started: Option<Instant>,
    /// The worker's held timers ([`super::timers`]), which the dispatcher delivers.
    timers: SharedTimers,
    /// This instance's held timers not delivered yet: message id → (seq, execution).
    held_timers: HashMap<i64, (u64, Option<u32>)>,
    /// Held timers the dispatcher had sent when a turn ended the execution: dropped on
    /// arrival (their rows went with that turn).
    dropped_timers: HashSet<i64>,
    /// Held timers turns cancelled before they were sent: each commit consumes them (deletes
    /// their rows) until one succeeds.
    withdrawn_timers: Vec<i64>,
    /// A start from this worker's own client that the first turn's commit creates.
    create: Option<PendingCreate>,
    /// Turns held for their calls' results ([`HeldTurn`]).
    held: Option<HeldTurn>,
    /// The next commit sends what is held, holding nothing more.
    releasing: bool,
}

/// A new instance whose first turn creates it in the store ([`Start`](super::messages::Start)).
pub(super) struct PendingCreate {
    pub(super) instance: NewInstance,
    /// Gets the outcome of the commit; dropped unanswered, it tells the client to create the
    /// instance in the store instead.
    pub(super) reply: oneshot::Sender<Result<(), Error>>,
    /// Set until the commit has created the instance (the dispatcher leaves it out of lease
    /// renewals until then: the store does not know it).
    pub(super) uncreated: Rc<Cell<bool>>,
}

impl InstanceActor {
    pub(super) fn new(
        shared: Arc<Shared>,
        instance_id: Arc<str>,
        dispatcher: ToDispatcher,
        worker: ToWorker,
        timers: SharedTimers,
        pending: Vec<Inbound>,
    ) -> Self {
        // Timers held for an earlier actor of the instance are this one's now.
        let held_timers = timers
            .borrow()
            .of_instance(&instance_id)
            .into_iter()
            .map(|(id, seq, execution)| (id, (seq, execution)))
            .collect();
        InstanceActor {
            timers,
            held_timers,
            dropped_timers: HashSet::new(),
            withdrawn_timers: Vec::new(),
            create: None,
            held: None,
            releasing: false,
            res: Residency::new(shared, instance_id, dispatcher, pending),
            worker,
            executor: None,
            finished: false,
            history_len: 0,
            turn_started: None,
        }
    }

    /// The actor of a new instance its first turn creates (`pending` holds its start).
    pub(super) fn creating(mut self, create: PendingCreate) -> Self {
        self.create = Some(create);
        self
    }

    fn shared(&self) -> &Shared {
        &self.res.shared
    }

    /// Rebuilds the executor from history, then runs a turn for pending messages.
    fn restore(&mut self, history: Vec<Event>, ctx: &mut Context<Self>) {
        self.history_len = history.len() as u64;
        self.finished = history.last().is_some_and(Event::is_terminal);
        self.res.phase = Phase::Ready;
        if self.finished || history.is_empty() {
            return residency::settle(self, ctx);
        }
        let span = tracing::info_span!("replay", instance_id = %self.res.instance_id);
        let _enter = span.enter();
        let mut executor = match self.admit(&history) {
            Ok(executor) => executor,
            Err(Refusal::Reject(why)) => return self.reject(why, ctx),
            Err(Refusal::Fail(failure)) => return self.fail(failure, ctx),
        };
        self.shared()
            .metrics
            .replays
            .fetch_add(1, Ordering::Relaxed);
        if let Err(failure) = executor.replay(&history) {
            return self.fail(failure, ctx);
        }
        self.executor = Some(executor);
        residency::settle(self, ctx);
    }

    /// An executor for the orchestrator named by the `ExecutionStarted` in `events`, if this
    /// worker's version policy lets it run the instance.
    fn admit(&self, events: &[Event]) -> Result<Executor, Refusal> {
        let shared = self.shared();
        let entry = versioning::admit(&shared.registry, &shared.options.versioning, events)?;
        Ok(Executor::new(
            self.res.instance_id.clone(),
            entry,
            shared.options.limits,
        ))
    }

    /// Leaves the instance to another worker: gives its claimed messages back for later.
    fn reject(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(instance_id = %self.res.instance_id, %why, "leaving the instance to another worker");
        let pending = std::mem::take(&mut self.res.pending);
        let ids = super::messages::queued_ids(&pending);
        let shared = self.res.shared.clone();
        let again_at =
            saturating_after(shared.now(), shared.options.versioning.retry_rejected_after);
        let abandon = async move {
            shared
                .store
                .abandon_messages(&shared.owner, &ids, again_at)
                .await
        };
        ctx.spawn(abandon.into_actor(self).map(|result, act, ctx| {
            if let Err(error) = result {
                tracing::warn!(%error, "giving messages back failed; they return when their lease lapses");
            }
            residency::stop(act, ctx);
        }));
    }

    /// Ends an instance without running its code (unknown orchestrator, nondeterminism,
    /// version mismatch, terminated before it started).
    fn end_without_running(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let messages = std::mem::take(&mut self.res.pending);
        let (out, extra) =
            turn::end_without_running(outcome, self.history_len, &messages, self.res.shared.now());
        self.executor = None;
        self.commit(out, messages, extra, ctx);
    }

    /// Whether the instance has not started: nothing in its history, no execution loaded.
    fn not_started(&self) -> bool {
        self.executor.is_none() && !self.finished && self.history_len == 0
    }

    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        tracing::error!(instance_id = %self.res.instance_id, %failure, "instance failed");
        self.end_without_running(Outcome::Failed(failure), ctx);
    }

    /// Runs one turn over all pending messages and commits it.
    fn turn(&mut self, ctx: &mut Context<Self>) {
        self.turn_started = Some(Instant::now());
        tracing::trace!(instance_id = %self.res.instance_id, "turn starts");
        let mut messages = std::mem::take(&mut self.res.pending);
        // Arrival order, except that the start comes first.
        messages.sort_by_key(|m| !matches!(m.event(), Event::ExecutionStarted { .. }));
        if self.finished
            && messages
                .iter()
                .any(|m| matches!(m.event(), Event::ExecutionStarted { .. }))
        {
            // Started again under the same id while still loaded (a restart, a start that
            // replaced it): the store replaced its history, so this is a new instance. (Were
            // the start a stale duplicate, the commit finds the history longer than empty
            // and reloads.)
            self.finished = false;
            self.history_len = 0;
            self.executor = None;
        }
        if self.finished {
            if messages
                .iter()
                .any(|m| matches!(m.event(), Event::ExecutionRewound { .. }))
            {
                return self.load_for_rewind(messages, ctx);
            }
            // Late messages for a finished instance (a losing timer, a duplicate result).
            return self.commit(TurnOutput::default(), messages, Extra::default(), ctx);
        }
        // Results and timers of an execution that continued-as-new are dropped.
        let current = self.executor.as_ref().map(Executor::execution);
        let (stale, live): (Vec<Inbound>, Vec<Inbound>) = messages
            .into_iter()
            .partition(|m| m.execution().is_some_and(|e| Some(e) != current));
        if self.executor.is_none() {
            self.res.pending = live;
            let starts: Vec<Event> = self
                .res
                .pending
                .iter()
                .filter(|m| matches!(m.event(), Event::ExecutionStarted { .. }))
                .map(|m| m.event().clone())
                .collect();
            if let Some(reason) = self.res.pending.iter().find_map(|m| match m.event() {
                Event::ExecutionTerminated { reason, .. } => Some(reason.clone()),
                _ => None,
            }) {
                self.res.pending.extend(stale);
                return self.end_without_running(Outcome::Terminated(reason), ctx);
            }
            let overtook_start = self.not_started()
                && self
                    .res
                    .pending
                    .iter()
                    .chain(&stale)
                    .all(|m| matches!(m, Inbound::Queued(_)));
            if starts.is_empty() && overtook_start {
                // Messages from the store that overtook the start (an event raised right
                // after it, claimed before the start, which the client hands to this worker
                // in memory, got here): hold them for it, consuming nothing.
                tracing::debug!(instance_id = %self.res.instance_id, "holding messages until the start arrives");
                let mut held = std::mem::take(&mut self.res.pending);
                held.extend(stale);
                self.res.deferred.extend(held);
                return residency::settle(self, ctx);
            }
            if starts.is_empty() {
                tracing::debug!(
                    instance_id = %self.res.instance_id,
                    events = ?self.res.pending.iter().chain(&stale).map(|m| m.event().kind()).collect::<Vec<_>>(),
                    "dropping messages for an execution that is not running"
                );
                let mut all = std::mem::take(&mut self.res.pending);
                all.extend(stale);
                if self.finished {
                    // The execution ended, and its work items went with it: results
                    // delivered in memory have nothing left to consume.
                    all.retain(|m| matches!(m, Inbound::Queued(_)));
                }
                return self.commit(TurnOutput::default(), all, Extra::default(), ctx);
            }
            match self.admit(&starts) {
                Ok(executor) => self.executor = Some(executor),
                Err(Refusal::Reject(why)) => return self.reject(why, ctx),
                Err(Refusal::Fail(failure)) => {
                    self.res.pending.extend(stale);
                    return self.fail(failure, ctx);
                }
            }
            let live = std::mem::take(&mut self.res.pending);
            return self.run(live, stale, ctx);
        }
        self.run(live, stale, ctx);
    }

    /// Runs `live` messages through the executor; `stale` ones are only consumed.
    fn run(&mut self, live: Vec<Inbound>, stale: Vec<Inbound>, ctx: &mut Context<Self>) {
        let Some(executor) = self.executor.as_mut() else {
            return;
        };
        // Results of calls the code cancelled: their work items were deleted with the
        // cancellation, so there is nothing to consume.
        let live: Vec<Inbound> = live
            .into_iter()
            .filter(|m| match (m, m.event()) {
                (
                    Inbound::Local { .. },
                    Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. },
                ) => !executor.is_cancelled(*seq),
                _ => true,
            })
            .collect();
        let span = tracing::info_span!("turn", instance_id = %self.res.instance_id);
        let _enter = span.enter();
        let events = live.iter().map(|m| m.event().clone()).collect();
        let out = executor.run_turn(self.res.shared.now(), events);
        drop(_enter);
        let mut consumed = stale;
        for (index, message) in live.into_iter().enumerate() {
            if out.deferred.contains(&index) {
                self.res.deferred.push(message);
            } else {
                consumed.push(message);
            }
        }
        self.commit(out, consumed, Extra::default(), ctx);
    }

    fn load_for_rewind(&mut self, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        self.res.phase = Phase::Loading;
        let store = self.res.shared.store.clone();
        let instance_id = self.res.instance_id.clone();
        let load = async move { store.load_history(&instance_id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(history) => {
                act.res.phase = Phase::Ready;
                act.rewind(history, messages, ctx);
            }
            Err(error) => {
                act.res.pending = messages;
                residency::retry_later(act, error, ctx);
            }
        }));
    }

    /// Rewinds a failed instance: its failures leave history, and the calls left without a
    /// result run again. A completed sub-orchestration asked to rewind resends its result to
    /// its parent (which lost it when it failed).
    fn rewind(&mut self, history: Vec<Event>, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        let now = self.res.shared.now();
        let reason = messages
            .iter()
            .find_map(|m| match m.event() {
                Event::ExecutionRewound { reason } => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let parent = history.iter().find_map(|e| match e {
            Event::ExecutionStarted { parent, .. } => parent.clone(),
            _ => None,
        });
        let history_len = history.len() as u64;
        match history.last() {
            Some(Event::ExecutionFailed { .. }) => {}
            Some(Event::ExecutionCompleted { output }) => {
                let mut extra = Extra::default();
                if let Some(parent) = &parent {
                    extra.messages =
                        turn::report_to_parent(parent, &Outcome::Completed(output.clone()), now);
                }
                return self.commit(TurnOutput::default(), messages, extra, ctx);
            }
            _ => return self.commit(TurnOutput::default(), messages, Extra::default(), ctx),
        }
        let rewound = turn::rewound_history(history, reason, now);
        let mut executor = match self.admit(&rewound) {
            Ok(executor) => executor,
            Err(Refusal::Reject(why) | Refusal::Fail(Failure { message: why, .. })) => {
                let why = format!("this worker cannot run the instance: {why}");
                return self.refuse_rewind(history_len, parent, why, messages, ctx);
            }
        };
        if let Err(failure) = executor.replay(&rewound) {
            let why = format!("the orchestrator code does not replay the history: {failure}");
            return self.refuse_rewind(history_len, parent, why, messages, ctx);
        }
        let open_calls = executor.open_calls(&rewound);
        let (out, extra) = turn::rewind(&self.res.instance_id, rewound, open_calls, now);
        self.history_len = 0;
        self.finished = false;
        self.executor = Some(executor);
        self.commit(out, messages, extra, ctx);
    }

    /// A rewind that cannot run fails the instance again, saying why.
    fn refuse_rewind(
        &mut self,
        history_len: u64,
        parent: Option<crate::history::ParentInstance>,
        why: String,
        messages: Vec<Inbound>,
        ctx: &mut Context<Self>,
    ) {
        tracing::warn!(instance_id = %self.res.instance_id, %why, "cannot rewind");
        let (out, extra) = turn::refuse_rewind(parent.as_ref(), &why, self.res.shared.now());
        self.history_len = history_len;
        self.commit(out, messages, extra, ctx);
    }

    /// Plans the turn (see [`turn::plan`]), commits it, and carries on once it is stored.
    fn commit(
        &mut self,
        out: TurnOutput,
        messages: Vec<Inbound>,
        extra: Extra,
        ctx: &mut Context<Self>,
    ) {
        // Turns held for their calls' results: this one joins them.
        let (out, messages, mut started, held_turns, held_status) = match self.held.take() {
            Some(held) => {
                ctx.cancel_future(held.timer);
                let mut all = held.out;
                all.append(out);
                let mut consumed = held.messages;
                consumed.extend(messages);
                (all, consumed, held.started, held.turns, held.custom_status)
            }
            None => (out, messages, HashSet::new(), 0, None),
        };
        let releasing = std::mem::take(&mut self.releasing);
        // Calls may start before the commit in a turn of an execution with a stored history,
        // and in the first turn of an instance a client created in the store (its start
        // claimed from the queue): see below.
        let stored = self.history_len > 0
            || (self.create.is_none()
                && messages.iter().any(|m| {
                    matches!(m, Inbound::Queued(q) if matches!(q.event, Event::ExecutionStarted { execution: 0, .. }))
                }));
        // Whether this turn may be held in turn (see below): only a turn of a running
        // execution with a stored history, not suspended, whose output can be followed.
        let may_hold = !releasing
            && held_turns + 1 < MAX_TURNS_PER_COMMIT
            && stored
            && self.create.is_none()
            && out.finished.is_none()
            && out.deferred.is_empty()
            && self
                .executor
                .as_ref()
                .is_some_and(|e| !e.is_suspended() && !e.has_unrecorded_outcome());
        // Only a turn that calls activities can be held (below): the others need no copy.
        let calls = out
            .actions
            .iter()
            .any(|action| matches!(action, crate::orchestration::Action::CallActivity { .. }));
        let kept = (may_hold && calls).then(|| (out.clone(), messages.clone()));
        self.res.begin_commit(ctx);
        let continues = matches!(out.finished, Some(Outcome::ContinuedAsNew { .. }));
        let executor = self.executor.as_mut();
        let facts = Facts {
            instance_id: &self.res.instance_id,
            owner: &self.res.shared.owner,
            history_len: self.history_len,
            execution: executor.as_ref().map_or(0, |e| e.execution()),
            parent: executor.as_ref().and_then(|e| e.parent().cloned()),
            suspended: executor.as_ref().is_some_and(|e| e.is_suspended()),
            name_and_version: executor
                .as_ref()
                .filter(|_| continues)
                .map(|e| e.name_and_version()),
            custom_status: executor
                .and_then(Executor::take_custom_status)
                .or(held_status),
            now: self.res.shared.now(),
            lease_until: self.res.shared.lease_until(),
        };
        let execution = facts.execution;
        let plan = turn::plan(out, &messages, extra, facts);
        let turn_started = self.turn_started.take().unwrap_or_else(Instant::now);
        let store = self.res.shared.store.clone();
        let mut commit = plan.commit;
        self.res
            .shared
            .hold_flow_controlled(&mut commit.new_instances);
        let cancelled = commit.cancelled_activities.clone();
        // A turn that ends the execution (completes, fails, continues as new) keeps no call in
        // memory: no one stays loaded for its result.
        let ends_execution = commit.ends_execution();
        // Room for calls kept in memory: their records live in the instance row, which every
        // turn rewrites, so a fan-out beyond a few calls gets work items (batched anyway).
        let mut room = MAX_CALLS_IN_MEMORY.saturating_sub(self.res.memory_calls.len());
        for activity in &mut commit.activities {
            // What this worker cannot run is left unclaimed for a worker that can; so is
            // flow-controlled work, which only a claim may start (the claim counts it).
            let shared = &self.res.shared;
            match shared.flow.get(&activity.name) {
                Some(limits) => {
                    activity.flow_key = limits.key_of(&activity.input);
                    activity.run_here = false;
                }
                None => {
                    activity.run_here = shared.registry.get_activity(&activity.name).is_ok();
                    // Kept in memory only while the instance may stay loaded for the result:
                    // an app that unloads after every turn (`idle_unload_after` zero) gets a
                    // work item, as releasing the instance would make one anyway.
                    activity.in_memory = activity.run_here
                        && room > 0
                        && !ends_execution
                        && !shared.options.idle_unload_after.is_zero()
                        && shared.store.keeps_calls_in_memory();
                    room -= usize::from(activity.in_memory);
                }
            }
        }
        // Calls of this execution whose results the turn consumes (in memory, or as queue
        // messages when a work item was made of them), and calls it cancels, are no longer
        // awaited.
        let results = messages.iter().filter_map(|m| match m.event() {
            Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. }
                if m.execution() == Some(execution) =>
            {
                Some(seq)
            }
            _ => None,
        });
        for seq in results.chain(&commit.cancelled_activities) {
            self.res.memory_calls.remove(seq);
        }
        // Held timers: none when the instance is let go after every turn (the release would
        // hand them back at once); those the turn cancels, or all when the execution ends,
        // are dropped now, before the commit, so none is delivered for a row the commit
        // deletes.
        commit.hold_timers = !self.res.shared.options.idle_unload_after.is_zero();
        self.drop_held_timers(&commit.cancelled_timers, ends_execution, execution);
        for id in &self.withdrawn_timers {
            if !commit.consumed.contains(id) {
                commit.consumed.push(*id);
            }
        }
        // The first turn of an instance started in memory creates it: its start was never
        // queued, so there is nothing to consume for it.
        let (create_reply, uncreated) = match self.create.take() {
            Some(create) => {
                commit.consumed.retain(|id| *id != UNQUEUED_START);
                commit.create = Some(create.instance);
                (Some(create.reply), Some(create.uncreated))
            }
            None => (None, None),
        };
        // The turn's calls kept in memory start now rather than once the commit is back: the activity's round
        // trip to the activity worker overlaps the commit, and its result waits for the
        // commit like any message. Should the commit fail, the turn runs again with the
        // results that came meanwhile (a call the new attempt schedules and finishes at once
        // is not recorded, `TurnCommit::finished_calls`); at worst a call runs twice, as
        // at-least-once allows. Only for a turn of an execution with a stored history, or
        // the first turn of an instance created in the store by a client (its start was
        // queued): another first turn (a start this commit creates, a rewind, the first of a
        // continued execution) must not run calls before it is stored — the instance may not
        // be created (its id is taken). A first turn that fails runs again without an
        // executor, to which a result that came meanwhile is stale: consumed, not applied,
        // and the call it schedules again runs again (`turn::plan` keeps its record). This
        // holds under load too: a quick call's result comes within the hold, so a hello-3
        // is one commit after its start however many instances run (docs/architecture.md,
        // "Eighteenth sitting": W3 +48 % on SQLite, +21 % on PostgreSQL, against starting
        // early only when no other turn was committing).
        let mut skip: HashSet<u64> = commit.finished_calls.iter().copied().collect();
        skip.extend(&started);
        if create_reply.is_none() && stored {
            let early: Vec<NewActivity> = commit
                .activities
                .iter()
                .filter(|a| a.in_memory && a.run_here && !skip.contains(&a.seq))
                .cloned()
                .collect();
            skip.extend(early.iter().map(|a| a.seq));
            started.extend(early.iter().map(|a| a.seq));
            // A turn whose only new work is calls it just started in memory waits for their
            // results before committing ([`HeldTurn`]); nothing else it writes (messages,
            // children, cancellations) is waited for by anyone meanwhile.
            let hold = !early.is_empty()
                && commit.activities.iter().all(|a| a.in_memory && a.run_here)
                && commit.messages.is_empty()
                && commit.new_instances.is_empty()
                && commit.cancelled_activities.is_empty()
                && commit.cancelled_timers.is_empty();
            self.dispatch(
                vec![0; early.len()],
                early,
                execution,
                Vec::new(),
                &HashSet::new(),
            );
            if let (true, Some((out, messages))) = (hold, kept) {
                let timer = ctx.run_later(HOLD_FOR, |act, ctx| act.release_held(ctx));
                tracing::trace!(instance_id = %self.res.instance_id, turns = held_turns + 1, "turn held for its calls");
                self.held = Some(HeldTurn {
                    out,
                    messages,
                    started,
                    turns: held_turns + 1,
                    custom_status: commit.custom_status.take(),
                    timer,
                });
                return;
            }
        }
        // The held turns and this one (a release adds none).
        let turns_committed = u64::from(held_turns) + u64::from(!releasing);
        // Where a turn's time goes, at `trace` level: its own work, the store's commit, the
        // hop back to this actor (see "One operation at a time" in docs/architecture.md).
        let commit_sent = Instant::now();
        tracing::trace!(
            instance_id = %self.res.instance_id,
            turn_us = commit_sent.duration_since(turn_started).as_micros() as u64,
            "commit sent"
        );
        let commit_fut = async move {
            let activities = commit.activities.clone();
            let committed = store.commit_turn(commit).await;
            tracing::trace!(
                store_us = commit_sent.elapsed().as_micros() as u64,
                "store committed"
            );
            if let Some(reply) = create_reply {
                let _ = reply.send(committed.as_ref().map(drop).map_err(Error::clone));
            }
            committed.map(|committed| (committed, activities))
        };
        let (new_len, finishes, continued, timer_due, finished_as) = (
            plan.history_len,
            plan.finishes,
            plan.continued,
            plan.timer_due,
            plan.finished_as,
        );
        ctx.spawn(commit_fut.into_actor(self).map(move |result, act, ctx| {
            tracing::trace!(
                instance_id = %act.res.instance_id,
                commit_us = commit_sent.elapsed().as_micros() as u64,
                "commit returned"
            );
            match result {
                Ok((committed, activities)) => {
                    if let Some(uncreated) = &uncreated {
                        uncreated.set(false);
                    }
                    act.res.committed(&messages);
                    act.withdrawn_timers.clear();
                    let metrics = &act.res.shared.metrics;
                    metrics.turns.fetch_add(turns_committed, Ordering::Relaxed);
                    metrics.turn_commits.fetch_add(1, Ordering::Relaxed);
                    metrics.turn_latency.observe(turn_started.elapsed());
                    let finished_counter = match finished_as {
                        Some(crate::store::RuntimeStatus::Completed) => {
                            Some(&metrics.instances_completed)
                        }
                        Some(crate::store::RuntimeStatus::Failed) => Some(&metrics.instances_failed),
                        Some(crate::store::RuntimeStatus::Terminated) => {
                            Some(&metrics.instances_terminated)
                        }
                        _ => None,
                    };
                    if let Some(counter) = finished_counter {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    act.history_len = new_len;
                    if finishes {
                        act.finished = true;
                        act.executor = None;
                    }
                    if continued {
                        act.executor = None;
                        act.history_len = 0;
                    }
                    if finishes || continued {
                        // The store dropped their records with the execution.
                        act.res.memory_calls.clear();
                    }
                    let timer_due = act.hold_timers(committed.held_timers, timer_due);
                    act.dispatch(committed.activity_ids, activities, execution, timer_due, &skip);
                    // Running attempts of calls the turn cancelled, or of an execution that
                    // ended, are told to stop at once (their work items are gone).
                    // Continuing as new ends the execution's calls too: their records went
                    // with it, and a late result of one would only be dropped.
                    let seqs = if finishes || continued {
                        None
                    } else {
                        Some(cancelled)
                    };
                    if seqs.as_ref().is_none_or(|seqs| !seqs.is_empty()) {
                        act.worker.cancel.do_send(CancelActivities {
                            instance_id: act.res.instance_id.to_string(),
                            seqs,
                        });
                    }
                    if act.res.give_up_requested() {
                        return residency::give_up(act, ctx);
                    }
                    residency::settle(act, ctx);
                }
                Err(error) if uncreated.is_some() => {
                    // The instance was not created (its id is taken, the store failed): the
                    // client has the error. The actor carries on as one loaded for the id:
                    // stopping here would lose what the dispatcher routes to it before it
                    // hears of the stop (the start of a client that created the instance in
                    // the store meanwhile, leased to this worker). It reloads with the
                    // messages that came meanwhile, and unloads when idle as any other.
                    tracing::debug!(instance_id = %act.res.instance_id, %error, "a start was not created");
                    if let Some(uncreated) = &uncreated {
                        uncreated.set(false);
                    }
                    let others = messages
                        .into_iter()
                        .filter(|m| !matches!(m, Inbound::Queued(q) if q.id == UNQUEUED_START))
                        .collect();
                    act.res.commit_failed(others);
                    act.executor = None;
                    act.history_len = 0;
                    act.finished = false;
                    act.load(ctx);
                }
                Err(error) => {
                    act.res
                        .shared
                        .metrics
                        .turn_commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // The executor ran ahead of what is stored: rebuild it from history and
                    // run these messages again.
                    act.res.commit_failed(messages);
                    if act.res.gives_up_after(&error) {
                        tracing::warn!(instance_id = %act.res.instance_id, %error, "giving the instance up");
                        return residency::give_up(act, ctx);
                    }
                    residency::retry_later(act, error, ctx);
                }
            }
        }));
    }

    /// The hold ran out before the held calls answered: commits the held turns as they are.
    fn release_held(&mut self, ctx: &mut Context<Self>) {
        if self.held.is_none() {
            return;
        }
        tracing::trace!(instance_id = %self.res.instance_id, "held turns released: their calls took longer than the hold");
        self.releasing = true;
        self.turn_started = Some(Instant::now());
        self.commit(TurnOutput::default(), Vec::new(), Extra::default(), ctx);
    }

    /// Messages came for a held turn (its calls' results): the next turn runs now and joins it.
    fn follow_held(&mut self, ctx: &mut Context<Self>) {
        if self.held.is_some() && !self.res.pending.is_empty() {
            self.res.phase = Phase::Ready;
            self.turn(ctx);
        }
    }

    /// Holds the timers the store holds for this worker until they are due (the dispatcher
    /// delivers them), and returns the due times of the others, which it claims.
    fn hold_timers(
        &mut self,
        held: Vec<OrchestrationMessage>,
        mut timer_due: Vec<DateTime<Utc>>,
    ) -> Vec<DateTime<Utc>> {
        if held.is_empty() {
            return timer_due;
        }
        // How many of each due time are held: the dispatcher claims only for the rest.
        let mut held_at: HashMap<DateTime<Utc>, usize> = HashMap::new();
        let mut timers = self.timers.borrow_mut();
        for message in held {
            if let Event::TimerFired { seq, fire_at } = message.event {
                *held_at.entry(fire_at).or_default() += 1;
                self.held_timers
                    .insert(message.id, (seq, message.execution));
                timers.hold(message);
            }
        }
        drop(timers);
        timer_due.retain(|due| match held_at.get_mut(due) {
            Some(count) if *count > 0 => {
                *count -= 1;
                false
            }
            _ => true,
        });
        // Wakes the dispatcher up for them (an empty list only re-arms its wake-up).
        if timer_due.is_empty() {
            self.res
                .dispatcher
                .timers_armed
                .do_send(TimersArmed(Vec::new()));
        }
        timer_due
    }

    /// Drops the held timers of `execution` with the `cancelled` seqs (all of them when the
    /// execution ends): those not sent yet are withdrawn (the commit consumes their rows);
    /// one the dispatcher already sent arrives as a late timer, which the next turn consumes
    /// as usual, unless the execution ended (its row goes with it): then it is dropped on
    /// arrival.
    fn drop_held_timers(&mut self, cancelled: &[u64], ends_execution: bool, execution: u32) {
        if self.held_timers.is_empty() || (cancelled.is_empty() && !ends_execution) {
            return;
        }
        let drop: Vec<i64> = self
            .held_timers
            .iter()
            .filter(|(_, (seq, of))| {
                ends_execution || (*of == Some(execution) && cancelled.contains(seq))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut timers = self.timers.borrow_mut();
        for id in drop {
            self.held_timers.remove(&id);
            if timers.cancel(id) {
                self.withdrawn_timers.push(id);
            } else if ends_execution {
                self.dropped_timers.insert(id);
            }
        }
    }

    /// Hands new work to the activity worker (but the calls in `skip`: started already, or
    /// finished) and timers to the dispatcher; after a commit that queued calls of
    /// flow-controlled activities, has the worker claim them.
    fn dispatch(
        &mut self,
        ids: Vec<i64>,
        activities: Vec<NewActivity>,
        execution: u32,
        timer_due: Vec<DateTime<Utc>>,
        skip: &HashSet<u64>,
    ) {
        if !activities.is_empty() {
            let shared = &self.res.shared;
            let claim = activities
                .iter()
                .any(|a| !a.run_here && shared.flow.contains_key(&a.name));
            let items: Vec<ActivityWorkItem> = ids
                .into_iter()
                .zip(activities)
                .filter(|(_, activity)| activity.run_here && !skip.contains(&activity.seq))
                .inspect(|(_, activity)| {
                    if activity.in_memory {
                        self.res.memory_calls.insert(activity.seq);
                    }
                })
                .map(|(id, activity)| ActivityWorkItem {
                    // 0 for a call kept in memory (the store returned no id).
                    id: if activity.in_memory { 0 } else { id },
                    instance_id: self.res.instance_id.to_string(),
                    seq: activity.seq,
                    name: activity.name,
                    input: activity.input,
                    attempt: activity.attempt.max(1),
                    execution,
                    timeouts: activity.timeouts,
                    deadline: activity.deadline,
                    heartbeat: activity.heartbeat,
                })
                .collect();
            // Calls of quick activities run their first poll here and now, for as long as
            // the budget lasts (a fan-out's other calls run on the worker meanwhile).
            // Not while the worker drains: it starts nothing then, and neither does this.
            let began = Instant::now();
            let draining = shared.activities_draining();
            let mut rest = Vec::with_capacity(items.len());
            for item in items {
                if !draining
                    && began.elapsed() < quick::DISPATCH_BUDGET
                    && shared.quick.is_quick(&item.name)
                {
                    let route = self.res.dispatcher.route.clone();
                    activity::start_here(shared, item, route, &self.worker);
                } else {
                    rest.push(item);
                }
            }
            let items = rest;
            if !items.is_empty() || claim {
                self.worker.run.do_send(RunActivities { items, claim });
            }
        }
        if !timer_due.is_empty() {
            self.res
                .dispatcher
                .timers_armed
                .do_send(TimersArmed(timer_due));
        }
    }
}

impl Resident for InstanceActor {
    const KIND: &'static str = "instance";

    fn residency(&mut self) -> &mut Residency {
        &mut self.res
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.res.phase = Phase::Loading;
        self.executor = None;
        // A held ExecutionStarted message means no turn has run yet (the first turn deletes
        // it in the transaction that writes the first history): nothing to read.
        let fresh = self.res.pending.iter().any(|m| {
            matches!(m, Inbound::Queued(message) if matches!(message.event, Event::ExecutionStarted { execution: 0, .. }))
        });
        if fresh && !self.res.has_failed() {
            return self.restore(Vec::new(), ctx);
        }
        let store = self.res.shared.store.clone();
        let instance_id = self.res.instance_id.clone();
        let load = async move { store.load_history(&instance_id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(history) => act.restore(history, ctx),
            Err(error) => residency::retry_later(act, error, ctx),
        }));
    }

    fn work(&mut self, ctx: &mut Context<Self>) {
        self.turn(ctx);
    }

    /// Resumes held messages unless suspended (or, before the start, until the start is
    /// here); an outcome no turn recorded yet is work.
    fn prepare_next(&mut self) -> bool {
        let suspended = self.executor.as_ref().is_some_and(Executor::is_suspended);
        let waiting_for_start = self.not_started()
            && !self
                .res
                .pending
                .iter()
                .any(|m| matches!(m.event(), Event::ExecutionStarted { .. }));
        if !suspended && !waiting_for_start && !self.res.deferred.is_empty() {
            let mut resumed = std::mem::take(&mut self.res.deferred);
            resumed.append(&mut self.res.pending);
            self.res.pending = resumed;
        }
        self.executor
            .as_ref()
            .is_some_and(Executor::has_unrecorded_outcome)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    /// Another worker holds the instance: the activity results this worker delivered in
    /// memory are committed as queue messages, so the other worker gets them. Queued
    /// messages stay in the store for it as they are. Results of calls kept in memory are
    /// dropped: their records became work items when the lease lapsed
    /// ([`Store::recover_calls`](crate::store::Store::recover_calls)), which run again.
    fn hand_over(&mut self, held: &[Inbound], ctx: &mut Context<Self>) {
        self.executor = None;
        self.res.memory_calls.clear();
        for inbound in held {
            if let Inbound::Local {
                item_id: Some(item_id),
                instance_id,
                execution,
                event,
            } = inbound
            {
                let shared = self.res.shared.clone();
                let completion = ActivityCompletion {
                    item_id: *item_id,
                    instance_id: instance_id.clone(),
                    execution: *execution,
                    event: event.clone(),
                    owner: shared.owner.clone(),
                    lease_until: shared.lease_until(),
                };
                let commit = async move { shared.store.complete_activity(completion).await };
                ctx.spawn(commit.into_actor(self).map(|result, _, _| {
                    if let Err(error) = result {
                        tracing::warn!(%error, "handing an activity result over failed; it will run again");
                    }
                }));
            }
        }
    }
}

impl Actor for InstanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.res
            .shared
            .metrics
            .instances_loaded
            .fetch_add(1, Ordering::Relaxed);
        self.load(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.res
            .shared
            .metrics
            .instances_loaded
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler<Deliver> for InstanceActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let mut messages = msg.0;
        if !self.held_timers.is_empty() || !self.dropped_timers.is_empty() {
            messages.retain(|m| match m {
                Inbound::Queued(message) => {
                    self.held_timers.remove(&message.id);
                    !self.dropped_timers.remove(&message.id)
                }
                Inbound::Local { .. } => true,
            });
        }
        residency::deliver(self, messages, ctx);
        self.follow_held(ctx);
    }
}

impl Handler<GiveUp> for InstanceActor {
    type Result = ();

    fn handle(&mut self, _: GiveUp, ctx: &mut Context<Self>) {
        residency::on_give_up(self, ctx);
    }
}

impl Handler<Unload> for InstanceActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        residency::on_unload(self, ctx);
    }
}

impl Handler<Drain> for InstanceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        residency::on_drain(self)
    }
}
