//! The activity worker actor: runs activities with a concurrency limit and commits results;
//! bounds each attempt by its timeouts, stores its heartbeats and tells it to stop when its
//! call is cancelled (by an instance of this worker at once, by another process at the next
//! sync with the store).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::Shared;
use super::messages::{
    Adopt, Attempt, AttemptEnded, CancelActivities, Drain, Inbound, MemoryItem, Route,
    RunActivities, ToDispatcher, ToWorker,
};
use super::poll::Poller;
use super::quick::FirstPoll;
use super::residency::backoff;
use crate::activity::{ActivityContext, AttemptControl, CancelReason};
use crate::clock::checked_after;
use crate::error::Failure;
use crate::history::Event;
use crate::panics::panic_message;
use crate::panics::{Caught, take_location};
use crate::store::{ActivityCompletion, ActivityHeartbeat, ActivityWorkItem, HeldWork, MemoryCall};

/// Where a work item came from, which decides how its result travels.
#[derive(Debug, Clone)]
enum Origin {
    /// Scheduled by a turn in this worker: the result goes to the instance in memory and is
    /// committed with the turn that consumes it.
    Local,
    /// Scheduled by a turn in this worker and kept in memory, without a work item unless
    /// one is made of it while it runs ([`MemoryItem`]); the result goes to the instance in
    /// memory.
    Memory(Arc<MemoryItem>),
    /// Claimed from the store (after a crash, or from another worker): the result is
    /// committed as a queue message.
    Claimed,
}

impl Origin {
    /// Where a call this worker's instance scheduled came from: kept in memory (no work
    /// item: `item.id` becomes a key of its own, [`Shared::next_memory_key`]) or local.
    fn of_local(shared: &Shared, item: &mut ActivityWorkItem) -> Origin {
        if item.id == 0 {
            item.id = shared.next_memory_key();
            Origin::Memory(Arc::default())
        } else {
            Origin::Local
        }
    }

    /// For a call kept in memory, its work item once one is made.
    fn memory(&self) -> Option<Arc<MemoryItem>> {
        match self {
            Origin::Memory(call) => Some(call.clone()),
            _ => None,
        }
    }
}

/// The control an attempt of `item` shares with the worker.
fn new_control(shared: &Shared, item: &ActivityWorkItem) -> Arc<AttemptControl> {
    Arc::new(AttemptControl::new(
        item.heartbeat.clone(),
        shared.options.limits,
        shared.clock.clone(),
    ))
}

pub(super) struct ActivityWorker {
    shared: Arc<Shared>,
    dispatcher: ToDispatcher,
    queue: VecDeque<(ActivityWorkItem, Origin)>,
    running: usize,
    /// The work items running now, with what their attempts share with the worker (their
    /// leases are renewed with the queued ones), and the attempts of quick activities that
    /// go on on the runtime's thread ([`Adopt`]). Calls kept in memory have negative keys of
    /// their own ([`Shared::next_memory_key`]).
    attempts: HashMap<i64, Attempt>,
    claiming: bool,
    /// A claim was asked for while one ran or every slot was busy: it runs when the running
    /// one ends or a slot frees (work queued meanwhile is not left to the poll).
    claim_pending: bool,
    /// A sync with the store (heartbeats out, cancellations in) is in flight.
    syncing: bool,
    poller: Poller,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// The last claim left work of a flow-controlled activity waiting
    /// ([`ClaimedActivities::held_back`](crate::store::ClaimedActivities::held_back)).
    flow_waiting: bool,
    /// A claim is due in [`FLOW_RECHECK`] (flow-controlled work waits).
    flow_recheck: bool,
}

/// How soon a worker claims again while its flow-controlled activities' limits hold work back:
/// limits free up when attempts end on any worker and as rate windows pass.
const FLOW_RECHECK: Duration = Duration::from_millis(20);

impl ActivityWorker {
    pub(super) fn new(shared: Arc<Shared>, dispatcher: ToDispatcher) -> Self {
        ActivityWorker {
            poller: Poller::new(shared.options.poll_interval),
            shared,
            dispatcher,
            queue: VecDeque::new(),
            running: 0,
            attempts: HashMap::new(),
            claiming: false,
            claim_pending: false,
            syncing: false,
            drain_waiters: Vec::new(),
            flow_waiting: false,
            flow_recheck: false,
        }
    }

