//! The lifecycle instance and entity actors share: **load** (from the store, retried with a
//! backoff) → **run** (turns or operation batches, each ending in one commit) → **idle** (no
//! messages: after `idle_unload_after` ask the dispatcher to unload) → **unload** (stop and
//! hand back what was not processed), or **give up** when another worker took the instance
//! over. [`Residency`] holds the state of that lifecycle; [`Resident`] is what an actor adds
//! (how it loads and runs, what it does when giving up); the free functions here are the
//! lifecycle's steps, which the actors' message handlers call. The decision of what to do
//! once ready ([`Residency::next`]) is pure and unit-tested.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::Shared;
use super::messages::{Inbound, RequestUnload, ToDispatcher, Unloaded, queued_ids};
use crate::error::Error;

/// Where a resident actor is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Loading from the store (and, for an instance, replaying its history).
    Loading,
    /// Waiting for messages.
    Ready,
    /// A commit is in flight.
    Committing,
}

/// What a ready actor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Run a turn (or a batch of operations).
    Work,
    /// Stop: unloading, and finished or with nothing held.
    Stop,
    /// Stay loaded without a timer: messages are held (suspended, or locked by a critical
    /// section) until something releases them.
    Stay,
    /// Ask the dispatcher to unload it now (finished, or `idle_unload_after` is zero).
    AskToUnload,
    /// Ask the dispatcher to unload it after `idle_unload_after` without messages.
    WaitIdle,
}

/// What [`Next`] depends on.
#[derive(Debug, Clone, Copy, Default)]
struct Situation {
    /// Messages to run, or an outcome to record.
    work: bool,
    /// The instance has ended.
    finished: bool,
    /// The dispatcher asked it to unload.
    unload_requested: bool,
    /// Messages are held back (suspended, locked).
    held: bool,
    /// Calls this worker keeps in memory for it are running: it stays loaded for their
    /// results (unless an unload was requested: see [`Residency::memory_calls`]).
    calls: bool,
    /// `idle_unload_after` is zero.
    unload_at_once: bool,
}

impl Situation {
    fn next(self) -> Next {
        if self.work {
            Next::Work
        } else if self.unload_requested && (self.finished || !self.held) {
            Next::Stop
        } else if self.finished {
            // Not `Stop` on its own: the dispatcher must know it is going before it goes, or
            // a message it routes meanwhile (a start that replaces the ended instance) is
            // sent to a stopped actor and lost. Unloading, it queues them for a new one.
            Next::AskToUnload
        } else if self.held || self.calls {
            Next::Stay
        } else if self.unload_at_once {
            Next::AskToUnload
        } else {
            Next::WaitIdle
        }
    }
}

/// The lifecycle state of one loaded instance or entity.
pub(super) struct Residency {
    pub(super) shared: Arc<Shared>,
    pub(super) instance_id: Arc<str>,
    pub(super) dispatcher: ToDispatcher,
    pub(super) phase: Phase,
    /// Messages to run.
    pub(super) pending: Vec<Inbound>,
    /// Messages held back (suspended instance, entity locked by someone else).
    pub(super) deferred: Vec<Inbound>,
    idle: Option<SpawnHandle>,
    unload_requested: bool,
    failures: u32,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// The queue messages held or recently consumed: none is taken twice.
    message_ids: MessageIds,
    /// Give up once the commit in flight returns.
    give_up_requested: bool,
    /// Gave the instance up to another worker (told to the dispatcher when it stops).
    gave_up: bool,
    /// Calls this worker runs for the instance without a work item
    /// ([`NewActivity::in_memory`](crate::store::NewActivity::in_memory)), by `seq`: while
    /// there are some, the instance stays loaded instead of waiting to be unloaded when idle.
    /// An unload already requested (the idle timer fired as a turn that keeps a call began)
    /// still stops it: releasing the instance turns the calls into work items, which may run
    /// a second time beside the attempts still running here (at least once; the first result
    /// committed wins).
    pub(super) memory_calls: HashSet<u64>,
}

impl Residency {
    /// A residency starting to load, with the messages that made the dispatcher load it.
    pub(super) fn new(
        shared: Arc<Shared>,
        instance_id: Arc<str>,
        dispatcher: ToDispatcher,
        pending: Vec<Inbound>,
    ) -> Self {
        let mut message_ids = MessageIds::default();
        let pending = message_ids.admit(pending);
        Residency {
            shared,
            instance_id,
            dispatcher,
            phase: Phase::Loading,
            pending,
            deferred: Vec::new(),
            idle: None,
            unload_requested: false,
            failures: 0,
            drain_waiters: Vec::new(),
            message_ids,
            give_up_requested: false,
            gave_up: false,
            memory_calls: HashSet::new(),
        }
    }

