//! The dispatcher actor: claims orchestration messages and routes them to instance actors.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::Shared;
use super::activity::ActivityWorker;
use super::entity::EntityActor;
use super::instance::{InstanceActor, PendingCreate};
use super::messages::{
    Deliver, Drain, FromClient, GiveUp, Inbound, Poke, RequestUnload, Route, Shutdown, Start,
    TakeOffered, TimersArmed, ToDispatcher, ToWorker, UNQUEUED_START, Unload, Unloaded,
};
use super::poll::Poller;
use super::residency::{self, backoff};
use super::timers::SharedTimers;
use crate::clock::saturating_after;
use crate::error::Error;
use crate::flow::{FlowControl, FlowRule};
use crate::history::Event;
use crate::id::EntityId;
use crate::store::{HeldWork, OrchestrationMessage};

/// How long a release may take to run after an instance unloads: its held timers due by then
/// stay in memory for its next actor (the release lets go only those not visible yet).
const RELEASE_MARGIN: Duration = Duration::from_millis(100);
/// How soon an admission looks again while held instances wait (a slot may free in another
/// process, a rate's window moves on).
const ADMIT_RECHECK: Duration = Duration::from_millis(50);
/// How often a worker with flow-controlled orchestrators looks for held instances anyway
/// (created by another process).
const ADMIT_POLL: Duration = Duration::from_secs(1);
/// How soon after taking starts handed over ([`Store::take_offered`]) the leases are renewed:
/// within the shortest lease a backend gives them (PostgreSQL's: 3 s).
///
/// [`Store::take_offered`]: crate::store::Store::take_offered
const OFFERED_RENEWAL: Duration = Duration::from_secs(1);

/// How often a worker looks for held instances of orchestrators it has but does not limit
/// (held by a process that limits them: a client or worker configured differently), to
/// let them run rather than leave them Pending for ever.
const STRANDED_SWEEP: Duration = Duration::from_secs(10);

/// Runs the actix system of one runtime on the current thread until `shutdown` resolves.
pub(super) fn run_system(
    shared: Arc<Shared>,
    ready: oneshot::Sender<FromClient>,
    shutdown: oneshot::Receiver<Duration>,
) -> Result<(), Error> {
    let system = actix_rt::System::new();
    let worker = shared.clone();
    system.block_on(async move {
        let activity_thread = actix_rt::Arbiter::new();
        let worker_thread = activity_thread.handle();
        let dispatcher = Dispatcher::create(|ctx| {
            let me = ctx.address();
            let worker_shared = shared.clone();
            let worker = ActivityWorker::start_in_arbiter(&worker_thread, move |_| {
                ActivityWorker::new(worker_shared, ToDispatcher::of(&me))
            });
            Dispatcher::new(shared, worker)
        });
        let _ = ready.send(FromClient {
            route: dispatcher.clone().recipient(),
            start: dispatcher.clone().recipient(),
        });
        // A dropped `Runtime` (sender gone) stops at once, like a zero grace.
        let grace = shutdown.await.unwrap_or(Duration::ZERO);
        let _ = dispatcher.send(Shutdown { grace }).await;
        activity_thread.stop();
    });
    // Store calls still in flight (a poll's read) are dropped with the system, outside its
    // runtime; a pooled connection dropped there returns itself to its pool by spawning a
    // task, which needs a Tokio context: lend it one that goes away with them. Then give up
    // what `register_worker` took (the SQLite worker lock, this worker's leases), whether
    // the runtime was shut down or dropped.
    let context = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::store(format!("cannot release the worker: {e}")))?;
    {
        let _enter = context.enter();
        drop(system);
    }
    context.block_on(worker.store.unregister_worker(&worker.owner))
}

/// The actor of a loaded instance or entity.
#[derive(Clone)]
enum ActorAddr {
    Instance(Addr<InstanceActor>),
    Entity(Addr<EntityActor>),
}