    /// Starts queued items while below the concurrency limit.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let limit = self.shared.options.activity_concurrency;
        while !self.shared.activities_draining() && self.running < limit {
            let Some((item, origin)) = self.queue.pop_front() else {
                break;
            };
            self.running += 1;
            let control = new_control(&self.shared, &item);
            let item_id = item.id;
            self.attempts.insert(
                item_id,
                Attempt::new(&item, origin.memory(), control.clone()),
            );
            let shared = self.shared.clone();
            let route = self.dispatcher.route.clone();
            let limited = shared.flow.contains_key(&item.name);
            let run = run(shared, item, origin, control, route, Thread::Worker).into_actor(self);
            ctx.spawn(run.map(move |(), act, ctx| {
                act.running -= 1;
                act.attempts.remove(&item_id);
                act.pump(ctx);
                if limited || act.claim_pending {
                    // A slot (of its limit) is free: what waits for it may start.
                    act.claim(ctx);
                }
            }));
        }
        let metrics = &self.shared.metrics;
        let running = i64::try_from(self.running).unwrap_or(i64::MAX);
        let queued = i64::try_from(self.queue.len()).unwrap_or(i64::MAX);
        metrics.activities_running.store(running, Ordering::Relaxed);
        metrics.activities_queued.store(queued, Ordering::Relaxed);
        if self.running == 0 {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Renews the leases of the work items queued and running here (those whose results went
    /// to a loaded instance are renewed with it, by the dispatcher).
    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let held = HeldWork {
            instances: Vec::new(),
            activity_items: self
                .attempts
                .iter()
                .filter_map(|(key, attempt)| attempt.item_id(*key))
                .chain(
                    self.queue
                        .iter()
                        .map(|(item, _)| item.id)
                        .filter(|id| *id > 0),
                )
                .collect(),
        };
        if held.activity_items.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let renew = async move {
            let lease_until = shared.lease_until();
            shared
                .store
                .renew_leases(&shared.owner, &held, lease_until)
                .await
        };
        ctx.spawn(renew.into_actor(self).map(|result, _, _| {
            if let Err(error) = result {
                tracing::warn!(%error, "renewing activity leases failed; will retry");
            }
        }));
    }

    /// Stores the latest heartbeats of running attempts and tells those whose work items are
    /// gone (their call cancelled, their orchestration ended, taken over elsewhere) to stop.
    /// First, calls kept in memory that heartbeat or have run for a sync period get work
    /// items leased to this worker (so their heartbeats are stored in this same sync, a
    /// cancellation by another process is noticed and they are listed, as every work item's);
    /// a call whose record is gone (its instance was recovered elsewhere) is told to stop.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.attempts.is_empty() {
            return;
        }
        let period = self.shared.options.activity_sync_interval;
        let mut persist: Vec<(MemoryCall, Arc<MemoryItem>, Arc<AttemptControl>)> = Vec::new();
        for attempt in self.attempts.values() {
            let Some(call) = &attempt.memory else {
                continue;
            };
            let due = attempt.control.has_unsaved() || attempt.started.elapsed() >= period;
            if due && !call.persisting.swap(true, Ordering::Relaxed) {
                let id = MemoryCall {
                    instance_id: attempt.instance_id.clone(),
                    execution: attempt.execution,
                    seq: attempt.seq,
                };
                persist.push((id, call.clone(), attempt.control.clone()));
            }
        }
        let tracked: Vec<(i64, Option<Arc<MemoryItem>>, Arc<AttemptControl>)> = self
            .attempts
            .iter()
            .map(|(key, attempt)| (*key, attempt.memory.clone(), attempt.control.clone()))
            .collect();
        self.syncing = true;
        let shared = self.shared.clone();
        let sync = async move {
            persist_calls(&shared, &persist).await;
            // The running work items, with their attempts' controls.
            let running: Vec<(i64, Arc<AttemptControl>)> = tracked
                .into_iter()
                .filter_map(|(key, memory, control)| {
                    let item_id = match memory {
                        Some(call) => call.item_id()?,
                        None => key,
                    };
                    Some((item_id, control))
                })
                .collect();
            let heartbeats: Vec<ActivityHeartbeat> = running
                .iter()
                .filter_map(|(item_id, control)| {
                    control.take_unsaved().map(|details| ActivityHeartbeat {
                        item_id: *item_id,
                        details,
                    })
                })
                .collect();
            if running.is_empty() {
                return (Ok(Vec::new()), heartbeats, running);
            }
            let ids: Vec<i64> = running.iter().map(|(id, _)| *id).collect();
            let result = shared
                .store
                .sync_activities(&shared.owner, &heartbeats, &ids, shared.now())
                .await;
            (result, heartbeats, running)
        };
        ctx.spawn(sync.into_actor(self).map(|(result, heartbeats, running), act, _| {
            act.syncing = false;
            let control_of = |id: i64| running.iter().find(|(item_id, _)| *item_id == id);
            match result {
                Ok(gone) => {
                    act.shared
                        .metrics
                        .activity_heartbeats
                        .fetch_add(heartbeats.len() as u64, Ordering::Relaxed);
                    for id in gone {
                        if let Some((_, control)) = control_of(id) {
                            tracing::debug!(item_id = id, "the work item of a running activity is gone: telling it to stop");
                            control.cancel(CancelReason::Cancelled);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "storing activity heartbeats failed; will retry");
                    for beat in &heartbeats {
                        if let Some((_, control)) = control_of(beat.item_id) {
                            control.unsaved_again(&beat.details);
                        }
                    }
                }
            }
        }));
    }

