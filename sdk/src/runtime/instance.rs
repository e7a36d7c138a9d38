//! The instance actor: one loaded orchestration instance, its live future and its turns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::activity::{ActivityWorker, RunActivities};
use super::dispatcher::{Dispatcher, RequestUnload, TimersArmed, Unloaded, backoff};
use super::{Inbound, MessageIds, Shared, VersionMatch, VersionMismatch, queued_ids};
use crate::clock::now_millis;
use crate::error::{Error, Failure};
use crate::history::{Event, ParentInstance, Payload};
use crate::orchestration::{Action, Executor, Outcome, TurnOutput};
use crate::store::{
    ActivityCompletion, ActivityWorkItem, NewActivity, NewInstance, NewMessage, RuntimeStatus,
    TurnCommit,
};

/// Messages for this instance.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Deliver(pub(super) Vec<Inbound>);

/// The dispatcher agreed to unload this instance: stop once nothing is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Unload;

/// Resolves once no load or commit is in flight (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Drain;

/// Another worker holds the instance now (this worker's lease lapsed and it was taken over):
/// drop its in-memory state and the messages claimed for it, and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct GiveUp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Loading history and replaying it.
    Loading,
    /// Waiting for messages.
    Ready,
    /// A turn's commit is in flight.
    Committing,
}

/// What a turn commits besides the executor's output.
#[derive(Default)]
struct Extra {
    /// Replace the history (continue-as-new, rewind).
    reset_history: bool,
    /// More messages to send (rewinding children, a result resent to a parent).
    messages: Vec<NewMessage>,
}

/// The outcome of checking an instance's version against this worker's policy.
enum Admission {
    Run(Box<Executor>),
    /// Leave the instance to a worker with a matching version.
    Reject(String),
    Fail(Failure),
}

pub(super) struct InstanceActor {
    shared: Arc<Shared>,
    instance_id: Arc<str>,
    dispatcher: Addr<Dispatcher>,
    worker: Addr<ActivityWorker>,
    phase: Phase,
    executor: Option<Executor>,
    /// History ends with a terminal event: messages are only consumed (or rewind it).
    finished: bool,
    /// Length of the committed history (the next turn appends from here).
    history_len: u64,
    pending: Vec<Inbound>,
    /// Messages held while the instance is suspended.
    deferred: Vec<Inbound>,
    idle: Option<SpawnHandle>,
    unload_requested: bool,
    failures: u32,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// When the turn being run or committed started (for the turn latency metric).
    turn_started: Option<Instant>,
    /// The queue messages held or recently consumed: none is taken twice.
    message_ids: MessageIds,
    /// Give up once the commit in flight returns.
    give_up_requested: bool,
}

impl InstanceActor {
    pub(super) fn new(
        shared: Arc<Shared>,
        instance_id: Arc<str>,
        dispatcher: Addr<Dispatcher>,
        worker: Addr<ActivityWorker>,
        pending: Vec<Inbound>,
    ) -> Self {
        let mut message_ids = MessageIds::default();
        let pending = message_ids.admit(pending);
        InstanceActor {
            shared,
            instance_id,
            dispatcher,
            worker,
            phase: Phase::Loading,
            executor: None,
            finished: false,
            history_len: 0,
            pending,
            deferred: Vec::new(),
            idle: None,
            unload_requested: false,
            failures: 0,
            drain_waiters: Vec::new(),
            turn_started: None,
            message_ids,
            give_up_requested: false,
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        self.executor = None;
        // A held ExecutionStarted message means no turn has run yet (the first turn deletes
        // it in the transaction that writes the first history): nothing to read.
        let fresh = self.pending.iter().any(|m| {
            matches!(m, Inbound::Queued(message) if matches!(message.event, Event::ExecutionStarted { execution: 0, .. }))
        });
        if fresh && self.failures == 0 {
            return self.restore(Vec::new(), ctx);
        }
        let store = self.shared.store.clone();
        let instance_id = self.instance_id.clone();
        let load = async move { store.load_history(&instance_id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(history) => act.restore(history, ctx),
            Err(error) => act.retry_later(error, ctx),
        }));
    }