impl ActorAddr {
    fn deliver(&self, messages: Vec<Inbound>) {
        match self {
            ActorAddr::Instance(addr) => addr.do_send(Deliver(messages)),
            ActorAddr::Entity(addr) => addr.do_send(Deliver(messages)),
        }
    }

    fn unload(&self) {
        match self {
            ActorAddr::Instance(addr) => addr.do_send(Unload),
            ActorAddr::Entity(addr) => addr.do_send(Unload),
        }
    }

    fn give_up(&self) {
        match self {
            ActorAddr::Instance(addr) => addr.do_send(GiveUp),
            ActorAddr::Entity(addr) => addr.do_send(GiveUp),
        }
    }

    async fn drain(self) {
        let _ = match self {
            ActorAddr::Instance(addr) => addr.send(Drain).await,
            ActorAddr::Entity(addr) => addr.send(Drain).await,
        };
    }
}

/// A loaded instance or entity.
struct Slot {
    addr: ActorAddr,
    /// The actor was asked to unload: hold its messages until it reports back.
    unloading: bool,
    queued: Vec<Inbound>,
    /// Set while the first turn of an instance started in memory has not created it in the
    /// store: lease renewals leave it out (the store would report it lost).
    uncreated: Option<Rc<Cell<bool>>>,
}

pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    worker: Addr<ActivityWorker>,
    instances: HashMap<Arc<str>, Slot>,
    claiming: bool,
    claim_again: bool,
    /// A renewal of the leases is armed for starts handed over ([`TakeOffered`]).
    offered_renewal: bool,
    claim_failures: u32,
    /// Due times to wake up at (timers this worker armed or found), each once, earliest first.
    timers: BTreeSet<DateTime<Utc>>,
    /// Timers the store holds for this worker: routed from memory when due.
    held: SharedTimers,
    timer_wakeup: Option<(DateTime<Utc>, SpawnHandle)>,
    poller: Poller,
    stopping: bool,
    /// An admission of held instances is running; another was asked for meanwhile; a
    /// recheck is armed.
    admitting: bool,
    admit_again: bool,
    admit_recheck: bool,
}

impl Dispatcher {
    fn new(shared: Arc<Shared>, worker: Addr<ActivityWorker>) -> Self {
        Dispatcher {
            poller: Poller::new(shared.options.poll_interval),
            shared,
            worker,
            instances: HashMap::new(),
            claiming: false,
            claim_again: false,
            offered_renewal: false,
            claim_failures: 0,
            timers: BTreeSet::new(),
            held: SharedTimers::default(),
            timer_wakeup: None,
            stopping: false,
            admitting: false,
            admit_again: false,
            admit_recheck: false,
        }
    }