    /// Turns the calls kept in memory of instances whose lease lapsed (their worker died)
    /// into work items, which this worker or another claims.
    fn recover_calls(&mut self, ctx: &mut Context<Self>) {
        if self.shared.activities_draining() {
            return;
        }
        let shared = self.shared.clone();
        let recover = async move { shared.store.recover_calls().await };
        ctx.spawn(recover.into_actor(self).map(|result, act, ctx| match result {
            Ok(0) => {}
            Ok(recovered) => {
                tracing::info!(recovered, "calls kept in memory by a lost worker are work items again");
                act.claim(ctx);
            }
            Err(error) => tracing::warn!(%error, "recovering calls of lost workers failed; will retry"),
        }));
    }

    /// The fallback poll: claims and arms the next poll.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if !self.claiming {
            self.claim(ctx);
            self.poller.claim_started(self.claiming);
        }
        self.poller.arm(ctx, Self::poll);
    }

    /// Claims work items nobody holds (after a crash, or whose lease lapsed).
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let limit = self.shared.options.activity_concurrency;
        let busy = self.running + self.queue.len();
        if self.shared.activities_draining() {
            return;
        }
        if self.claiming || busy >= limit {
            self.claim_pending = true;
            return;
        }
        self.claim_pending = false;
        self.claiming = true;
        self.shared
            .metrics
            .activity_claims
            .fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let want = u32::try_from(limit - busy).unwrap_or(u32::MAX);
        let claim = async move {
            let lease_until = shared.lease_until();
            shared
                .store
                .claim_activities(
                    &shared.owner,
                    &shared.activity_names,
                    &shared.flow_rules,
                    want,
                    lease_until,
                )
                .await
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(claimed) => {
                    act.flow_waiting = claimed.held_back;
                    if act.poller.claim_finished(!claimed.items.is_empty()) {
                        act.poller.arm(ctx, Self::poll);
                    }
                    act.queue.extend(
                        claimed
                            .items
                            .into_iter()
                            .map(|item| (item, Origin::Claimed)),
                    );
                    act.pump(ctx);
                }
                Err(error) => {
                    // Whether limited work waits is not known: look again soon.
                    act.flow_waiting = !act.shared.flow_rules.is_empty();
                    act.poller.claim_finished(false);
                    tracing::warn!(%error, "claiming activity work failed");
                }
            }
            if act.claim_pending {
                act.claim(ctx);
            }
            act.recheck_flow(ctx);
        }));
    }

    /// While flow-controlled work waits, claims again within [`FLOW_RECHECK`]: limits free
    /// up as attempts end anywhere and as rate windows pass, and no one announces either.
    /// Nothing is due while none waits: new limited work is claimed when this worker's
    /// turns queue it ([`RunActivities::claim`]) and otherwise at the poll. A recheck that
    /// finds every slot busy claims when one frees ([`Self::claim_pending`]).
    fn recheck_flow(&mut self, ctx: &mut Context<Self>) {
        if self.shared.activities_draining() || self.flow_recheck || !self.flow_waiting {
            return;
        }
        self.flow_recheck = true;
        ctx.run_later(FLOW_RECHECK, |act, ctx| {
            act.flow_recheck = false;
            act.claim(ctx);
        });
    }
}