    /// What to do once ready: `more_work` is work beyond the pending messages (an outcome
    /// no turn recorded yet), `finished` whether the instance has ended.
    pub(super) fn next(&self, more_work: bool, finished: bool) -> Next {
        Situation {
            work: !self.pending.is_empty() || more_work,
            finished,
            unload_requested: self.unload_requested,
            held: !self.deferred.is_empty(),
            calls: !self.memory_calls.is_empty(),
            unload_at_once: self.shared.options.idle_unload_after.is_zero(),
        }
        .next()
    }

    /// Everything held, deferred (older) first; leaves both lists empty.
    pub(super) fn take_held(&mut self) -> Vec<Inbound> {
        let mut held = std::mem::take(&mut self.deferred);
        held.append(&mut self.pending);
        held
    }

    /// Work is starting: the idle timer no longer applies.
    pub(super) fn cancel_idle<A: Actor<Context = Context<A>>>(&mut self, ctx: &mut Context<A>) {
        if let Some(handle) = self.idle.take() {
            ctx.cancel_future(handle);
        }
    }

    /// A commit is starting.
    pub(super) fn begin_commit<A: Actor<Context = Context<A>>>(&mut self, ctx: &mut Context<A>) {
        self.cancel_idle(ctx);
        self.phase = Phase::Committing;
    }

    /// The commit of `consumed` is stored.
    pub(super) fn committed(&mut self, consumed: &[Inbound]) {
        self.phase = Phase::Ready;
        self.message_ids.consumed(consumed);
        self.failures = 0;
    }

    /// The commit failed: nothing of it is stored, so `messages` run again, first.
    pub(super) fn commit_failed(&mut self, mut messages: Vec<Inbound>) {
        self.phase = Phase::Ready;
        messages.append(&mut self.pending);
        self.pending = messages;
    }

    /// Whether the actor should give up instead of retrying after `error`.
    pub(super) fn gives_up_after(&self, error: &Error) -> bool {
        self.give_up_requested || matches!(error, Error::Conflict { .. })
    }

    /// Whether the last load or commit failed (it is being retried).
    pub(super) fn has_failed(&self) -> bool {
        self.failures > 0
    }

    /// Whether a give-up arrived while the last commit was in flight.
    pub(super) fn give_up_requested(&self) -> bool {
        self.give_up_requested
    }
}

/// An actor with a [`Residency`]: a loaded instance or entity.
pub(super) trait Resident: Actor<Context = Context<Self>> {
    /// What it is, for logs: "instance" or "entity".
    const KIND: &'static str;

    /// Its lifecycle state.
    fn residency(&mut self) -> &mut Residency;

    /// Loads (or reloads) from the store; ends in [`settle`] or [`retry_later`].
    fn load(&mut self, ctx: &mut Context<Self>);

    /// Runs the pending messages; ends in a commit.
    fn work(&mut self, ctx: &mut Context<Self>);

    /// Called when ready, before deciding what is next: returns whether there is work
    /// beyond the pending messages.
    fn prepare_next(&mut self) -> bool {
        false
    }

    /// Whether the instance has ended (an entity never does).
    fn finished(&self) -> bool {
        false
    }

    /// Giving up: hands over what this worker holds only in memory (`held` are all the
    /// messages it held; their queue messages go back to the store after this).
    fn hand_over(&mut self, held: &[Inbound], ctx: &mut Context<Self>) {
        let _ = (held, ctx);
    }
}

/// Decides and does what is next once the actor is ready (see [`Residency::next`]).
pub(super) fn settle<A: Resident>(act: &mut A, ctx: &mut Context<A>) {
    if act.residency().phase != Phase::Ready {
        return;
    }
    for waiter in act.residency().drain_waiters.drain(..) {
        let _ = waiter.send(());
    }
    let more_work = act.prepare_next();
    let finished = act.finished();
    let res = act.residency();
    match res.next(more_work, finished) {
        Next::Work => act.work(ctx),
        Next::Stop => stop(act, ctx),
        Next::Stay => {}
        Next::AskToUnload => {
            res.dispatcher
                .request_unload
                .do_send(RequestUnload(res.instance_id.clone()));
        }
        Next::WaitIdle => {
            res.cancel_idle(ctx);
            let after = res.shared.options.idle_unload_after;
            let handle = ctx.run_later(after, |act, _| {
                let res = act.residency();
                res.idle = None;
                res.dispatcher
                    .request_unload
                    .do_send(RequestUnload(res.instance_id.clone()));
            });
            act.residency().idle = Some(handle);
        }
    }
}

/// Loading or committing failed with `error`: load again after a backoff.
pub(super) fn retry_later<A: Resident>(act: &mut A, error: Error, ctx: &mut Context<A>) {
    let res = act.residency();
    res.failures += 1;
    let delay = backoff(res.failures);
    tracing::warn!(kind = A::KIND, instance_id = %res.instance_id, %error, retry_in_ms = delay.as_millis() as u64, "will be reloaded");
    res.phase = Phase::Loading;
    ctx.run_later(delay, |act, ctx| act.load(ctx));
}