    fn retry_later(&mut self, error: Error, ctx: &mut Context<Self>) {
        self.failures += 1;
        let delay = backoff(self.failures);
        tracing::warn!(instance_id = %self.instance_id, %error, retry_in_ms = delay.as_millis() as u64, "instance will be reloaded");
        self.phase = Phase::Loading;
        ctx.run_later(delay, |act, ctx| act.load(ctx));
    }

    /// Rebuilds the executor from history, then runs a turn for pending messages.
    fn restore(&mut self, history: Vec<Event>, ctx: &mut Context<Self>) {
        self.history_len = history.len() as u64;
        self.finished = history.last().is_some_and(Event::is_terminal);
        self.phase = Phase::Ready;
        if self.finished || history.is_empty() {
            self.after_phase_change(ctx);
            return;
        }
        let span = tracing::info_span!("replay", instance_id = %self.instance_id);
        let _enter = span.enter();
        let mut executor = match self.admit(&history) {
            Admission::Run(executor) => executor,
            Admission::Reject(why) => return self.reject(why, ctx),
            Admission::Fail(failure) => return self.fail(failure, ctx),
        };
        self.shared.metrics.replays.fetch_add(1, Ordering::Relaxed);
        if let Err(failure) = executor.replay(&history) {
            return self.fail(failure, ctx);
        }
        self.executor = Some(*executor);
        self.after_phase_change(ctx);
    }

    /// An executor for the orchestrator named by the `ExecutionStarted` in `events`, if this
    /// worker's version policy lets it run the instance.
    fn admit(&self, events: &[Event]) -> Admission {
        let started = events.iter().find_map(|event| match event {
            Event::ExecutionStarted { name, version, .. } => {
                Some((name.as_str(), version.as_str()))
            }
            _ => None,
        });
        let Some((name, version)) = started else {
            return Admission::Fail(Failure::new(
                "corrupt_history",
                "the history of this instance has no ExecutionStarted event",
            ));
        };
        let entry = match self.shared.registry.get_orchestrator(name) {
            Ok(entry) => *entry,
            Err(error) => return Admission::Fail(error.to_failure()),
        };
        let policy = self.shared.options.versioning;
        let accepted = match policy.match_strategy {
            VersionMatch::Any => true,
            VersionMatch::Strict => version == entry.version,
            VersionMatch::CurrentOrOlder => compare_versions(version, entry.version).is_le(),
        };
        if !accepted {
            let message = format!(
                "instance version `{version}` does not match this worker's orchestrator `{name}` version `{}` \
                 (version match strategy {:?})",
                entry.version, policy.match_strategy
            );
            return match policy.on_mismatch {
                VersionMismatch::Reject => Admission::Reject(message),
                VersionMismatch::Fail => {
                    let mut failure = Failure::new("version_mismatch", message);
                    failure.non_retriable = true;
                    Admission::Fail(failure)
                }
            };
        }
        Admission::Run(Box::new(Executor::new(
            self.instance_id.clone(),
            entry,
            self.shared.options.limits,
        )))
    }