/// Gives calls kept in memory work items leased to this worker (see
/// [`ActivityWorker::sync`]): each call's lock is held until its answer is in, so its result
/// waits for it; a call whose record is gone is told to stop; after a failure they are tried
/// again at the next sync.
async fn persist_calls(
    shared: &Shared,
    calls: &[(MemoryCall, Arc<MemoryItem>, Arc<AttemptControl>)],
) {
    if calls.is_empty() {
        return;
    }
    let mut locks = Vec::with_capacity(calls.len());
    for (_, item, _) in calls {
        locks.push(item.item_id.lock().await);
    }
    let ids: Vec<MemoryCall> = calls.iter().map(|(call, _, _)| call.clone()).collect();
    let lease_until = shared.lease_until();
    match shared
        .store
        .persist_calls(&shared.owner, &ids, lease_until)
        .await
    {
        Ok(persisted) => {
            for ((lock, id), (call, _, control)) in locks.iter_mut().zip(persisted).zip(calls) {
                **lock = id;
                if id.is_none() {
                    tracing::debug!(instance_id = %call.instance_id, seq = call.seq, "the record of a call kept in memory is gone: telling it to stop");
                    control.cancel(CancelReason::Cancelled);
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "giving long-running calls work items failed; will retry");
            for (_, item, _) in calls {
                item.persisting.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Where an attempt runs, which decides what its first poll says about its activity
/// ([`QuickActivities`](super::quick::QuickActivities)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thread {
    /// The activity worker's.
    Worker,
    /// The runtime's, where the instance that called a quick activity runs ([`start_here`]).
    Runtime,
}

/// Starts an attempt of a call of a quick activity on this thread, the runtime's, where
/// the instance that scheduled it runs: its first poll runs now, and usually finishes it,
/// its result routed to the instance like the worker's. An attempt that is not done after
/// that poll goes on on this thread, with its timeouts and cancellation as on the worker,
/// which the worker is told of ([`Adopt`]) so that it counts, renews and syncs it with its
/// own until it ends ([`AttemptEnded`]).
pub(super) fn start_here(
    shared: &Arc<Shared>,
    mut item: ActivityWorkItem,
    route: Recipient<Route>,
    worker: &ToWorker,
) {
    shared
        .metrics
        .activities_quick
        .fetch_add(1, Ordering::Relaxed);
    let origin = Origin::of_local(shared, &mut item);
    let control = new_control(shared, &item);
    let adopt = Adopt {
        key: item.id,
        attempt: Attempt::new(&item, origin.memory(), control.clone()),
    };
    let mut attempt = OnWorkerRuntime {
        runtime: shared.worker_runtime.get().cloned(),
        attempt: Box::pin(run(
            shared.clone(),
            item,
            origin,
            control,
            route,
            Thread::Runtime,
        )),
    };
    // Polled with a waker that does nothing: an attempt not done is polled again at once by
    // the task that takes it over, which registers that task's waker. Outside the instance
    // task's cooperative budget, which when spent would make it a needless `Pending`.
    let first = Pin::new(&mut tokio::task::unconstrained(&mut attempt))
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    if first.is_ready() {
        return;
    }
    let ends = EndsAttempt {
        key: adopt.key,
        ended: worker.ended.clone(),
    };
    worker.adopt.do_send(adopt);
    actix::spawn(async move {
        let _ends = ends;
        attempt.await;
    });
}

/// Tells the worker that an adopted attempt ended when dropped: after it finished, and also
/// if it was dropped unfinished (the runtime stopping) or unwound, so that the worker's books
/// never keep it.
struct EndsAttempt {
    key: i64,
    ended: Recipient<AttemptEnded>,
}

impl Drop for EndsAttempt {
    fn drop(&mut self) {
        self.ended.do_send(AttemptEnded { key: self.key });
    }
}

/// An attempt started on the runtime's thread, polled with the activity worker's tokio
/// runtime entered: what it spawns (`tokio::spawn`) runs on the worker's thread, and the
/// timers and sockets it makes are that runtime's, as for an attempt the worker runs.
struct OnWorkerRuntime<F> {
    runtime: Option<tokio::runtime::Handle>,
    attempt: Pin<Box<F>>,
}

impl<F: Future> Future for OnWorkerRuntime<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.runtime.as_ref().map(tokio::runtime::Handle::enter);
        this.attempt.as_mut().poll(cx)
    }
}

/// Runs one attempt and delivers its result to the instance: in memory for local work,
/// otherwise committed first (and routed when the message was claimed for this worker). An
/// attempt that times out has its failure delivered at once and is then given the cancel
/// grace to wind down; one whose call was cancelled delivers nothing.
async fn run(
    shared: Arc<Shared>,
    item: ActivityWorkItem,
    origin: Origin,
    control: Arc<AttemptControl>,
    route: Recipient<Route>,
    thread: Thread,
) {
    let span = tracing::info_span!("activity", instance_id = %item.instance_id, name = %item.name, seq = item.seq, attempt = item.attempt);
    let started = Instant::now();
    let started_at = shared.now();
    tracing::debug!(instance_id = %item.instance_id, activity = %item.name, seq = item.seq, attempt = item.attempt, "activity attempt starts");
    if let Some(deadline) = item.deadline
        && started_at >= deadline
    {
        // Its schedule-to-close timeout ended the call before any worker started it.
        control.cancel(CancelReason::ScheduleToCloseTimeout);
        shared
            .metrics
            .activities_timed_out
            .fetch_add(1, Ordering::Relaxed);
        let event = stopped(&item, CancelReason::ScheduleToCloseTimeout, &control);
        deliver(&shared, &item, &origin, event, &route).await;
        return;
    }
    let mut attempt =
        std::pin::pin!(execute(&shared, &item, control.clone(), thread).instrument(span));
    let finished = loop {
        let wake = next_deadline(&item, &control, started_at);
        let timeout = async {
            match wake {
                Some(at) => shared.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = &mut attempt => break Some(event),
            () = control.cancelled() => break None,
            () = timeout => {
                if let Some(reason) = expired(&item, &control, started_at, shared.now()) {
                    control.cancel(reason);
                }
            }
        }
    };
    shared.metrics.activity_latency.observe(started.elapsed());
    // An attempt told to stop is judged by why, whatever it did after: it may have noticed
    // and returned in the same instant.
    let Some(reason) = control.reason() else {
        if let Some(event) = finished {
            let outcome = match event {
                Event::TaskCompleted { .. } => &shared.metrics.activities_completed,
                _ => &shared.metrics.activities_failed,
            };
            outcome.fetch_add(1, Ordering::Relaxed);
            deliver(&shared, &item, &origin, event, &route).await;
        }
        return;
    };
    if reason == CancelReason::Cancelled {
        shared
            .metrics
            .activities_cancelled
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(instance_id = %item.instance_id, activity = %item.name, seq = item.seq, "activity cancelled");
    } else {
        shared
            .metrics
            .activities_timed_out
            .fetch_add(1, Ordering::Relaxed);
        shared
            .metrics
            .activities_failed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(instance_id = %item.instance_id, activity = %item.name, seq = item.seq, "activity attempt timed out: {reason}");
        let event = stopped(&item, reason, &control);
        deliver(&shared, &item, &origin, event, &route).await;
    }
    if finished.is_some() {
        return;
    }
    // The attempt was told to stop: it may wind down within the grace; whatever it returns
    // is ignored.
    let grace = shared.options.activity_cancel_grace;
    if tokio::time::timeout(grace, attempt).await.is_err() {
        tracing::warn!(instance_id = %item.instance_id, activity = %item.name, seq = item.seq, "activity did not stop within {grace:?} of being told to; dropped it");
    }
}

/// The earliest time one of the attempt's timeouts can expire, if it has any.
fn next_deadline(
    item: &ActivityWorkItem,
    control: &AttemptControl,
    started_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let start_to_close = item
        .timeouts
        .start_to_close
        .and_then(|timeout| checked_after(started_at, timeout));
    let heartbeat = item
        .timeouts
        .heartbeat_timeout
        .and_then(|timeout| checked_after(control.last_beat(), timeout));
    [start_to_close, heartbeat, item.deadline]
        .into_iter()
        .flatten()
        .min()
}

/// Which of the attempt's timeouts has expired at `now`, if one has.
fn expired(
    item: &ActivityWorkItem,
    control: &AttemptControl,
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<CancelReason> {
    let after = |from: DateTime<Utc>, timeout: Option<std::time::Duration>| {
        timeout
            .and_then(|timeout| checked_after(from, timeout))
            .is_some_and(|at| now >= at)
    };
    if item.deadline.is_some_and(|deadline| now >= deadline) {
        Some(CancelReason::ScheduleToCloseTimeout)
    } else if after(started_at, item.timeouts.start_to_close) {
        Some(CancelReason::StartToCloseTimeout)
    } else if after(control.last_beat(), item.timeouts.heartbeat_timeout) {
        Some(CancelReason::HeartbeatTimeout)
    } else {
        None
    }
}

/// The failure of an attempt a timeout stopped, with its last heartbeat details (a retry
/// resumes from them). Only the schedule-to-close timeout is final.
fn stopped(item: &ActivityWorkItem, reason: CancelReason, control: &AttemptControl) -> Event {
    let bound = match reason {
        CancelReason::StartToCloseTimeout => item
            .timeouts
            .start_to_close
            .map(|t| format!("its start-to-close timeout of {t:?}")),
        CancelReason::HeartbeatTimeout => item
            .timeouts
            .heartbeat_timeout
            .map(|t| format!("its heartbeat timeout of {t:?} without a heartbeat")),
        CancelReason::ScheduleToCloseTimeout => item
            .deadline
            .map(|at| format!("the schedule-to-close deadline of its call ({at})")),
        CancelReason::Cancelled => None,
    }
    .unwrap_or_else(|| reason.to_string());
    let mut failure = Failure::new(
        reason.failure_kind(),
        format!(
            "activity `{}` timed out: attempt {} ran past {bound}",
            item.name, item.attempt
        ),
    );
    failure.non_retriable = reason == CancelReason::ScheduleToCloseTimeout;
    Event::TaskFailed {
        seq: item.seq,
        failure,
        heartbeat: control.last_details(),
    }
}

/// Delivers an attempt's result: in memory for local work, otherwise committed first (and
/// routed when the message was claimed for this worker).
async fn deliver(
    shared: &Shared,
    item: &ActivityWorkItem,
    origin: &Origin,
    event: Event,
    route: &Recipient<Route>,
) {
    let local = match origin {
        Origin::Local => Some(Some(item.id)),
        // Waits while its work item is being made: the turn must delete that item.
        Origin::Memory(call) => Some(*call.item_id.lock().await),
        Origin::Claimed => None,
    };
    if let Some(item_id) = local {
        tracing::trace!(instance_id = %item.instance_id, seq = item.seq, "activity result sent");
        route.do_send(Route(vec![Inbound::Local {
            item_id,
            instance_id: item.instance_id.clone(),
            execution: item.execution,
            event,
        }]));
        return;
    }
    let mut completion = ActivityCompletion {
        item_id: item.id,
        instance_id: item.instance_id.clone(),
        execution: item.execution,
        event,
        owner: shared.owner.clone(),
        lease_until: shared.lease_until(),
    };
    let mut failures = 0;
    loop {
        match shared.store.complete_activity(completion.clone()).await {
            Ok(Some(delivered)) => {
                route.do_send(Route(vec![Inbound::Queued(delivered)]));
                return;
            }
            Ok(None) => return,
            Err(error) if failures < 8 => {
                failures += 1;
                tracing::warn!(%error, "committing an activity result failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                completion.lease_until = shared.lease_until();
            }
            Err(error) => {
                tracing::error!(%error, "committing an activity result failed; the activity will run again when its lease lapses");
                return;
            }
        }
    }
}

/// Runs the activity function, turning errors and panics into `TaskFailed`; tells
/// [`QuickActivities`](super::quick::QuickActivities) how its first poll went.
async fn execute(
    shared: &Shared,
    item: &ActivityWorkItem,
    control: Arc<AttemptControl>,
    thread: Thread,
) -> Event {
    let entry = match shared.registry.get_activity(&item.name) {
        Ok(entry) => *entry,
        Err(error) => {
            let mut failure = error.to_failure();
            failure.non_retriable = true;
            return Event::TaskFailed {
                seq: item.seq,
                failure,
                heartbeat: None,
            };
        }
    };
    let ctx = ActivityContext::new(
        item.instance_id.clone(),
        item.name.clone(),
        item.seq,
        item.attempt,
        shared.shared_state.clone(),
        control.clone(),
    );
    // Called in the first poll, so that what the function does before its first `.await`
    // is timed and a panic there is caught like any other.
    let input = item.input.clone();
    let future = futures_util::future::lazy(move |_| (entry.invoke)(ctx, input)).flatten();
    let mut caught = std::pin::pin!(AssertUnwindSafe(Caught(future)).catch_unwind());
    let polled_at = Instant::now();
    let first = std::future::poll_fn(|cx| Poll::Ready(caught.as_mut().poll(cx))).await;
    let poll = FirstPoll {
        done: first.is_ready(),
        took: polled_at.elapsed(),
    };
    match thread {
        Thread::Worker => shared.quick.on_worker(&item.name, poll),
        Thread::Runtime => {
            if shared.quick.on_runtime_thread(&item.name, poll) {
                tracing::debug!(activity = %item.name, done = poll.done, took_us = poll.took.as_micros() as u64, "a quick activity's attempt was not quick: it runs on the activity worker again");
            }
        }
    }
    let outcome = match first {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => caught.await,
    };
    match outcome {
        Ok(Ok(output)) => {
            let what = format!("the output of activity `{}`", item.name);
            match shared.options.limits.check_payload(&what, &output) {
                Ok(()) => Event::TaskCompleted {
                    seq: item.seq,
                    output,
                },
                Err(error) => {
                    let mut failure = error.to_failure();
                    failure.non_retriable = true;
                    Event::TaskFailed {
                        seq: item.seq,
                        failure,
                        heartbeat: control.last_details(),
                    }
                }
            }
        }
        Ok(Err(failure)) => Event::TaskFailed {
            seq: item.seq,
            failure,
            heartbeat: control.last_details(),
        },
        Err(panic) => {
            let message = panic_message(&*panic);
            tracing::error!(
                activity = %item.name,
                instance_id = %item.instance_id,
                attempt = item.attempt,
                at = take_location().as_deref().unwrap_or("?"),
                "activity panicked: {message}"
            );
            Event::TaskFailed {
                seq: item.seq,
                failure: Failure::panic(format!("activity `{}` panicked: {message}", item.name)),
                heartbeat: control.last_details(),
            }
        }
    }
}

impl Actor for ActivityWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _ = self
            .shared
            .worker_runtime
            .set(tokio::runtime::Handle::current());
        ctx.run_interval(self.shared.options.lease / 3, |act, ctx| {
            act.renew_leases(ctx);
            act.recover_calls(ctx);
        });
        ctx.run_interval(self.shared.options.activity_sync_interval, |act, ctx| {
            act.sync(ctx)
        });
        self.poll(ctx);
    }
}

impl Handler<RunActivities> for ActivityWorker {
    type Result = ();

    fn handle(&mut self, msg: RunActivities, ctx: &mut Context<Self>) {
        for mut item in msg.items {
            let origin = Origin::of_local(&self.shared, &mut item);
            self.queue.push_back((item, origin));
        }
        self.pump(ctx);
        if msg.claim {
            self.claim(ctx);
        }
    }
}

impl Handler<Adopt> for ActivityWorker {
    type Result = ();

    fn handle(&mut self, Adopt { key, attempt }: Adopt, _: &mut Context<Self>) {
        self.running += 1;
        self.attempts.insert(key, attempt);
    }
}

impl Handler<AttemptEnded> for ActivityWorker {
    type Result = ();

    fn handle(&mut self, AttemptEnded { key }: AttemptEnded, ctx: &mut Context<Self>) {
        if self.attempts.remove(&key).is_some() {
            self.running -= 1;
        }
        self.pump(ctx);
        if self.claim_pending {
            self.claim(ctx);
        }
    }
}

impl Handler<CancelActivities> for ActivityWorker {
    type Result = ();

    /// Calls an instance of this worker cancelled (their work items are already deleted):
    /// queued ones are dropped, running ones told to stop.
    fn handle(&mut self, msg: CancelActivities, ctx: &mut Context<Self>) {
        let cancelled = |instance_id: &str, seq: u64| {
            instance_id == msg.instance_id && msg.seqs.as_ref().is_none_or(|s| s.contains(&seq))
        };
        self.queue
            .retain(|(item, _)| !cancelled(&item.instance_id, item.seq));
        for attempt in self.attempts.values() {
            if cancelled(&attempt.instance_id, attempt.seq) {
                attempt.control.cancel(CancelReason::Cancelled);
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Drain> for ActivityWorker {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.shared
            .activities_draining
            .store(true, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.running == 0 {
            let _ = tx.send(());
        } else {
            self.drain_waiters.push(tx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