/// Stops the actor, handing what it did not process back to the dispatcher.
pub(super) fn stop<A: Resident>(act: &mut A, ctx: &mut Context<A>) {
    let finished = act.finished();
    let res = act.residency();
    let leftover = res.take_held();
    res.dispatcher.unloaded.do_send(Unloaded {
        instance_id: res.instance_id.clone(),
        leftover,
        finished,
        gave_up: res.gave_up,
    });
    ctx.stop();
}

/// Gives the instance or entity up to the worker that holds it now: what this worker holds
/// only in memory is handed over, the messages claimed here go back to the store (visible at
/// once: they are the other worker's to claim), and the actor stops without handing
/// anything back to the dispatcher.
pub(super) fn give_up<A: Resident>(act: &mut A, ctx: &mut Context<A>) {
    let held = {
        let res = act.residency();
        res.give_up_requested = false;
        res.gave_up = true;
        res.take_held()
    };
    act.hand_over(&held, ctx);
    let ids = queued_ids(&held);
    if !ids.is_empty() {
        let shared = act.residency().shared.clone();
        ctx.spawn(give_back(shared, ids).into_actor(act));
    }
    stop(act, ctx);
}

/// Gives queue messages this worker holds back to the store, visible at once (another
/// worker holds their instance now); a failure leaves them to return when their lease lapses.
pub(super) async fn give_back(shared: Arc<Shared>, ids: Vec<i64>) {
    if let Err(error) = shared
        .store
        .abandon_messages(&shared.owner, &ids, shared.now())
        .await
    {
        tracing::warn!(%error, "giving messages back failed; they return when their lease lapses");
    }
}

/// Handles [`Deliver`](super::messages::Deliver): messages not seen before are run (now if
/// ready, else after what is in flight).
pub(super) fn deliver<A: Resident>(act: &mut A, messages: Vec<Inbound>, ctx: &mut Context<A>) {
    let res = act.residency();
    res.cancel_idle(ctx);
    let fresh = res.message_ids.admit(messages);
    if fresh.is_empty() {
        return settle(act, ctx);
    }
    res.pending.extend(fresh);
    if res.phase == Phase::Ready {
        act.work(ctx);
    }
}

/// Handles [`GiveUp`](super::messages::GiveUp): at once, or when the commit in flight
/// returns.
pub(super) fn on_give_up<A: Resident>(act: &mut A, ctx: &mut Context<A>) {
    let res = act.residency();
    if res.phase == Phase::Committing {
        res.give_up_requested = true;
    } else {
        give_up(act, ctx);
    }
}

/// Handles [`Unload`](super::messages::Unload): stops now if nothing is running or held,
/// otherwise once that is done.
pub(super) fn on_unload<A: Resident>(act: &mut A, ctx: &mut Context<A>) {
    let res = act.residency();
    res.unload_requested = true;
    if res.phase == Phase::Ready && res.pending.is_empty() && res.deferred.is_empty() {
        stop(act, ctx);
    }
}

/// Handles [`Drain`](super::messages::Drain): resolves at once when the actor is between
/// turns, otherwise when it next is.
pub(super) fn on_drain<A: Resident>(act: &mut A) -> ResponseFuture<()> {
    let res = act.residency();
    let (tx, rx) = oneshot::channel();
    if res.phase == Phase::Ready {
        let _ = tx.send(());
    } else {
        res.drain_waiters.push(tx);
    }
    Box::pin(async move {
        let _ = rx.await;
    })
}

/// Exponential backoff from 10 ms to 5 s.
pub(super) fn backoff(failures: u32) -> Duration {
    let ms = 10u64.saturating_mul(1u64 << failures.min(9));
    Duration::from_millis(ms.min(5_000))
}

/// The queue messages an actor holds or has recently consumed, by id, so that it never takes
/// one twice: a message whose lease lapsed while its turn was slow can be claimed again by
/// this same worker and delivered a second time.
#[derive(Debug, Default)]
pub(crate) struct MessageIds {
    held: HashSet<i64>,
    consumed: VecDeque<i64>,
    consumed_set: HashSet<i64>,
}

impl MessageIds {
    /// How many consumed ids are remembered.
    const REMEMBERED: usize = 4096;

    /// `messages` without those already held or consumed; the rest are held from now on.
    pub(crate) fn admit(&mut self, messages: Vec<Inbound>) -> Vec<Inbound> {
        messages
            .into_iter()
            .filter(|message| match message {
                Inbound::Queued(queued) => {
                    let fresh = !self.consumed_set.contains(&queued.id)
                        && self.held.insert(queued.id);
                    if !fresh {
                        tracing::debug!(instance_id = %queued.instance_id, id = queued.id, "dropping a message delivered twice");
                    }
                    fresh
                }
                Inbound::Local { .. } => true,
            })
            .collect()
    }

