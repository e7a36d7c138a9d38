//! The activity worker actor: runs activities with a concurrency limit and commits results.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::Shared;
use super::messages::{Drain, Inbound, Route, RunActivities, ToDispatcher};
use super::poll::Poller;
use super::residency::backoff;
use crate::activity::ActivityContext;
use crate::error::Failure;
use crate::history::Event;
use crate::panics::panic_message;
use crate::panics::{Caught, take_location};
use crate::store::{ActivityCompletion, ActivityWorkItem, HeldWork};

/// Where a work item came from, which decides how its result travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Scheduled by a turn in this worker: the result goes to the instance in memory and is
    /// committed with the turn that consumes it.
    Local,
    /// Claimed from the store (after a crash, or from another worker): the result is
    /// committed as a queue message.
    Claimed,
}

pub(super) struct ActivityWorker {
    shared: Arc<Shared>,
    dispatcher: ToDispatcher,
    queue: VecDeque<(ActivityWorkItem, Origin)>,
    running: usize,
    /// The work items running now (their leases are renewed with the queued ones).
    running_ids: HashSet<i64>,
    claiming: bool,
    poller: Poller,
    stopping: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl ActivityWorker {
    pub(super) fn new(shared: Arc<Shared>, dispatcher: ToDispatcher) -> Self {
        ActivityWorker {
            poller: Poller::new(shared.options.poll_interval),
            shared,
            dispatcher,
            queue: VecDeque::new(),
            running: 0,
            running_ids: HashSet::new(),
            claiming: false,
            stopping: false,
            drain_waiters: Vec::new(),
        }
    }

    /// Starts queued items while below the concurrency limit.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let limit = self.shared.options.activity_concurrency;
        while !self.stopping && self.running < limit {
            let Some((item, origin)) = self.queue.pop_front() else {
                break;
            };
            self.running += 1;
            self.running_ids.insert(item.id);
            let item_id = item.id;
            let shared = self.shared.clone();
            let run = run(shared, item, origin).into_actor(self);
            ctx.spawn(run.map(move |delivered, act, ctx| {
                act.running -= 1;
                act.running_ids.remove(&item_id);
                if let Some(inbound) = delivered {
                    act.dispatcher.route.do_send(Route(vec![inbound]));
                }
                act.pump(ctx);
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
                .running_ids
                .iter()
                .copied()
                .chain(self.queue.iter().map(|(item, _)| item.id))
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
        if self.stopping || self.claiming || busy >= limit {
            return;
        }
        self.claiming = true;
        let shared = self.shared.clone();
        let want = u32::try_from(limit - busy).unwrap_or(u32::MAX);
        let claim = async move {
            let lease_until = shared.lease_until();
            shared
                .store
                .claim_activities(&shared.owner, want, lease_until)
                .await
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(items) => {
                    if act.poller.claim_finished(!items.is_empty()) {
                        act.poller.arm(ctx, Self::poll);
                    }
                    act.queue
                        .extend(items.into_iter().map(|item| (item, Origin::Claimed)));
                    act.pump(ctx);
                }
                Err(error) => {
                    act.poller.claim_finished(false);
                    tracing::warn!(%error, "claiming activity work failed");
                }
            }
        }));
    }
}

/// Runs one activity and returns its result for the instance: in memory for local work,
/// otherwise committed first (and returned when the message was claimed for this worker).
async fn run(shared: Arc<Shared>, item: ActivityWorkItem, origin: Origin) -> Option<Inbound> {
    let span = tracing::info_span!("activity", instance_id = %item.instance_id, name = %item.name, seq = item.seq);
    let started = Instant::now();
    let event = execute(&shared, &item).instrument(span).await;
    shared.metrics.activity_latency.observe(started.elapsed());
    let outcome = match event {
        Event::TaskCompleted { .. } => &shared.metrics.activities_completed,
        _ => &shared.metrics.activities_failed,
    };
    outcome.fetch_add(1, Ordering::Relaxed);
    if origin == Origin::Local {
        return Some(Inbound::Local {
            item_id: item.id,
            instance_id: item.instance_id,
            execution: item.execution,
            event,
        });
    }
    let mut completion = ActivityCompletion {
        item_id: item.id,
        instance_id: item.instance_id,
        execution: item.execution,
        event,
        owner: shared.owner.clone(),
        lease_until: shared.lease_until(),
    };
    let mut failures = 0;
    loop {
        match shared.store.complete_activity(completion.clone()).await {
            Ok(delivered) => return delivered.map(Inbound::Queued),
            Err(error) if failures < 8 => {
                failures += 1;
                tracing::warn!(%error, "committing an activity result failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                completion.lease_until = shared.lease_until();
            }
            Err(error) => {
                tracing::error!(%error, "committing an activity result failed; the activity will run again when its lease lapses");
                return None;
            }
        }
    }
}

/// Runs the activity function, turning errors and panics into `TaskFailed`.
async fn execute(shared: &Shared, item: &ActivityWorkItem) -> Event {
    let entry = match shared.registry.get_activity(&item.name) {
        Ok(entry) => *entry,
        Err(error) => {
            let mut failure = error.to_failure();
            failure.non_retriable = true;
            return Event::TaskFailed {
                seq: item.seq,
                failure,
            };
        }
    };
    let ctx = ActivityContext::new(
        item.instance_id.clone(),
        item.name.clone(),
        item.seq,
        item.attempt,
        shared.shared_state.clone(),
    );
    let future = (entry.invoke)(ctx, item.input.clone());
    match AssertUnwindSafe(Caught(future)).catch_unwind().await {
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
                    }
                }
            }
        }
        Ok(Err(failure)) => Event::TaskFailed {
            seq: item.seq,
            failure,
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
            }
        }
    }
}

impl Actor for ActivityWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.shared.options.lease / 3, |act, ctx| {
            act.renew_leases(ctx)
        });
        self.poll(ctx);
    }
}

impl Handler<RunActivities> for ActivityWorker {
    type Result = ();

    fn handle(&mut self, msg: RunActivities, ctx: &mut Context<Self>) {
        self.queue
            .extend(msg.0.into_iter().map(|item| (item, Origin::Local)));
        self.pump(ctx);
    }
}

impl Handler<Drain> for ActivityWorker {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
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