    /// Claims a batch of visible messages and routes them; repeats while batches come back
    /// full or a wake-up arrived meanwhile.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || !self.shared.runs_instances {
            return;
        }
        if self.claiming {
            self.claim_again = true;
            return;
        }
        self.claiming = true;
        self.claim_again = false;
        let shared = self.shared.clone();
        let limit = shared.options.claim_batch;
        let lease_until = shared.lease_until();
        let claim = async move {
            shared
                .store
                .claim_messages(&shared.owner, limit, lease_until)
                .await
        };
        ctx.spawn(claim.into_actor(self).map(move |result, act, ctx| {
            act.claiming = false;
            match result {
                Ok(messages) => {
                    act.claim_failures = 0;
                    let full = messages.len() >= limit as usize;
                    if act.poller.claim_finished(!messages.is_empty()) {
                        act.poller.arm(ctx, Self::poll);
                    }
                    act.route(messages.into_iter().map(Inbound::Queued).collect(), ctx);
                    if full || act.claim_again {
                        act.claim(ctx);
                    }
                }
                Err(error) => {
                    act.poller.claim_finished(false);
                    act.claim_failures += 1;
                    let backoff = backoff(act.claim_failures);
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "claiming messages failed");
                    ctx.run_later(backoff, |act, ctx| act.claim(ctx));
                }
            }
        }));
    }

    /// Lets held instances of flow-controlled orchestrators run as far as their limits allow
    /// ([`Store::admit_instances`](crate::store::Store::admit_instances)) and claims those it
    /// let go; looks again soon while some still wait.
    fn admit(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.shared.orchestrator_flow_rules.is_empty() {
            return;
        }
        if self.admitting {
            self.admit_again = true;
            return;
        }
        self.admitting = true;
        self.admit_again = false;
        let shared = self.shared.clone();
        let admit = async move {
            shared
                .store
                .admit_instances(&shared.orchestrator_flow_rules)
                .await
        };
        ctx.spawn(admit.into_actor(self).map(|result, act, ctx| {
            act.admitting = false;
            let recheck = match result {
                Ok(admission) => {
                    if !admission.admitted.is_empty() {
                        act.claim(ctx);
                    }
                    admission.waiting > 0
                }
                Err(error) => {
                    tracing::warn!(%error, "letting held instances run failed; will retry");
                    true
                }
            };
            // A concurrency slot frees when an instance ends (this worker admits then; so
            // does the worker it ends on); a rate's window moves on by itself: look again soon.
            let rated = act
                .shared
                .orchestrator_flow_rules
                .iter()
                .any(|rule| rule.limits.rate.is_some());
            if act.admit_again {
                act.admit(ctx);
            } else if recheck && rated && !act.admit_recheck {
                act.admit_recheck = true;
                ctx.run_later(ADMIT_RECHECK, |act, ctx| {
                    act.admit_recheck = false;
                    act.admit(ctx);
                });
            }
        }));
    }

    /// Lets run the held instances of orchestrators this worker has but does not limit: a
    /// process with other limits held them, and no worker with those limits may ever admit
    /// them. Logs why.
    fn release_stranded(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let shared = self.shared.clone();
        let unlimited: Vec<String> = shared
            .registry
            .orchestrators()
            .map(|entry| entry.name.to_owned())
            .filter(|name| !shared.orchestrator_flow.contains_key(name))
            .collect();
        if unlimited.is_empty() {
            return;
        }
        let sweep = async move {
            let held = shared.store.instance_flow_status(&unlimited).await?;
            let rules: Vec<FlowRule> = held
                .iter()
                .filter(|status| status.waiting > 0)
                .map(|status| status.name.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|name| FlowRule {
                    name,
                    limits: FlowControl::default(),
                })
                .collect();
            if rules.is_empty() {
                return Ok(Vec::new());
            }
            for rule in &rules {
                tracing::warn!(
                    orchestrator = %rule.name,
                    "instances are held by flow-control limits this worker does not have \
                     (declare the same limits in every process of the app); letting them run"
                );
            }
            shared
                .store
                .admit_instances(&rules)
                .await
                .map(|admission| admission.admitted)
        };
        ctx.spawn(
            sweep.into_actor(self).map(
                |result: Result<Vec<String>, Error>, act, ctx| match result {
                    Ok(admitted) if !admitted.is_empty() => act.claim(ctx),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "looking for stranded held instances failed")
                    }
                },
            ),
        );
    }

    fn route(&mut self, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        let mut by_instance: Vec<(Arc<str>, Vec<Inbound>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for message in messages {
            match index.get(message.instance_id()) {
                Some(&i) => by_instance[i].1.push(message),
                None => {
                    index.insert(message.instance_id().to_owned(), by_instance.len());
                    by_instance.push((Arc::from(message.instance_id()), vec![message]));
                }
            }
        }
        for (instance_id, messages) in by_instance {
            self.deliver(instance_id, messages, ctx);
        }
    }

    fn deliver(&mut self, instance_id: Arc<str>, messages: Vec<Inbound>, ctx: &mut Context<Self>) {
        match self.instances.get_mut(&instance_id) {
            Some(slot) if slot.unloading => slot.queued.extend(messages),
            Some(slot) => slot.addr.deliver(messages),
            None => {
                let addr = match EntityId::from_instance_id(&instance_id) {
                    Some(entity) => ActorAddr::Entity(
                        EntityActor::new(
                            self.shared.clone(),
                            instance_id.clone(),
                            entity,
                            ToDispatcher::of(&ctx.address()),
                            messages,
                        )
                        .start(),
                    ),
                    None => ActorAddr::Instance(
                        self.instance_actor(instance_id.clone(), messages, ctx)
                            .start(),
                    ),
                };
                let slot = Slot {
                    addr,
                    unloading: false,
                    queued: Vec::new(),
                    uncreated: None,
                };
                self.instances.insert(instance_id, slot);
            }
        }
    }

    /// The actor of orchestration instance `instance_id`, to run `messages`.
    fn instance_actor(
        &self,
        instance_id: Arc<str>,
        messages: Vec<Inbound>,
        ctx: &mut Context<Self>,
    ) -> InstanceActor {
        InstanceActor::new(
            self.shared.clone(),
            instance_id,
            ToDispatcher::of(&ctx.address()),
            ToWorker {
                run: self.worker.clone().recipient(),
                cancel: self.worker.clone().recipient(),
                adopt: self.worker.clone().recipient(),
                ended: self.worker.clone().recipient(),
            },
            self.held.clone(),
            messages,
        )
    }

    /// The fallback poll: claims (unless a claim is running anyway), looks for timers armed
    /// elsewhere, and arms the next poll.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if !self.claiming {
            self.claim(ctx);
            self.poller.claim_started(self.claiming);
        }
        self.look_for_timers(ctx);
        self.poller.arm(ctx, Self::poll);
    }

    /// Sleeps until the earliest armed or held timer is due, then routes the held ones that
    /// are due and claims for the others.
    fn arm_timer_wakeup(&mut self, ctx: &mut Context<Self>) {
        let held = self.held.borrow().next_due();
        let Some(due) = self.timers.first().copied().into_iter().chain(held).min() else {
            return;
        };
        if let Some((armed, handle)) = self.timer_wakeup {
            if armed <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        // On the store's clock: real time, or a test's manual clock, which wakes this when
        // it is moved to `due`. At `due`, not after it: the store keeps milliseconds, so the
        // message is visible from that millisecond on; a wake-up a hair early (a wall clock
        // slewed under the monotonic one) claims nothing and sleeps again until `due`.
        let clock = self.shared.clock.clone();
        let sleep = async move { clock.sleep_until_precisely(due).await };
        let handle = ctx.spawn(sleep.into_actor(self).map(|(), act, ctx| {
            act.timer_wakeup = None;
            let now = act.shared.now();
            let held = act.held.borrow_mut().take_due(now);
            if !held.is_empty() {
                act.route(held.into_iter().map(Inbound::Queued).collect(), ctx);
            }
            let mut armed_due = false;
            while act.timers.first().is_some_and(|due| *due <= now) {
                act.timers.pop_first();
                armed_due = true;
            }
            if armed_due {
                act.claim(ctx);
            }
            act.arm_timer_wakeup(ctx);
        }));
        self.timer_wakeup = Some((due, handle));
    }

    /// Finds the next due time of timers this worker did not arm (after a restart, or armed
    /// by other workers) and arms a wake-up for it.
    fn look_for_timers(&mut self, ctx: &mut Context<Self>) {
        if !self.shared.runs_instances {
            return;
        }
        let shared = self.shared.clone();
        let next = async move { shared.store.next_visible_at().await };
        ctx.spawn(next.into_actor(self).map(|result, act, ctx| match result {
            Ok(Some(due)) => {
                act.timers.insert(due);
                act.arm_timer_wakeup(ctx);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "looking for the next timer failed"),
        }));
    }

    /// Renews the leases of the loaded instances and entities (and what was claimed for
    /// them); those another worker took over meanwhile give their in-memory state up.
    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        let held = HeldWork {
            instances: self
                .instances
                .iter()
                .filter(|(_, slot)| !slot.uncreated.as_ref().is_some_and(|u| u.get()))
                .map(|(id, _)| id.to_string())
                .collect(),
            activity_items: Vec::new(),
        };
        if held.instances.is_empty() {
            return;
        }
        let renew = async move {
            let lease_until = shared.lease_until();
            shared
                .store
                .renew_leases(&shared.owner, &held, lease_until)
                .await
        };
        ctx.spawn(renew.into_actor(self).map(|result, act, _| match result {
            Ok(lost) => {
                for instance_id in lost {
                    if let Some(slot) = act.instances.get(instance_id.as_str()) {
                        tracing::warn!(%instance_id, "another worker holds the instance now; giving up its in-memory state");
                        slot.addr.give_up();
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "renewing leases failed; will retry"),
        }));
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.shared.options.lease / 3, |act, ctx| {
            act.renew_leases(ctx)
        });

        // Wake up whenever the store says work arrived (commits by this process).
        let store = self.shared.store.clone();
        let me = ctx.address();
        actix_rt::spawn(async move {
            loop {
                store.events().work_notified().await;
                if !me.connected() {
                    break;
                }
                me.do_send(Poke);
            }
        });
        // And when it was handed messages leased to this worker already (no claim to run).
        if self.shared.runs_instances {
            let mut offered = self.shared.store.events().watch_offered();
            let me = ctx.address();
            actix_rt::spawn(async move {
                while offered.notified().await && me.connected() {
                    me.do_send(TakeOffered);
                }
            });
        }

        if !self.shared.orchestrator_flow_rules.is_empty() {
            ctx.run_interval(ADMIT_POLL, |act, ctx| act.admit(ctx));
            self.admit(ctx);
        }
        if self.shared.registry.orchestrators().next().is_some() {
            ctx.run_interval(STRANDED_SWEEP, |act, ctx| act.release_stranded(ctx));
        }
        self.poll(ctx);
    }
}