    /// Leaves the instance to another worker: gives its claimed messages back for later.
    fn reject(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(instance_id = %self.instance_id, %why, "leaving the instance to another worker");
        let ids: Vec<i64> = self
            .pending
            .drain(..)
            .filter_map(|m| match m {
                Inbound::Queued(message) => Some(message.id),
                Inbound::Local { .. } => None,
            })
            .collect();
        let shared = self.shared.clone();
        let again_at = crate::clock::saturating_after(
            now_millis(),
            self.shared.options.versioning.retry_rejected_after,
        );
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
            act.stop(ctx);
        }));
    }

    /// Ends an instance without running its code (unknown orchestrator, nondeterminism,
    /// version mismatch, terminated before it started).
    fn end_without_running(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        let messages = std::mem::take(&mut self.pending);
        let mut out = TurnOutput::default();
        out.new_events.push(Event::OrchestratorStarted {
            timestamp: now_millis(),
        });
        if self.history_len == 0
            && let Some(start) = messages
                .iter()
                .find(|m| matches!(m.event(), Event::ExecutionStarted { .. }))
        {
            out.new_events.push(start.event().clone());
        }
        match &outcome {
            Outcome::Failed(failure) => out.new_events.push(Event::ExecutionFailed {
                failure: failure.clone(),
            }),
            Outcome::Terminated(reason) => out.new_events.push(Event::ExecutionTerminated {
                reason: reason.clone(),
                cascade: false,
            }),
            Outcome::Completed(_) | Outcome::ContinuedAsNew { .. } => {}
        }
        out.finished = Some(outcome);
        self.executor = None;
        let parent = messages.iter().find_map(|m| match m.event() {
            Event::ExecutionStarted { parent, .. } => parent.clone(),
            _ => None,
        });
        let mut extra = Extra::default();
        if let (Some(parent), Some(outcome)) = (parent, &out.finished) {
            extra.messages.extend(report_to_parent(&parent, outcome));
        }
        self.commit(out, messages, extra, ctx);
    }

    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        tracing::error!(instance_id = %self.instance_id, %failure, "instance failed");
        self.end_without_running(Outcome::Failed(failure), ctx);
    }

    fn after_phase_change(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Ready {
            return;
        }
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        let suspended = self.executor.as_ref().is_some_and(Executor::is_suspended);
        if !suspended && !self.deferred.is_empty() {
            let mut resumed = std::mem::take(&mut self.deferred);
            resumed.append(&mut self.pending);
            self.pending = resumed;
        }
        let unrecorded = self
            .executor
            .as_ref()
            .is_some_and(Executor::has_unrecorded_outcome);
        if !self.pending.is_empty() || unrecorded {
            self.turn(ctx);
        } else if self.finished || (self.unload_requested && self.deferred.is_empty()) {
            self.stop(ctx);
        } else if !self.deferred.is_empty() {
            // Suspended with held messages: stay loaded until resumed.
        } else if self.shared.options.idle_unload_after.is_zero() {
            self.dispatcher
                .do_send(RequestUnload(self.instance_id.clone()));
        } else {
            self.arm_idle(ctx);
        }
    }

    fn arm_idle(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        let after = self.shared.options.idle_unload_after;
        self.idle = Some(ctx.run_later(after, |act, _| {
            act.idle = None;
            act.dispatcher
                .do_send(RequestUnload(act.instance_id.clone()));
        }));
    }

    /// Gives the instance up to the worker that holds it now: the activity results this
    /// worker delivered in memory are committed for it, the messages claimed here are given
    /// back to the store (visible at once; they are the other worker's to claim), and the
    /// actor stops without handing anything back to the dispatcher.
    fn give_up(&mut self, ctx: &mut Context<Self>) {
        self.give_up_requested = false;
        let mut held = std::mem::take(&mut self.deferred);
        held.append(&mut self.pending);
        let ids = queued_ids(&held);
        self.pending = held;
        self.hand_over_local_results(ctx);
        self.pending.clear();
        if !ids.is_empty() {
            let shared = self.shared.clone();
            let abandon = async move {
                shared
                    .store
                    .abandon_messages(&shared.owner, &ids, now_millis())
                    .await
            };
            ctx.spawn(abandon.into_actor(self).map(|result, _, _| {
                if let Err(error) = result {
                    tracing::warn!(%error, "giving messages back failed; they return when their lease lapses");
                }
            }));
        }
        self.executor = None;
        self.stop(ctx);
    }

    fn stop(&mut self, ctx: &mut Context<Self>) {
        let mut leftover = std::mem::take(&mut self.deferred);
        leftover.append(&mut self.pending);
        self.dispatcher.do_send(Unloaded {
            instance_id: self.instance_id.clone(),
            leftover,
            finished: self.finished,
        });
        ctx.stop();
    }

    /// Runs one turn over all pending messages and commits it.
    fn turn(&mut self, ctx: &mut Context<Self>) {
        self.turn_started = Some(Instant::now());
        let mut messages = std::mem::take(&mut self.pending);
        // Arrival order, except that the start comes first.
        messages.sort_by_key(|m| !matches!(m.event(), Event::ExecutionStarted { .. }));
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
            self.pending = live;
            let starts: Vec<Event> = self
                .pending
                .iter()
                .filter(|m| matches!(m.event(), Event::ExecutionStarted { .. }))
                .map(|m| m.event().clone())
                .collect();
            if let Some(reason) = self.pending.iter().find_map(|m| match m.event() {
                Event::ExecutionTerminated { reason, .. } => Some(reason.clone()),
                _ => None,
            }) {
                self.pending.extend(stale);
                return self.end_without_running(Outcome::Terminated(reason), ctx);
            }
            if starts.is_empty() {
                tracing::debug!(instance_id = %self.instance_id, "dropping messages for an execution that is not running");
                let mut all = std::mem::take(&mut self.pending);
                all.extend(stale);
                return self.commit(TurnOutput::default(), all, Extra::default(), ctx);
            }
            match self.admit(&starts) {
                Admission::Run(executor) => self.executor = Some(*executor),
                Admission::Reject(why) => return self.reject(why, ctx),
                Admission::Fail(failure) => {
                    self.pending.extend(stale);
                    return self.fail(failure, ctx);
                }
            }
            let live = std::mem::take(&mut self.pending);
            return self.run(live, stale, ctx);
        }
        self.run(live, stale, ctx);
    }

    /// Runs `live` messages through the executor; `stale` ones are only consumed.
    fn run(&mut self, live: Vec<Inbound>, stale: Vec<Inbound>, ctx: &mut Context<Self>) {
        let Some(executor) = self.executor.as_mut() else {
            return;
        };
        let span = tracing::info_span!("turn", instance_id = %self.instance_id);
        let _enter = span.enter();
        let events = live.iter().map(|m| m.event().clone()).collect();
        let out = executor.run_turn(now_millis(), events);
        drop(_enter);
        let mut consumed = stale;
        for (index, message) in live.into_iter().enumerate() {
            if out.deferred.contains(&index) {
                self.deferred.push(message);
            } else {
                consumed.push(message);
            }
        }
        self.commit(out, consumed, Extra::default(), ctx);
    }

    fn load_for_rewind(&mut self, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let store = self.shared.store.clone();
        let instance_id = self.instance_id.clone();
        let load = async move { store.load_history(&instance_id).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(history) => {
                act.phase = Phase::Ready;
                act.rewind(history, messages, ctx);
            }
            Err(error) => {
                act.pending = messages;
                act.retry_later(error, ctx);
            }
        }));
    }

    /// Rewinds a failed instance: its failures leave history, and the calls left without a
    /// result run again. A completed sub-orchestration asked to rewind resends its result to
    /// its parent (which lost it when it failed).
    fn rewind(&mut self, history: Vec<Event>, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
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
                    extra.messages = report_to_parent(parent, &Outcome::Completed(output.clone()));
                }
                return self.commit(TurnOutput::default(), messages, extra, ctx);
            }
            _ => return self.commit(TurnOutput::default(), messages, Extra::default(), ctx),
        }
        let mut rewound: Vec<Event> = history
            .into_iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::ExecutionFailed { .. }
                        | Event::TaskFailed { .. }
                        | Event::SubOrchestrationFailed { .. }
                )
            })
            .collect();
        rewound.push(Event::OrchestratorStarted {
            timestamp: now_millis(),
        });
        rewound.push(Event::ExecutionRewound { reason });
        let mut executor = match self.admit(&rewound) {
            Admission::Run(executor) => executor,
            Admission::Reject(why) | Admission::Fail(Failure { message: why, .. }) => {
                let why = format!("this worker cannot run the instance: {why}");
                return self.refuse_rewind(history_len, parent, why, messages, ctx);
            }
        };
        if let Err(failure) = executor.replay(&rewound) {
            let why = format!("the orchestrator code does not replay the history: {failure}");
            return self.refuse_rewind(history_len, parent, why, messages, ctx);
        }
        let mut out = TurnOutput::default();
        let mut extra = Extra {
            reset_history: true,
            messages: Vec::new(),
        };
        for call in executor.open_calls(&rewound) {
            match call {
                Event::TaskScheduled { seq, name, input } => {
                    out.actions.push(Action::CallActivity { seq, name, input })
                }
                Event::TimerCreated { seq, fire_at } => {
                    out.actions.push(Action::CreateTimer { seq, fire_at })
                }
                Event::SubOrchestrationScheduled { instance_id, .. } => {
                    extra.messages.push(NewMessage {
                        instance_id,
                        visible_at: now_millis(),
                        event: Event::ExecutionRewound {
                            reason: format!("parent `{}` was rewound", self.instance_id),
                        },
                        execution: None,
                    })
                }
                _ => {}
            }
        }
        out.new_events = rewound;
        self.history_len = 0;
        self.finished = false;
        self.executor = Some(*executor);
        self.commit(out, messages, extra, ctx);
    }

    /// A rewind that cannot run fails the instance again, saying why (instead of leaving it
    /// Pending with nothing to run): its history keeps the original failure, then a new one.
    fn refuse_rewind(
        &mut self,
        history_len: u64,
        parent: Option<ParentInstance>,
        why: String,
        messages: Vec<Inbound>,
        ctx: &mut Context<Self>,
    ) {
        tracing::warn!(instance_id = %self.instance_id, %why, "cannot rewind");
        let mut failure = Failure::new("rewind_failed", format!("the rewind could not run: {why}"));
        failure.non_retriable = true;
        let outcome = Outcome::Failed(failure.clone());
        let mut extra = Extra::default();
        if let Some(parent) = &parent {
            extra.messages = report_to_parent(parent, &outcome);
        }
        let out = TurnOutput {
            new_events: vec![
                Event::OrchestratorStarted {
                    timestamp: now_millis(),
                },
                Event::ExecutionFailed { failure },
            ],
            finished: Some(outcome),
            ..TurnOutput::default()
        };
        self.history_len = history_len;
        self.commit(out, messages, extra, ctx);
    }

    fn commit(
        &mut self,
        out: TurnOutput,
        messages: Vec<Inbound>,
        extra: Extra,
        ctx: &mut Context<Self>,
    ) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        let now = now_millis();
        let instance_id = self.instance_id.to_string();
        let custom_status = self
            .executor
            .as_mut()
            .and_then(Executor::take_custom_status);
        let execution = self.executor.as_ref().map_or(0, Executor::execution);
        let parent = self.executor.as_ref().and_then(|e| e.parent().cloned());
        let suspended = self.executor.as_ref().is_some_and(Executor::is_suspended);
        let mut reset_history = extra.reset_history;
        let mut new_input = None;
        let mut new_events = out.new_events;
        let mut outbound = extra.messages;
        let (status, output, failure) = match &out.finished {
            Some(Outcome::Completed(output)) => {
                (Some(RuntimeStatus::Completed), Some(output.clone()), None)
            }
            Some(Outcome::Failed(failure)) => {
                (Some(RuntimeStatus::Failed), None, Some(failure.clone()))
            }
            // The reason is the output, as Durable Functions shows it.
            Some(Outcome::Terminated(reason)) => (
                Some(RuntimeStatus::Terminated),
                Payload::encode(reason).ok(),
                None,
            ),
            Some(Outcome::ContinuedAsNew { input, carried, .. }) => {
                // A new execution with an empty history; its start message is queued.
                reset_history = true;
                new_events.clear();
                new_input = Some(input.clone());
                let (name, version) = self
                    .executor
                    .as_ref()
                    .map(Executor::name_and_version)
                    .unwrap_or_default();
                outbound.push(NewMessage {
                    instance_id: instance_id.clone(),
                    visible_at: now,
                    event: Event::ExecutionStarted {
                        name,
                        version,
                        input: input.clone(),
                        execution: execution + 1,
                        parent: parent.clone(),
                    },
                    execution: None,
                });
                outbound.extend(carried.iter().map(|(name, data)| NewMessage {
                    instance_id: instance_id.clone(),
                    visible_at: now,
                    event: Event::EventRaised {
                        name: name.clone(),
                        data: data.clone(),
                    },
                    execution: None,
                }));
                (Some(RuntimeStatus::Running), None, None)
            }
            None if new_events.is_empty() => (None, None, None),
            None if suspended => (Some(RuntimeStatus::Suspended), None, None),
            None => (Some(RuntimeStatus::Running), None, None),
        };
        if let (Some(parent), Some(outcome)) = (&parent, &out.finished) {
            outbound.extend(report_to_parent(parent, outcome));
        }
        let mut activities = Vec::new();
        let mut children = Vec::new();
        for action in &out.actions {
            match action {
                Action::CallActivity { seq, name, input } => activities.push(NewActivity {
                    seq: *seq,
                    name: name.clone(),
                    input: input.clone(),
                }),
                Action::CreateTimer { seq, fire_at } => outbound.push(NewMessage {
                    instance_id: instance_id.clone(),
                    visible_at: *fire_at,
                    event: Event::TimerFired {
                        seq: *seq,
                        fire_at: *fire_at,
                    },
                    execution: Some(execution),
                }),
                Action::CallSubOrchestrator {
                    seq,
                    name,
                    version,
                    instance_id: child,
                    input,
                } => children.push(NewInstance {
                    instance_id: child.clone(),
                    name: name.clone(),
                    version: version.clone(),
                    input: input.clone(),
                    created_at: now,
                    parent: Some(ParentInstance {
                        instance_id: instance_id.clone(),
                        seq: *seq,
                        execution,
                    }),
                }),
                Action::Patch { .. } => {}
                Action::CallEntity {
                    seq,
                    entity,
                    operation,
                    input,
                } => outbound.push(NewMessage {
                    instance_id: entity.instance_id(),
                    visible_at: now,
                    event: Event::EntityOperation {
                        operation: operation.clone(),
                        input: input.clone(),
                        caller: Some(ParentInstance {
                            instance_id: instance_id.clone(),
                            seq: *seq,
                            execution,
                        }),
                        sender: Some(instance_id.clone()),
                    },
                    execution: None,
                }),
                Action::SignalEntity {
                    entity,
                    operation,
                    input,
                    at,
                    ..
                } => outbound.push(NewMessage {
                    instance_id: entity.instance_id(),
                    visible_at: at.map_or(now, |at| at.max(now)),
                    event: Event::EntityOperation {
                        operation: operation.clone(),
                        input: input.clone(),
                        caller: None,
                        sender: Some(instance_id.clone()),
                    },
                    execution: None,
                }),
                Action::LockEntities { seq, entities } => {
                    if let Some(first) = entities.first() {
                        outbound.push(NewMessage {
                            instance_id: first.instance_id(),
                            visible_at: now,
                            event: Event::EntityLockRequest {
                                owner: ParentInstance {
                                    instance_id: instance_id.clone(),
                                    seq: *seq,
                                    execution,
                                },
                                entities: entities.clone(),
                                position: 0,
                            },
                            execution: None,
                        });
                    }
                }
                Action::UnlockEntities { entities, .. } => {
                    outbound.extend(entities.iter().map(|entity| NewMessage {
                        instance_id: entity.instance_id(),
                        visible_at: now,
                        event: Event::EntityUnlock {
                            owner: instance_id.clone(),
                        },
                        execution: None,
                    }));
                }
            }
        }
        if let Some(Outcome::Terminated(reason)) = &out.finished {
            outbound.extend(out.terminate_children.iter().map(|child| NewMessage {
                instance_id: child.clone(),
                visible_at: now,
                event: Event::ExecutionTerminated {
                    reason: format!("parent `{instance_id}` was terminated: {reason}"),
                    cascade: true,
                },
                execution: None,
            }));
        }
        let timer_due: Vec<DateTime<Utc>> = outbound
            .iter()
            .filter(|m| m.instance_id == instance_id && m.visible_at > now)
            .map(|m| m.visible_at)
            .collect();
        let history_start = if reset_history { 0 } else { self.history_len };
        let new_len = history_start + new_events.len() as u64;
        let finishes = matches!(
            out.finished,
            Some(Outcome::Completed(_) | Outcome::Failed(_) | Outcome::Terminated(_))
        );
        let continued = matches!(out.finished, Some(Outcome::ContinuedAsNew { .. }));
        let commit = TurnCommit {
            instance_id,
            owner: self.shared.owner.clone(),
            history_start,
            reset_history,
            execution,
            new_events,
            consumed: messages
                .iter()
                .filter_map(|m| match m {
                    Inbound::Queued(message) => Some(message.id),
                    Inbound::Local { .. } => None,
                })
                .collect(),
            completed_activities: messages
                .iter()
                .filter_map(|m| match m {
                    Inbound::Local { item_id, .. } => Some(*item_id),
                    Inbound::Queued(_) => None,
                })
                .collect(),
            activities,
            messages: outbound,
            new_instances: children,
            status,
            output,
            failure,
            custom_status,
            input: new_input,
            entity: None,
            lease_until: self.shared.lease_until(),
            now,
        };
        self.phase = Phase::Committing;
        let turn_started = self.turn_started.take().unwrap_or_else(Instant::now);
        let finished_as = status.filter(|status| finishes && status.is_terminal());
        let store = self.shared.store.clone();
        let commit_fut = async move {
            let activities = commit.activities.clone();
            store
                .commit_turn(commit)
                .await
                .map(|committed| (committed, activities))
        };
        ctx.spawn(commit_fut.into_actor(self).map(move |result, act, ctx| {
            act.phase = Phase::Ready;
            match result {
                Ok((committed, activities)) => {
                    act.message_ids.consumed(&messages);
                    let metrics = &act.shared.metrics;
                    metrics.turns.fetch_add(1, Ordering::Relaxed);
                    metrics.turn_latency.observe(turn_started.elapsed());
                    let finished_counter = match finished_as {
                        Some(RuntimeStatus::Completed) => Some(&metrics.instances_completed),
                        Some(RuntimeStatus::Failed) => Some(&metrics.instances_failed),
                        Some(RuntimeStatus::Terminated) => Some(&metrics.instances_terminated),
                        _ => None,
                    };
                    if let Some(counter) = finished_counter {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    act.failures = 0;
                    act.history_len = new_len;
                    if finishes {
                        act.finished = true;
                        act.executor = None;
                    }
                    if continued {
                        act.executor = None;
                        act.history_len = 0;
                    }
                    act.dispatch(committed.activity_ids, activities, execution, timer_due);
                    if act.give_up_requested {
                        return act.give_up(ctx);
                    }
                    act.after_phase_change(ctx);
                }
                Err(error) => {
                    act.shared
                        .metrics
                        .turn_commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                    // The executor ran ahead of what is stored: rebuild it from history and
                    // run these messages again.
                    let mut pending = messages;
                    pending.append(&mut act.pending);
                    act.pending = pending;
                    if act.give_up_requested || matches!(error, Error::Conflict { .. }) {
                        tracing::warn!(instance_id = %act.instance_id, %error, "giving the instance up");
                        return act.give_up(ctx);
                    }
                    act.retry_later(error, ctx);
                }
            }
        }));
    }

    /// Another worker holds the instance: commit the activity results this worker delivered
    /// in memory as queue messages, so the other worker gets them. Queued messages stay in
    /// the store for it as they are.
    fn hand_over_local_results(&mut self, ctx: &mut Context<Self>) {
        let pending = std::mem::take(&mut self.pending);
        for inbound in pending {
            if let Inbound::Local {
                item_id,
                instance_id,
                execution,
                event,
            } = inbound
            {
                let shared = self.shared.clone();
                let completion = ActivityCompletion {
                    item_id,
                    instance_id,
                    execution,
                    event,
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

    /// Hands new work to the activity worker and timers to the dispatcher.
    fn dispatch(
        &mut self,
        ids: Vec<i64>,
        activities: Vec<NewActivity>,
        execution: u32,
        timer_due: Vec<DateTime<Utc>>,
    ) {
        if !activities.is_empty() {
            let items = ids
                .into_iter()
                .zip(activities)
                .map(|(id, activity)| ActivityWorkItem {
                    id,
                    instance_id: self.instance_id.to_string(),
                    seq: activity.seq,
                    name: activity.name,
                    input: activity.input,
                    attempt: 1,
                    execution,
                })
                .collect();
            self.worker.do_send(RunActivities(items));
        }
        if !timer_due.is_empty() {
            self.dispatcher.do_send(TimersArmed(timer_due));
        }
    }
}

/// The message that tells a parent how its sub-orchestration ended.
fn report_to_parent(parent: &ParentInstance, outcome: &Outcome) -> Vec<NewMessage> {
    let event = match outcome {
        Outcome::Completed(output) => Event::SubOrchestrationCompleted {
            seq: parent.seq,
            output: output.clone(),
        },
        Outcome::Failed(failure) => Event::SubOrchestrationFailed {
            seq: parent.seq,
            failure: failure.clone(),
        },
        Outcome::Terminated(reason) => Event::SubOrchestrationFailed {
            seq: parent.seq,
            failure: Failure::new("terminated", format!("terminated: {reason}")),
        },
        Outcome::ContinuedAsNew { .. } => return Vec::new(),
    };
    vec![NewMessage {
        instance_id: parent.instance_id.clone(),
        visible_at: now_millis(),
        event,
        execution: Some(parent.execution),
    }]
}

/// Orders versions numerically where they are numbers: "1.10" > "1.9" > "1".
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.split(['.', '-'])
            .map(|p| {
                let number = p
                    .parse::<u64>()
                    .unwrap_or(if p.is_empty() { 0 } else { u64::MAX });
                (number, p.to_owned())
            })
            .collect()
    };
    parts(a).cmp(&parts(b))
}

impl Actor for InstanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.shared
            .metrics
            .instances_loaded
            .fetch_add(1, Ordering::Relaxed);
        self.load(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.shared
            .metrics
            .instances_loaded
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler<Deliver> for InstanceActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        let fresh = self.message_ids.admit(msg.0);
        if fresh.is_empty() {
            return self.after_phase_change(ctx);
        }
        self.pending.extend(fresh);
        if self.phase == Phase::Ready {
            self.turn(ctx);
        }
    }
}

impl Handler<GiveUp> for InstanceActor {
    type Result = ();

    fn handle(&mut self, _: GiveUp, ctx: &mut Context<Self>) {
        if self.phase == Phase::Committing {
            self.give_up_requested = true;
        } else {
            self.give_up(ctx);
        }
    }
}

impl Handler<Unload> for InstanceActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        self.unload_requested = true;
        if self.phase == Phase::Ready && self.pending.is_empty() && self.deferred.is_empty() {
            self.stop(ctx);
        }
    }
}

impl Handler<Drain> for InstanceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        drained(self.phase == Phase::Ready, &mut self.drain_waiters)
    }
}

/// The answer to [`Drain`]: at once when the actor is between turns (`ready`), otherwise
/// when it next is (it answers `waiters` then).
pub(super) fn drained(ready: bool, waiters: &mut Vec<oneshot::Sender<()>>) -> ResponseFuture<()> {
    let (tx, rx) = oneshot::channel();
    if ready {
        let _ = tx.send(());
    } else {
        waiters.push(tx);
    }
    Box::pin(async move {
        let _ = rx.await;
    })
}

#[cfg(test)]
mod tests {
    use super::compare_versions;
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("2", "10"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare_versions("", "1"), Ordering::Less);
    }
}