    /// Records the queue messages of a committed turn as consumed.
    pub(crate) fn consumed(&mut self, messages: &[Inbound]) {
        for message in messages {
            if let Inbound::Queued(queued) = message {
                self.held.remove(&queued.id);
                if self.consumed_set.insert(queued.id) {
                    self.consumed.push_back(queued.id);
                }
            }
        }
        while self.consumed.len() > Self::REMEMBERED {
            if let Some(old) = self.consumed.pop_front() {
                self.consumed_set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OrchestrationMessage;

    #[test]
    fn work_comes_first_then_stopping_then_holding_then_idling() {
        let idle = Situation::default();
        assert_eq!(idle.next(), Next::WaitIdle);
        let at_once = Situation {
            unload_at_once: true,
            ..idle
        };
        assert_eq!(at_once.next(), Next::AskToUnload);
        let work = Situation {
            work: true,
            finished: true,
            unload_requested: true,
            held: true,
            calls: true,
            unload_at_once: true,
        };
        assert_eq!(
            work.next(),
            Next::Work,
            "pending work runs even when unloading"
        );
        let finished = Situation {
            finished: true,
            held: true,
            ..idle
        };
        assert_eq!(
            finished.next(),
            Next::AskToUnload,
            "an ended instance asks to be unloaded (it does not stop behind the dispatcher's back)"
        );
        let finished_unloading = Situation {
            finished: true,
            unload_requested: true,
            held: true,
            ..idle
        };
        assert_eq!(finished_unloading.next(), Next::Stop, "and then stops");
        let unloading = Situation {
            unload_requested: true,
            ..idle
        };
        assert_eq!(unloading.next(), Next::Stop);
        let unloading_held = Situation {
            unload_requested: true,
            held: true,
            ..idle
        };
        assert_eq!(
            unloading_held.next(),
            Next::Stay,
            "held messages keep a suspended or locked actor loaded"
        );
        let held = Situation {
            held: true,
            unload_at_once: true,
            ..idle
        };
        assert_eq!(held.next(), Next::Stay);
        let calls = Situation {
            calls: true,
            unload_at_once: true,
            ..idle
        };
        assert_eq!(
            calls.next(),
            Next::Stay,
            "calls kept in memory keep an idle instance loaded for their results"
        );
        let calls_unloading = Situation {
            calls: true,
            unload_requested: true,
            ..idle
        };
        assert_eq!(
            calls_unloading.next(),
            Next::Stop,
            "but do not keep it once an unload was requested (the dispatcher queues its messages)"
        );
    }

    fn queued(id: i64) -> Inbound {
        Inbound::Queued(OrchestrationMessage {
            id,
            instance_id: "i".into(),
            event: crate::history::Event::EventRaised {
                name: "e".into(),
                data: crate::payload::Payload::null(),
            },
            execution: None,
        })
    }

    fn ids(messages: &[Inbound]) -> Vec<i64> {
        queued_ids(messages)
    }

    #[test]
    fn a_message_is_taken_once_while_held_and_after_it_is_consumed() {
        let mut seen = MessageIds::default();
        assert_eq!(ids(&seen.admit(vec![queued(1), queued(2)])), [1, 2]);
        assert_eq!(
            ids(&seen.admit(vec![queued(2), queued(3)])),
            [3],
            "2 is held"
        );
        seen.consumed(&[queued(1), queued(2)]);
        assert_eq!(
            ids(&seen.admit(vec![queued(1), queued(4)])),
            [4],
            "1 was consumed"
        );
    }

    #[test]
    fn consumed_ids_are_remembered_up_to_a_bound() {
        let mut seen = MessageIds::default();
        let all: Vec<Inbound> = (0..MessageIds::REMEMBERED as i64 + 10)
            .map(queued)
            .collect();
        seen.admit(all.clone());
        seen.consumed(&all);
        assert_eq!(seen.consumed.len(), MessageIds::REMEMBERED);
        assert_eq!(
            ids(&seen.admit(vec![queued(0)])),
            [0],
            "the oldest is forgotten"
        );
        let newest = MessageIds::REMEMBERED as i64 + 9;
        assert!(seen.admit(vec![queued(newest)]).is_empty());
    }

    #[test]
    fn backoff_doubles_from_10_ms_up_to_5_s() {
        assert_eq!(backoff(0), Duration::from_millis(10));
        assert_eq!(backoff(1), Duration::from_millis(20));
        assert_eq!(backoff(8), Duration::from_millis(2_560));
        assert_eq!(backoff(9), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }
}