impl Handler<Route> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) {
        self.route(msg.0, ctx);
    }
}

impl Handler<Start> for Dispatcher {
    type Result = ();

    /// Runs a new instance from memory; its first turn creates it in the store. A start
    /// whose id is loaded here (a finished instance it would replace, a running one it would
    /// be refused by) or that comes while the worker stops is dropped: the client then
    /// creates it in the store the ordinary way.
    fn handle(&mut self, start: Start, ctx: &mut Context<Self>) {
        let instance_id: Arc<str> = Arc::from(start.instance.instance_id.as_str());
        if self.stopping || self.instances.contains_key(&instance_id) {
            return;
        }
        let instance = &start.instance;
        let message = Inbound::Queued(OrchestrationMessage {
            id: UNQUEUED_START,
            instance_id: instance.instance_id.clone(),
            event: Event::ExecutionStarted {
                name: instance.name.clone(),
                version: instance.version.clone(),
                input: instance.input.clone(),
                execution: 0,
                parent: instance.parent.clone(),
            },
            execution: None,
        });
        let uncreated = Rc::new(Cell::new(true));
        let actor = self
            .instance_actor(instance_id.clone(), vec![message], ctx)
            .creating(PendingCreate {
                instance: start.instance,
                reply: start.reply,
                uncreated: uncreated.clone(),
            })
            .start();
        let slot = Slot {
            addr: ActorAddr::Instance(actor),
            unloading: false,
            queued: Vec::new(),
            uncreated: Some(uncreated),
        };
        self.instances.insert(instance_id, slot);
    }
}

