//! The instance actor: one loaded orchestration instance, its live future and its turns.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::activity::{ActivityWorker, RunActivities};
use super::dispatcher::{Dispatcher, RequestUnload, TimersArmed, Unloaded, backoff};
use super::{Inbound, Shared};
use crate::client::now_millis;
use crate::error::{Error, Failure};
use crate::history::Event;
use crate::replay::{Action, Executor, TurnOutput};
use crate::store::{
    ActivityCompletion, ActivityWorkItem, NewActivity, NewMessage, RuntimeStatus, TurnCommit,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Loading history and replaying it.
    Loading,
    /// Waiting for messages.
    Ready,
    /// A turn's commit is in flight.
    Committing,
}

pub(super) struct InstanceActor {
    shared: Arc<Shared>,
    instance_id: Arc<str>,
    dispatcher: Addr<Dispatcher>,
    worker: Addr<ActivityWorker>,
    phase: Phase,
    executor: Option<Executor>,
    /// History ends with a terminal event: messages are only consumed.
    finished: bool,
    /// Length of the committed history (the next turn appends from here).
    history_len: u64,
    pending: Vec<Inbound>,
    idle: Option<SpawnHandle>,
    unload_requested: bool,
    failures: u32,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl InstanceActor {
    pub(super) fn new(
        shared: Arc<Shared>,
        instance_id: Arc<str>,
        dispatcher: Addr<Dispatcher>,
        worker: Addr<ActivityWorker>,
        pending: Vec<Inbound>,
    ) -> Self {
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
            idle: None,
            unload_requested: false,
            failures: 0,
            drain_waiters: Vec::new(),
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        self.executor = None;
        // A held ExecutionStarted message means no turn has run yet (the first turn deletes
        // it in the transaction that writes the first history): nothing to read.
        let fresh = self.pending.iter().any(|m| {
            matches!(m, Inbound::Queued(message) if matches!(message.event, Event::ExecutionStarted { .. }))
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
        let span = tracing::debug_span!("replay", instance_id = %self.instance_id);
        let _enter = span.enter();
        let mut executor = match self.executor_for(&history) {
            Ok(executor) => executor,
            Err(failure) => return self.fail(failure, ctx),
        };
        match executor.replay(&history) {
            Ok(()) => self.executor = Some(executor),
            Err(failure) => return self.fail(failure, ctx),
        }
        self.after_phase_change(ctx);
    }

    /// An executor for the orchestrator named by the `ExecutionStarted` in `events`.
    fn executor_for(&self, events: &[Event]) -> Result<Executor, Failure> {
        let name = events.iter().find_map(|event| match event {
            Event::ExecutionStarted { name, .. } => Some(name.as_str()),
            _ => None,
        });
        let Some(name) = name else {
            return Err(Failure::new(
                "corrupt_history",
                "the history of this instance has no ExecutionStarted event",
            ));
        };
        let entry = self
            .shared
            .registry
            .get_orchestrator(name)
            .map_err(|e| e.to_failure())?;
        Ok(Executor::new(self.instance_id.clone(), *entry))
    }

    /// Fails the instance without running its code (unknown orchestrator, nondeterminism).
    fn fail(&mut self, failure: Failure, ctx: &mut Context<Self>) {
        tracing::error!(instance_id = %self.instance_id, %failure, "instance failed");
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
        out.new_events.push(Event::ExecutionFailed {
            failure: failure.clone(),
        });
        out.finished = Some(Err(failure));
        self.executor = None;
        self.commit(out, messages, ctx);
    }

    fn after_phase_change(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Ready {
            return;
        }
        for waiter in self.drain_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if !self.pending.is_empty() {
            self.turn(ctx);
        } else if self.unload_requested || self.finished {
            self.stop(ctx);
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

    fn stop(&mut self, ctx: &mut Context<Self>) {
        self.dispatcher.do_send(Unloaded {
            instance_id: self.instance_id.clone(),
            leftover: std::mem::take(&mut self.pending),
            finished: self.finished,
        });
        ctx.stop();
    }

    /// Runs one turn over all pending messages and commits it.
    fn turn(&mut self, ctx: &mut Context<Self>) {
        let mut messages = std::mem::take(&mut self.pending);
        // Arrival order, except that the start comes first.
        messages.sort_by_key(|m| !matches!(m.event(), Event::ExecutionStarted { .. }));
        if self.finished {
            // Late messages for a finished instance (a losing timer, a duplicate result).
            return self.commit(TurnOutput::default(), messages, ctx);
        }
        if self.executor.is_none() {
            let starts: Vec<Event> = messages
                .iter()
                .filter(|m| matches!(m.event(), Event::ExecutionStarted { .. }))
                .map(|m| m.event().clone())
                .collect();
            if starts.is_empty() {
                tracing::warn!(instance_id = %self.instance_id, "messages for an instance that has not started; dropping them");
                return self.commit(TurnOutput::default(), messages, ctx);
            }
            match self.executor_for(&starts) {
                Ok(executor) => self.executor = Some(executor),
                Err(failure) => {
                    self.pending = messages;
                    return self.fail(failure, ctx);
                }
            }
        }
        let Some(executor) = self.executor.as_mut() else {
            return;
        };
        let span = tracing::debug_span!("turn", instance_id = %self.instance_id);
        let _enter = span.enter();
        let events = messages.iter().map(|m| m.event().clone()).collect();
        let out = executor.run_turn(now_millis(), events);
        drop(_enter);
        self.commit(out, messages, ctx);
    }

    fn commit(&mut self, out: TurnOutput, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        let custom_status = self
            .executor
            .as_mut()
            .and_then(Executor::take_custom_status);
        let (status, output, failure) = match &out.finished {
            Some(Ok(output)) => (Some(RuntimeStatus::Completed), Some(output.clone()), None),
            Some(Err(failure)) => (Some(RuntimeStatus::Failed), None, Some(failure.clone())),
            None if out.new_events.is_empty() => (None, None, None),
            None => (Some(RuntimeStatus::Running), None, None),
        };
        let mut activities = Vec::new();
        let mut timers = Vec::new();
        for action in &out.actions {
            match action {
                Action::CallActivity { seq, name, input } => activities.push(NewActivity {
                    seq: *seq,
                    name: name.clone(),
                    input: input.clone(),
                }),
                Action::CreateTimer { seq, fire_at } => timers.push(NewMessage {
                    instance_id: self.instance_id.to_string(),
                    visible_at: *fire_at,
                    event: Event::TimerFired {
                        seq: *seq,
                        fire_at: *fire_at,
                    },
                }),
            }
        }
        let timer_due: Vec<_> = timers.iter().map(|t| t.visible_at).collect();
        let new_len = self.history_len + out.new_events.len() as u64;
        let finishes = out.finished.is_some();
        let commit = TurnCommit {
            instance_id: self.instance_id.to_string(),
            owner: self.shared.owner.clone(),
            history_start: self.history_len,
            new_events: out.new_events,
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
            messages: timers,
            status,
            output,
            failure,
            custom_status,
            lease_until: self.shared.lease_until(),
            now: now_millis(),
        };
        self.phase = Phase::Committing;
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
                    act.failures = 0;
                    act.history_len = new_len;
                    if finishes {
                        act.finished = true;
                        act.executor = None;
                    }
                    act.dispatch(committed.activity_ids, activities, timer_due);
                    act.after_phase_change(ctx);
                }
                Err(error) => {
                    // The executor ran ahead of what is stored: rebuild it from history and
                    // run these messages again.
                    let mut pending = messages;
                    pending.append(&mut act.pending);
                    act.pending = pending;
                    if let Error::Conflict { .. } = error {
                        tracing::warn!(instance_id = %act.instance_id, %error, "unloading the instance");
                        act.hand_over_local_results(ctx);
                        return act.stop(ctx);
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
        for inbound in std::mem::take(&mut self.pending) {
            if let Inbound::Local {
                item_id,
                instance_id,
                event,
            } = inbound
            {
                let shared = self.shared.clone();
                let completion = ActivityCompletion {
                    item_id,
                    instance_id,
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
        timer_due: Vec<chrono::DateTime<chrono::Utc>>,
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
                })
                .collect();
            self.worker.do_send(RunActivities(items));
        }
        if !timer_due.is_empty() {
            self.dispatcher.do_send(TimersArmed(timer_due));
        }
    }
}

impl Actor for InstanceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx);
    }
}

impl Handler<Deliver> for InstanceActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
        self.pending.extend(msg.0);
        if self.phase == Phase::Ready {
            self.turn(ctx);
        }
    }
}

impl Handler<Unload> for InstanceActor {
    type Result = ();

    fn handle(&mut self, _: Unload, ctx: &mut Context<Self>) {
        self.unload_requested = true;
        if self.phase == Phase::Ready && self.pending.is_empty() {
            self.stop(ctx);
        }
    }
}

impl Handler<Drain> for InstanceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.phase == Phase::Ready {
            let _ = tx.send(());
        } else {
            self.drain_waiters.push(tx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