impl Handler<Poke> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Poke, ctx: &mut Context<Self>) {
        self.claim(ctx);
        // New work may be a held instance (its creation announces work too).
        self.admit(ctx);
    }
}

impl Handler<TakeOffered> for Dispatcher {
    type Result = ();

    /// Routes what the store was handed for this worker. While stopping, they stay with the
    /// store: leased to this worker, they are let go with its other leases when it
    /// unregisters.
    fn handle(&mut self, _: TakeOffered, ctx: &mut Context<Self>) {
        if self.stopping || !self.shared.runs_instances {
            return;
        }
        let offered = self.shared.store.take_offered(&self.shared.owner);
        if offered.is_empty() {
            return;
        }
        self.route(offered.into_iter().map(Inbound::Queued).collect(), ctx);
        // Their lease may be short (a client chose it): renewed with the others in a second,
        // unless their first turns have committed (taking the runtime's lease) by then.
        if !self.offered_renewal {
            self.offered_renewal = true;
            ctx.run_later(OFFERED_RENEWAL, |act, ctx| {
                act.offered_renewal = false;
                act.renew_leases(ctx);
            });
        }
    }
}

impl Handler<TimersArmed> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: TimersArmed, ctx: &mut Context<Self>) {
        self.timers.extend(msg.0);
        self.arm_timer_wakeup(ctx);
    }
}

impl Handler<RequestUnload> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: RequestUnload, _: &mut Context<Self>) {
        if let Some(slot) = self.instances.get_mut(&msg.0)
            && !slot.unloading
        {
            slot.unloading = true;
            slot.addr.unload();
        }
    }
}

impl Handler<Unloaded> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Unloaded, ctx: &mut Context<Self>) {
        let Some(slot) = self.instances.remove(&msg.instance_id) else {
            return;
        };
        if msg.finished {
            // Its slot may be free now.
            self.admit(ctx);
        }
        let mut messages = msg.leftover;
        messages.extend(slot.queued);
        if msg.finished {
            // Its timers went with it.
            self.held.borrow_mut().remove_instance(&msg.instance_id);
        } else if msg.gave_up {
            // Another worker holds the instance now: its held timers that are due go back
            // visible at once; the others are released below like any unloaded instance's.
            let now = self.shared.now();
            let due = self.held.borrow_mut().take_due_of(&msg.instance_id, now);
            if !due.is_empty() {
                let ids = due.iter().map(|m| m.id).collect();
                ctx.spawn(residency::give_back(self.shared.clone(), ids).into_actor(self));
            }
        } else {
            // Its held timers due now (or by the time the release runs) are its next actor's
            // to run: the release lets go only those not visible yet.
            let soon = saturating_after(self.shared.now(), RELEASE_MARGIN);
            let due = self.held.borrow_mut().take_due_of(&msg.instance_id, soon);
            messages.extend(due.into_iter().map(Inbound::Queued));
        }
        if !messages.is_empty() && !self.stopping {
            // The next actor of the instance takes its held timers over.
            self.deliver(msg.instance_id, messages, ctx);
        } else if !msg.finished {
            // Releasing the instance lets its held timers not due yet go back to the queue:
            // claim them when due, like any queued timer.
            let dues = self.held.borrow_mut().remove_instance(&msg.instance_id);
            if !dues.is_empty() {
                self.timers.extend(dues);
                self.arm_timer_wakeup(ctx);
            }
            let shared = self.shared.clone();
            let instance_id = msg.instance_id;
            let release = async move {
                shared
                    .store
                    .release_instance(&instance_id, &shared.owner)
                    .await
            };
            ctx.spawn(release.into_actor(self).map(|result, _, _| {
                if let Err(error) = result {
                    tracing::debug!(%error, "releasing an unloaded instance failed");
                }
            }));
        }
    }
}

impl Handler<Shutdown> for Dispatcher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Shutdown { grace }: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let worker = self.worker.clone();
        let instances: Vec<ActorAddr> = self
            .instances
            .values()
            .map(|slot| slot.addr.clone())
            .collect();
        let shared = self.shared.clone();
        Box::pin(
            async move {
                // New work goes to other workers from now on, not to this one while it drains.
                if let Err(error) = shared.store.stop_claiming(&shared.owner).await {
                    tracing::debug!(%error, "telling the store this worker stops claiming failed");
                }
                let drain = async move {
                    let _ = worker.send(Drain).await;
                    for instance in instances {
                        instance.drain().await;
                    }
                };
                if tokio::time::timeout(grace, drain).await.is_err() {
                    tracing::warn!(
                        grace_ms = grace.as_millis() as u64,
                        "shutdown grace elapsed with work still running; it will be retried"
                    );
                }
            }
            .into_actor(self),
        )
    }
}
