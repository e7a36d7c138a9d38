//! An in-memory [`Store`] on a [`Clock`]: the test kit's store, and a plain reading of the
//! storage contract (`store.rs`) without a database in the way.
//!
//! Everything lives behind one mutex. Each method locks it, reads or changes the [`State`],
//! unlocks, and only then sends the store's notifications ([`StoreEvents`]): every call is
//! atomic, and nothing awaits while holding the lock. The behaviour is the database
//! backends' (`duractor-sqlx`), with two choices of this store's own:
//!
//! * **Time is the clock's.** Whether a message is visible, whether a lease lapsed, whether
//!   a timer is "in the future", what [`Store::stats`] counts as ready: all read
//!   [`Clock::now`], so a test that moves a manual clock past a timer makes the timer
//!   visible. Times callers pass in (creation times, lease deadlines, a turn's time) are kept
//!   as given, to the millisecond, as the databases keep them.
//! * **A lapsed lease is not taken back by its own holder.** A test may move a manual clock
//!   far past every lease while a worker still runs its work. The worker that held a message
//!   or an activity work item then does not claim it a second time (it still has it); another
//!   worker may take it over, as after a crash.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::clock::{Clock, truncate_millis};
use crate::error::Error;
use crate::flow::{self, FlowRule, FlowUsage};
use crate::history::{Event, Payload};
use crate::id::EntityId;
use crate::store::{
    ActivityCompletion, ActivityHeartbeat, ActivityStatus, ActivityWorkItem, Admission,
    ClaimedActivities, EntityCleanup, EntityQuery, EntityStatus, FLOW_HOLD_OWNER, FlowKind,
    FlowStatus, HeldWork, InstanceQuery, InstanceStatus, MemoryCall, NewInstance,
    OrchestrationMessage, PurgeQuery, RuntimeStatus, Store, StoreEvents, StoreStats, TurnCommit,
    TurnCommitted,
};
use crate::timeouts::ActivityTimeouts;

/// A store that keeps everything in memory, on a clock a test can move.
///
/// It implements the whole [`Store`] contract, like the database backends, and reads every
/// time it compares (is a message visible, has a lease lapsed) from its clock:
///
/// ```
/// use std::time::Duration;
/// use duractor::clock::Clock;
/// use duractor::testing::MemoryStore;
/// use duractor::Store;
///
/// let clock = Clock::manual("2026-01-01T00:00:00Z".parse().unwrap());
/// let store = MemoryStore::with_clock(clock.clone());
/// clock.advance(Duration::from_secs(3_600)).unwrap();
/// assert_eq!(store.clock().now().to_rfc3339(), "2026-01-01T01:00:00+00:00");
/// ```
///
/// Nothing survives the store: it is for tests and examples, not for durable work.
#[derive(Default)]
pub struct MemoryStore {
    clock: Clock,
    state: Mutex<State>,
    events: StoreEvents,
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store on `clock` (typically a [`Clock::manual`] the test moves).
    pub fn with_clock(clock: Clock) -> Self {
        MemoryStore {
            clock,
            ..Self::default()
        }
    }

    /// The state, locked. A panic in another thread while it held the lock cannot leave the
    /// state half-changed (every change is validated before it is made), so a poisoned lock
    /// is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a change of the state at the clock's now, then sends the notifications it asked
    /// for (after unlocking).
    fn change<T>(&self, change: impl FnOnce(&mut State, DateTime<Utc>, &mut Effects) -> T) -> T {
        let now = self.clock.now();
        let mut effects = Effects::default();
        let result = change(&mut self.lock(), now, &mut effects);
        effects.announce(&self.events);
        result
    }

    /// Reads the state at the clock's now.
    fn read<T>(&self, read: impl FnOnce(&State, DateTime<Utc>) -> T) -> T {
        let now = self.clock.now();
        read(&self.lock(), now)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("clock", &self.clock)
            .field("instances", &state.instances.len())
            .field("messages", &state.messages.len())
            .field("activity_items", &state.items.len())
            .finish()
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    /// Nothing to take: several runtimes may share one memory store, each with its own owner
    /// id, competing on leases (as on PostgreSQL).
    async fn register_worker(&self, _owner: &str) -> Result<(), Error> {
        Ok(())
    }

    async fn unregister_worker(&self, owner: &str) -> Result<(), Error> {
        self.change(|state, _, effects| state.release_all(owner, effects));
        Ok(())
    }

    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        self.change(|state, _, effects| state.create(&instance, None, effects))
            .map(drop)
    }

    async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let lease = Lease::new(owner, lease_until);
        self.change(|state, _, effects| state.create(&instance, Some(lease), effects))
    }

    async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        self.change(|state, now, effects| {
            state.enqueue(instance_id, event, visible_at, now, effects)
        })
    }

    async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.change(|state, now, effects| state.abandon(owner, ids, visible_at, now, effects));
        Ok(())
    }

    async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        Ok(self.change(|state, _, _| state.purge(query)))
    }

    async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        Ok(self.change(|state, now, _| state.claim_messages(owner, limit, lease_until, now)))
    }

    async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error> {
        Ok(self.change(|state, now, _| {
            state.claim_activities(owner, names, rules, limit, lease_until, now)
        }))
    }

    async fn flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        Ok(self.read(|state, now| state.flow_status(names, now)))
    }

    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        Ok(self.change(|state, now, effects| state.admit_instances(rules, now, effects)))
    }

    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        Ok(self.read(|state, _| state.instance_flow_status(names)))
    }

    async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        self.change(|state, now, effects| state.commit_turn(&turn, now, effects))
    }

    async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        Ok(self.change(|state, now, effects| state.complete_activity(&completion, now, effects)))
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        Ok(self.change(|state, _, _| state.renew(owner, held, lease_until)))
    }

    async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, Error> {
        Ok(self.change(|state, _, _| state.sync_activities(owner, heartbeats, running, now)))
    }

    async fn list_activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error> {
        Ok(self.read(|state, _| state.list_activities(instance_id)))
    }

    fn keeps_calls_in_memory(&self) -> bool {
        true
    }

    fn creates_with_turn(&self) -> bool {
        true
    }

    /// Every finish is committed in this process, and hands over its row.
    fn announces_finished_rows(&self) -> bool {
        true
    }

    async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        Ok(self.change(|state, _, _| state.persist_calls(owner, calls, lease_until)))
    }

    async fn recover_calls(&self) -> Result<u64, Error> {
        Ok(self.change(|state, now, effects| state.recover_calls(now, effects)))
    }

    async fn release_instance(&self, instance_id: &str, owner: &str) -> Result<(), Error> {
        self.change(|state, now, effects| state.release(instance_id, owner, now, effects));
        Ok(())
    }

    async fn load_history(&self, instance_id: &str) -> Result<Vec<Event>, Error> {
        Ok(self.read(|state, _| {
            state
                .instances
                .get(instance_id)
                .map(|instance| instance.history.clone())
                .unwrap_or_default()
        }))
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error> {
        Ok(self.read(|state, _| {
            state
                .instances
                .get(instance_id)
                .filter(|instance| instance.entity.is_none())
                .map(|instance| instance.row.clone())
        }))
    }

    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        Ok(self.read(|state, _| state.list_instances(query)))
    }

    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.read(|state, now| state.next_visible_at(now)))
    }

    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        Ok(self.read(|state, _| {
            let instance_id = id.instance_id();
            state
                .instances
                .get(&instance_id)
                .and_then(|instance| instance.entity_status(&instance_id))
        }))
    }

    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        Ok(self.read(|state, _| state.list_entities(query)))
    }

    async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        Ok(self.change(|state, now, effects| state.clean_entities(now, effects)))
    }

    fn events(&self) -> &StoreEvents {
        &self.events
    }

    /// Counts taken at once under the lock: `messages_ready` counts every message visible
    /// now, claimed or not (a turn in progress is work not yet done), `messages_delayed`
    /// those visible later, `activity_items` every work item, queued or running.
    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        Ok(Some(self.read(|state, now| state.stats(now))))
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }
}

/// Everything the store holds.
#[derive(Default)]
struct State {
    /// Orchestration instances and entities, by instance id (the order lists use).
    instances: BTreeMap<String, Instance>,
    /// The orchestration queue, by id (the order messages were enqueued in).
    messages: BTreeMap<i64, Message>,
    /// The activity queue, by id.
    items: BTreeMap<i64, WorkItem>,
    /// The last message id given out.
    last_message_id: i64,
    /// The last work item id given out.
    last_item_id: i64,
    /// Starts of rate-limited activities: name, key, when (pruned past their period).
    flow_starts: Vec<(String, Option<String>, DateTime<Utc>)>,
    /// Instances of flow-controlled orchestrators, by admission order id: held, or let run.
    flow_instances: BTreeMap<i64, FlowInstance>,
    /// The last id given to a flow instance.
    last_flow_id: i64,
}

/// An instance of a flow-controlled orchestrator ([`NewInstance::flow`]).
struct FlowInstance {
    instance_id: String,
    name: String,
    key: Option<String>,
    priority: i32,
    /// Let run (counted against the limits until it finishes); held otherwise.
    admitted: bool,
}

/// An orchestration instance or an entity.
struct Instance {
    /// The status row. An entity has one too (its name, `Running`, a null input, when it
    /// was created and last changed), which only [`Instance::entity_status`] shows.
    row: InstanceStatus,
    /// `Some` for entities: their state and lock.
    entity: Option<EntityFields>,
    /// The history (entities have none).
    history: Vec<Event>,
    /// The worker holding the instance, if any.
    lease: Option<Lease>,
    /// Calls its worker keeps in memory, by `seq`, as the work items they become when that
    /// worker lets them go (their `attempt` is the call's).
    calls: BTreeMap<u64, WorkItem>,
}

/// What an entity stores besides its row.
struct EntityFields {
    state: Option<Payload>,
    lock_owner: Option<String>,
}

/// A message to an instance or entity.
struct Message {
    instance_id: String,
    /// When it becomes visible.
    visible_at: DateTime<Utc>,
    event: Event,
    execution: Option<u32>,
    /// The worker it is claimed for, if any.
    lease: Option<Lease>,
}

/// An activity work item. Work items are born claimed, by the worker whose turn scheduled
/// them, so there is always a holder.
struct WorkItem {
    instance_id: String,
    seq: u64,
    name: String,
    input: Payload,
    execution: u32,
    /// How many times it was claimed (1 for the claim that came with its turn).
    attempt: u32,
    /// The worker that claimed it last: only that worker completes it.
    holder: String,
    /// Until when `holder` has it; `None` once released (its holder stopped).
    lease_until: Option<DateTime<Utc>>,
    timeouts: ActivityTimeouts,
    deadline: Option<DateTime<Utc>>,
    /// The last heartbeat details, and when they were stored.
    heartbeat: Option<Payload>,
    heartbeat_at: Option<DateTime<Utc>>,
    flow_key: Option<String>,
    priority: i32,
}

/// A worker's hold on an instance or a message, until a deadline.
#[derive(Clone)]
struct Lease {
    owner: String,
    until: DateTime<Utc>,
}

impl Lease {
    fn new(owner: &str, until: DateTime<Utc>) -> Lease {
        Lease {
            owner: owner.to_owned(),
            until: truncate_millis(until),
        }
    }
}

/// Counts `(name, key, running)` rows into running and waiting per name and key.
fn flow_counts(
    kind: FlowKind,
    rows: impl Iterator<Item = (String, Option<String>, bool)>,
) -> Vec<FlowStatus> {
    let mut counts: BTreeMap<(String, Option<String>), (u32, u32)> = BTreeMap::new();
    for (name, key, running) in rows {
        let entry = counts.entry((name, key)).or_default();
        if running {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|((name, key), (running, waiting))| FlowStatus {
            kind,
            name,
            key,
            running,
            waiting,
        })
        .collect()
}

/// Whether `owner` may claim work (a message) held under `lease` at `now`: nobody holds it,
/// or another worker's lease lapsed. A lapsed lease of `owner` itself is not taken back: that
/// worker still has the work.
fn claimable(lease: Option<&Lease>, owner: &str, now: DateTime<Utc>) -> bool {
    lease.is_none_or(|lease| lease.until < now && lease.owner != owner)
}

/// Whether `owner` may run an instance held under `lease` at `now`: nobody holds it, `owner`
/// does (even past its deadline: nobody took it over), or another worker's lease lapsed.
fn free_for(lease: Option<&Lease>, owner: &str, now: DateTime<Utc>) -> bool {
    lease.is_none_or(|lease| lease.owner == owner || lease.until < now)
}

impl WorkItem {
    /// Whether `owner` may claim the item at `now` (see [`claimable`]).
    fn claimable_by(&self, owner: &str, now: DateTime<Utc>) -> bool {
        self.lease_until
            .is_none_or(|until| until < now && self.holder != owner)
    }
}

impl Message {
    /// The message as a claim returns it.
    fn claimed(&self, id: i64) -> OrchestrationMessage {
        OrchestrationMessage {
            id,
            instance_id: self.instance_id.clone(),
            event: self.event.clone(),
            execution: self.execution,
        }
    }
}

impl Instance {
    /// A new orchestration instance, Pending.
    fn orchestration(new: &NewInstance) -> Instance {
        let created_at = truncate_millis(new.created_at);
        Instance {
            row: InstanceStatus {
                instance_id: new.instance_id.clone(),
                name: new.name.clone(),
                version: new.version.clone(),
                status: RuntimeStatus::Pending,
                input: new.input.clone(),
                output: None,
                failure: None,
                custom_status: None,
                created_at,
                updated_at: created_at,
                completed_at: None,
            },
            entity: None,
            history: Vec::new(),
            lease: None,
            calls: BTreeMap::new(),
        }
    }

    /// A new entity, without state, first addressed at `now`.
    fn entity(instance_id: &str, entity: EntityId, now: DateTime<Utc>) -> Instance {
        Instance {
            row: InstanceStatus {
                instance_id: instance_id.to_owned(),
                name: entity.name,
                version: String::new(),
                status: RuntimeStatus::Running,
                input: Payload::null(),
                output: None,
                failure: None,
                custom_status: None,
                created_at: now,
                updated_at: now,
                completed_at: None,
            },
            entity: Some(EntityFields {
                state: None,
                lock_owner: None,
            }),
            history: Vec::new(),
            lease: None,
            calls: BTreeMap::new(),
        }
    }

    /// The entity as stored (`None` for orchestration instances).
    fn entity_status(&self, instance_id: &str) -> Option<EntityStatus> {
        let entity = self.entity.as_ref()?;
        Some(EntityStatus {
            id: EntityId::from_instance_id(instance_id)?,
            state: entity.state.clone(),
            lock_owner: entity.lock_owner.clone(),
            created_at: self.row.created_at,
            updated_at: self.row.updated_at,
        })
    }

    /// An orchestration instance's status if it has finished (entities never do).
    fn finished_status(&self) -> Option<RuntimeStatus> {
        (self.entity.is_none() && self.row.status.is_terminal()).then_some(self.row.status)
    }
}

/// The notifications a change asks for, sent once the lock is released.
#[derive(Default)]
struct Effects {
    /// Unclaimed work became visible: wake the dispatchers.
    work: bool,
    /// Orchestration instances that finished, as they now stand: hand them to their
    /// waiters.
    finished: Vec<InstanceStatus>,
}

impl Effects {
    fn announce(self, events: &StoreEvents) {
        if self.work {
            events.notify_work();
        }
        for status in &self.finished {
            events.notify_finished_with(status);
        }
    }
}

/// Creating and addressing instances.
impl State {
    /// Adds a message to the queue and returns its id.
    fn push_message(
        &mut self,
        instance_id: &str,
        visible_at: DateTime<Utc>,
        event: Event,
        execution: Option<u32>,
        lease: Option<Lease>,
    ) -> i64 {
        self.last_message_id += 1;
        let message = Message {
            instance_id: instance_id.to_owned(),
            visible_at: truncate_millis(visible_at),
            event,
            execution,
            lease,
        };
        self.messages.insert(self.last_message_id, message);
        self.last_message_id
    }

    /// Whether a message may go to `instance_id`: an existing instance, or an entity, which
    /// exists from its first message on (its row is created here, at `now`).
    fn ensure_target(&mut self, instance_id: &str, now: DateTime<Utc>) -> bool {
        if self.instances.contains_key(instance_id) {
            return true;
        }
        let Some(entity) = EntityId::from_instance_id(instance_id) else {
            return false;
        };
        let instance = Instance::entity(instance_id, entity, now);
        self.instances.insert(instance_id.to_owned(), instance);
        true
    }

    /// Deletes an instance with everything it owns: history, messages, work items.
    fn forget(&mut self, instance_id: &str) {
        self.instances.remove(instance_id);
        self.messages.retain(|_, m| m.instance_id != instance_id);
        self.items.retain(|_, item| item.instance_id != instance_id);
        self.flow_instances
            .retain(|_, held| held.instance_id != instance_id);
    }

    /// A new instance with its `ExecutionStarted` message, visible from its creation time.
    /// An id taken by an instance that has not finished is refused; a finished one is
    /// replaced.
    /// A new instance and its `ExecutionStarted` message; with `lease`, both held by that
    /// owner and the message returned.
    fn create(
        &mut self,
        new: &NewInstance,
        lease: Option<Lease>,
        effects: &mut Effects,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        if let Some(existing) = self.instances.get(&new.instance_id) {
            if !existing.row.status.is_terminal() {
                return Err(Error::InstanceExists {
                    instance_id: new.instance_id.clone(),
                    status: existing.row.status.to_string(),
                });
            }
            self.forget(&new.instance_id);
        }
        // A held instance and its messages wait, leased to nobody who runs them.
        let lease = match &new.flow {
            Some(hold) => {
                self.last_flow_id += 1;
                self.flow_instances.insert(
                    self.last_flow_id,
                    FlowInstance {
                        instance_id: new.instance_id.clone(),
                        name: new.name.clone(),
                        key: hold.key.clone(),
                        priority: hold.priority,
                        admitted: false,
                    },
                );
                Some(Lease::new(FLOW_HOLD_OWNER, crate::store::flow_hold_until()))
            }
            None => lease,
        };
        let mut instance = Instance::orchestration(new);
        instance.lease = lease.clone();
        let created_at = instance.row.created_at;
        self.instances.insert(new.instance_id.clone(), instance);
        let start = Event::ExecutionStarted {
            name: new.name.clone(),
            version: new.version.clone(),
            input: new.input.clone(),
            execution: 0,
            parent: new.parent.clone(),
        };
        let claimed = lease.is_some() && new.flow.is_none();
        let id = self.push_message(&new.instance_id, created_at, start.clone(), None, lease);
        if !claimed {
            effects.work = true;
            return Ok(None);
        }
        Ok(Some(OrchestrationMessage {
            id,
            instance_id: new.instance_id.clone(),
            event: start,
            execution: None,
        }))
    }

    /// A message from outside (an event, a control message). Events to a finished instance
    /// are refused: nobody would ever read them. A rewind makes a Failed instance Pending at
    /// once, so that waiting for it does not return the failure being rewound.
    fn enqueue(
        &mut self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), Error> {
        if !self.ensure_target(instance_id, now) {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        };
        if let Event::EventRaised { name, .. } = &event
            && let Some(status) = instance.finished_status()
        {
            return Err(Error::InstanceFinished {
                instance_id: instance_id.to_owned(),
                status: status.to_string(),
                message: format!("it can no longer receive events (event `{name}` was not stored)"),
            });
        }
        if matches!(event, Event::ExecutionRewound { .. })
            && instance.row.status == RuntimeStatus::Failed
        {
            instance.row.status = RuntimeStatus::Pending;
            instance.row.updated_at = now;
        }
        // Never visible in the past: a late message is simply due now.
        let visible_at = visible_at.map_or(now, |at| truncate_millis(at).max(now));
        self.push_message(instance_id, visible_at, event, None, None);
        effects.work |= visible_at <= now;
        Ok(())
    }
}

/// Claiming work, and the leases on it.
impl State {
    /// Up to `limit` visible messages that `owner` may claim, of instances free for it,
    /// earliest visible first; they and their instances are leased to `owner`. Returned in
    /// queue order.
    fn claim_messages(
        &mut self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<OrchestrationMessage> {
        let mut ready: Vec<(DateTime<Utc>, i64)> = self
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now && claimable(m.lease.as_ref(), owner, now))
            .filter(|(_, m)| {
                self.instances
                    .get(&m.instance_id)
                    .is_some_and(|instance| free_for(instance.lease.as_ref(), owner, now))
            })
            .map(|(id, m)| (m.visible_at, *id))
            .collect();
        ready.sort_unstable();
        let mut ids: Vec<i64> = ready
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        let lease = Lease::new(owner, lease_until);
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(message) = self.messages.get_mut(&id) else {
                continue;
            };
            message.lease = Some(lease.clone());
            if let Some(instance) = self.instances.get_mut(&message.instance_id) {
                instance.lease = Some(lease.clone());
            }
            claimed.push(message.claimed(id));
        }
        claimed
    }

    /// Up to `limit` work items `owner` may claim, in queue order, leased to it.
    fn claim_activities(
        &mut self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> ClaimedActivities {
        let until = truncate_millis(lease_until);
        let limited = |name: &String| rules.iter().any(|rule| rule.name == *name);
        let mut waiting: Vec<(i32, i64)> = self
            .items
            .iter()
            .filter(|(_, item)| {
                item.claimable_by(owner, now) && names.contains(&item.name) && !limited(&item.name)
            })
            .map(|(id, item)| (item.priority, *id))
            .collect();
        waiting.sort_by_key(|(priority, id)| (std::cmp::Reverse(*priority), *id));
        let mut ids: Vec<i64> = waiting
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect();
        let mut held_back = false;
        for rule in rules.iter().filter(|rule| names.contains(&rule.name)) {
            let want = (limit as usize).saturating_sub(ids.len());
            if want == 0 {
                held_back = true;
                break;
            }
            let (picked, held) = self.claim_limited(owner, rule, want, now);
            ids.extend(picked);
            held_back |= held;
        }
        let items = ids
            .into_iter()
            .filter_map(|id| {
                let item = self.items.get_mut(&id)?;
                item.holder = owner.to_owned();
                item.lease_until = Some(until);
                item.attempt = item.attempt.saturating_add(1);
                Some(ActivityWorkItem {
                    id,
                    instance_id: item.instance_id.clone(),
                    seq: item.seq,
                    name: item.name.clone(),
                    input: item.input.clone(),
                    attempt: item.attempt,
                    execution: item.execution,
                    timeouts: item.timeouts,
                    deadline: item.deadline,
                    heartbeat: item.heartbeat.clone(),
                })
            })
            .collect();
        ClaimedActivities { items, held_back }
    }

    /// The ids of waiting items of a limited activity that `rule` lets a claim take now
    /// (recording their starts for its rate), and whether it left any waiting.
    fn claim_limited(
        &mut self,
        owner: &str,
        rule: &FlowRule,
        want: usize,
        now: DateTime<Utc>,
    ) -> (Vec<i64>, bool) {
        let mut usage = FlowUsage::default();
        let mut candidates: Vec<(i32, i64, Option<String>)> = Vec::new();
        for (id, item) in self.items.iter().filter(|(_, item)| item.name == rule.name) {
            if item.lease_until.is_some_and(|until| until >= now) {
                *usage.running.entry(item.flow_key.clone()).or_default() += 1;
            } else if item.claimable_by(owner, now) {
                candidates.push((item.priority, *id, item.flow_key.clone()));
            }
        }
        candidates.sort_by_key(|(priority, id, _)| (std::cmp::Reverse(*priority), *id));
        let candidates: Vec<(i64, Option<String>)> = candidates
            .into_iter()
            .map(|(_, id, key)| (id, key))
            .collect();
        if let Some(rate) = rule.limits.rate {
            self.count_starts(&rule.name, rate, now, &mut usage);
        }
        let picked = flow::pick(&rule.limits, &candidates, &usage, want);
        if rule.limits.rate.is_some() {
            for id in &picked {
                let key = self.items.get(id).and_then(|item| item.flow_key.clone());
                self.flow_starts.push((rule.name.clone(), key, now));
            }
        }
        let held = picked.len() < candidates.len();
        (picked, held)
    }

    /// Counts the starts of `name` a rate sees now, per key: within its period and within
    /// its current tenth ([`flow::tenth_start`]), forgetting older ones.
    fn count_starts(
        &mut self,
        name: &str,
        rate: flow::Rate,
        now: DateTime<Utc>,
        usage: &mut FlowUsage,
    ) {
        let period = chrono::Duration::milliseconds(rate.period_ms as i64);
        let tenth_start = flow::tenth_start(now.timestamp_millis(), rate.period_ms);
        self.flow_starts
            .retain(|(n, _, at)| n != name || *at > now - period);
        for (_, key, at) in self.flow_starts.iter().filter(|(n, _, _)| n == name) {
            *usage.started_in_period.entry(key.clone()).or_default() += 1;
            if at.timestamp_millis() >= tenth_start {
                *usage.started_in_tenth.entry(key.clone()).or_default() += 1;
            }
        }
    }

    /// Whether a flow instance still counts against its limits: its instance exists, is of
    /// its orchestrator and has not finished.
    fn flow_alive(&self, held: &FlowInstance) -> bool {
        self.instances
            .get(&held.instance_id)
            .is_some_and(|instance| {
                instance.row.name == held.name && !instance.row.status.is_terminal()
            })
    }

    /// Lets held instances run as far as `rules` allow (see [`Store::admit_instances`]).
    fn admit_instances(
        &mut self,
        rules: &[FlowRule],
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Admission {
        let mut admission = Admission::default();
        for rule in rules {
            let gone: Vec<i64> = self
                .flow_instances
                .iter()
                .filter(|(_, held)| {
                    held.name == rule.name && held.admitted && !self.flow_alive(held)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.flow_instances.remove(&id);
            }
            let mut usage = FlowUsage::default();
            let mut candidates: Vec<(i32, i64, Option<String>)> = Vec::new();
            let mut terminated = Vec::new();
            for (id, held) in self
                .flow_instances
                .iter()
                .filter(|(_, h)| h.name == rule.name)
            {
                if held.admitted {
                    *usage.running.entry(held.key.clone()).or_default() += 1;
                } else if self.messages.values().any(|m| {
                    m.instance_id == held.instance_id
                        && matches!(m.event, Event::ExecutionTerminated { .. })
                }) {
                    terminated.push(*id);
                } else {
                    candidates.push((held.priority, *id, held.key.clone()));
                }
            }
            candidates.sort_by_key(|(priority, id, _)| (std::cmp::Reverse(*priority), *id));
            let candidates: Vec<(i64, Option<String>)> = candidates
                .into_iter()
                .map(|(_, id, key)| (id, key))
                .collect();
            let starts_name = flow::orchestrator_starts(&rule.name);
            if let Some(rate) = rule.limits.rate {
                self.count_starts(&starts_name, rate, now, &mut usage);
            }
            let picked = flow::pick(&rule.limits, &candidates, &usage, usize::MAX);
            admission.waiting += (candidates.len() - picked.len()) as u64;
            for id in picked.iter().chain(&terminated) {
                // One being terminated goes, whatever the limits, and no longer counts.
                let instance_id = if terminated.contains(id) {
                    match self.flow_instances.remove(id) {
                        Some(held) => held.instance_id,
                        None => continue,
                    }
                } else {
                    let Some(held) = self.flow_instances.get_mut(id) else {
                        continue;
                    };
                    held.admitted = true;
                    if rule.limits.rate.is_some() {
                        self.flow_starts
                            .push((starts_name.clone(), held.key.clone(), now));
                    }
                    held.instance_id.clone()
                };
                if let Some(instance) = self.instances.get_mut(&instance_id)
                    && instance
                        .lease
                        .as_ref()
                        .is_some_and(|lease| lease.owner == FLOW_HOLD_OWNER)
                {
                    instance.lease = None;
                }
                for message in self
                    .messages
                    .values_mut()
                    .filter(|m| m.instance_id == instance_id)
                {
                    if message
                        .lease
                        .as_ref()
                        .is_some_and(|lease| lease.owner == FLOW_HOLD_OWNER)
                    {
                        message.lease = None;
                    }
                }
                admission.admitted.push(instance_id);
            }
        }
        if !admission.admitted.is_empty() {
            effects.work = true;
        }
        admission
    }

    /// Instances let run and held, per flow-controlled orchestrator and key.
    fn instance_flow_status(&self, names: &[String]) -> Vec<FlowStatus> {
        let rows = self
            .flow_instances
            .values()
            .filter(|held| names.contains(&held.name))
            .filter(|held| !held.admitted || self.flow_alive(held))
            .map(|held| (held.name.clone(), held.key.clone(), held.admitted));
        flow_counts(FlowKind::Orchestration, rows)
    }

    /// Stores heartbeats on the items `owner` holds; returns the ids of `running` it no
    /// longer holds.
    fn sync_activities(
        &mut self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        now: DateTime<Utc>,
    ) -> Vec<i64> {
        for beat in heartbeats {
            if let Some(item) = self.items.get_mut(&beat.item_id)
                && item.holder == owner
            {
                item.heartbeat = Some(beat.details.clone());
                item.heartbeat_at = Some(truncate_millis(now));
            }
        }
        running
            .iter()
            .copied()
            .filter(|id| self.items.get(id).is_none_or(|item| item.holder != owner))
            .collect()
    }

    /// The work items of an instance, in queue order.
    fn list_activities(&self, instance_id: &str) -> Vec<ActivityStatus> {
        self.items
            .iter()
            .filter(|(_, item)| item.instance_id == instance_id)
            .map(|(id, item)| ActivityStatus {
                id: *id,
                instance_id: item.instance_id.clone(),
                seq: item.seq,
                name: item.name.clone(),
                attempt: item.attempt,
                locked_by: item.lease_until.map(|_| item.holder.clone()),
                locked_until: item.lease_until,
                timeouts: item.timeouts,
                deadline: item.deadline,
                heartbeat: item.heartbeat.clone(),
                heartbeat_at: item.heartbeat_at,
                flow_key: item.flow_key.clone(),
                priority: item.priority,
            })
            .collect()
    }

    fn flow_status(&self, names: &[String], now: DateTime<Utc>) -> Vec<FlowStatus> {
        let rows = self
            .items
            .values()
            .filter(|item| names.contains(&item.name))
            .map(|item| {
                let running = item.lease_until.is_some_and(|until| until >= now);
                (item.name.clone(), item.flow_key.clone(), running)
            });
        flow_counts(FlowKind::Activity, rows)
    }

    /// Extends `owner`'s leases on the held instances (with the messages claimed for them,
    /// and their work items it holds) and on the held work items; returns the held instances
    /// `owner` no longer holds.
    fn renew(&mut self, owner: &str, held: &HeldWork, lease_until: DateTime<Utc>) -> Vec<String> {
        let until = truncate_millis(lease_until);
        let instances: HashSet<&str> = held.instances.iter().map(String::as_str).collect();
        let items: HashSet<i64> = held.activity_items.iter().copied().collect();
        for message in self.messages.values_mut() {
            if let Some(lease) = &mut message.lease
                && lease.owner == owner
                && instances.contains(message.instance_id.as_str())
            {
                lease.until = until;
            }
        }
        for (id, item) in &mut self.items {
            if item.holder == owner
                && (items.contains(id) || instances.contains(item.instance_id.as_str()))
            {
                item.lease_until = Some(until);
            }
        }
        let mut lost = Vec::new();
        for instance_id in &held.instances {
            let lease = self
                .instances
                .get_mut(instance_id)
                .and_then(|instance| instance.lease.as_mut())
                .filter(|lease| lease.owner == owner);
            match lease {
                Some(lease) => lease.until = until,
                None => lost.push(instance_id.clone()),
            }
        }
        lost
    }

    /// Releases `owner`'s lease on an instance, if it holds it. (The messages claimed for it
    /// stay claimed until their lease lapses, as in the database backends.)
    fn release(
        &mut self,
        instance_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) {
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        if instance.lease.as_ref().is_some_and(|l| l.owner == owner) {
            instance.lease = None;
            let calls = std::mem::take(&mut instance.calls);
            effects.work |= !calls.is_empty();
            self.enqueue_calls(calls.into_values(), None);
            // Its waiting messages are anyone's now.
            effects.work |= self
                .messages
                .values()
                .any(|m| m.instance_id == instance_id && m.lease.is_none() && m.visible_at <= now);
        }
    }

    /// Releases everything `owner` holds (a worker stopping): its instances and messages are
    /// free, its work items claimable by anyone (and still completed by it, if it does).
    fn release_all(&mut self, owner: &str, effects: &mut Effects) {
        let held_by_owner =
            |lease: &Option<Lease>| lease.as_ref().is_some_and(|l| l.owner == owner);
        let mut calls = Vec::new();
        for instance in self.instances.values_mut() {
            if held_by_owner(&instance.lease) {
                instance.lease = None;
                calls.extend(std::mem::take(&mut instance.calls).into_values());
            }
        }
        self.enqueue_calls(calls, None);
        for message in self.messages.values_mut() {
            if held_by_owner(&message.lease) {
                message.lease = None;
            }
        }
        for item in self.items.values_mut() {
            if item.holder == owner {
                item.lease_until = None;
            }
        }
        effects.work = true;
    }

    /// Turns calls kept in memory into work items: leased by `lease` (the worker keeping them
    /// asked), or unclaimed and counted as one attempt more (their worker let them go).
    /// Returns their ids.
    fn enqueue_calls(
        &mut self,
        calls: impl IntoIterator<Item = WorkItem>,
        lease: Option<DateTime<Utc>>,
    ) -> Vec<i64> {
        calls
            .into_iter()
            .map(|mut item| {
                item.lease_until = lease.map(truncate_millis);
                self.last_item_id += 1;
                self.items.insert(self.last_item_id, item);
                self.last_item_id
            })
            .collect()
    }

    /// Makes work items, leased to `owner`, of the calls it keeps in memory that are still
    /// recorded on instances it holds.
    fn persist_calls(
        &mut self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Vec<Option<i64>> {
        calls
            .iter()
            .map(|call| {
                let instance = self.instances.get_mut(&call.instance_id)?;
                if instance.lease.as_ref().is_none_or(|l| l.owner != owner) {
                    return None;
                }
                let kept = instance.calls.get(&call.seq)?;
                if kept.execution != call.execution || kept.holder != owner {
                    return None;
                }
                let item = instance.calls.remove(&call.seq)?;
                self.enqueue_calls([item], Some(lease_until)).pop()
            })
            .collect()
    }

    /// Makes claimable work items of the calls kept in memory on instances whose lease
    /// lapsed (or that nobody holds), and of those kept by a worker that no longer holds
    /// their instance (another took the lapsed lease over).
    fn recover_calls(&mut self, now: DateTime<Utc>, effects: &mut Effects) -> u64 {
        let mut calls = Vec::new();
        for instance in self.instances.values_mut() {
            let holder = instance
                .lease
                .as_ref()
                .filter(|l| l.until >= now)
                .map(|l| l.owner.clone());
            let (kept, lost): (BTreeMap<u64, WorkItem>, BTreeMap<u64, WorkItem>) =
                std::mem::take(&mut instance.calls)
                    .into_iter()
                    .partition(|(_, call)| holder.as_deref() == Some(call.holder.as_str()));
            instance.calls = kept;
            calls.extend(lost.into_values());
        }
        effects.work |= !calls.is_empty();
        self.enqueue_calls(calls, None).len() as u64
    }

    /// Gives `owner`'s claimed messages back, visible again from `visible_at`.
    fn abandon(
        &mut self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) {
        let visible_at = truncate_millis(visible_at);
        for id in ids {
            if let Some(message) = self.messages.get_mut(id)
                && message.lease.as_ref().is_some_and(|l| l.owner == owner)
            {
                message.lease = None;
                message.visible_at = visible_at;
                effects.work |= visible_at <= now;
            }
        }
    }
}

/// Committing turns and activity results.
impl State {
    /// Commits a turn atomically: everything is checked before anything changes.
    fn commit_turn(
        &mut self,
        turn: &TurnCommit,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<TurnCommitted, Error> {
        if let Some(new) = turn.instance_to_create()? {
            self.create_for_turn(new, turn)?;
        }
        self.check_turn(turn, now)?;
        let instance_id = turn.instance_id.as_str();
        let terminal = turn.status.is_some_and(RuntimeStatus::is_terminal);
        let ends_execution = turn.ends_execution();

        if let Some(instance) = self.instances.get_mut(instance_id) {
            if turn.reset_history {
                instance.history.clear();
            }
            instance.history.extend(turn.new_events.iter().cloned());
        }

        // What the turn used up, and what belonged to an execution that ended: the queued
        // results and timers of a replaced history, everything left for a finished instance.
        for id in &turn.consumed {
            self.messages.remove(id);
        }
        for id in &turn.completed_activities {
            self.items.remove(id);
        }
        if terminal {
            self.messages.retain(|_, m| m.instance_id != instance_id);
        }
        if turn.reset_history {
            self.messages
                .retain(|_, m| m.instance_id != instance_id || m.execution.is_none());
        }
        if ends_execution {
            self.items.retain(|_, item| item.instance_id != instance_id);
        }
        if !turn.cancelled_timers.is_empty() {
            self.messages.retain(|_, m| {
                let cancelled = matches!(m.event, Event::TimerFired { seq, .. }
                    if turn.cancelled_timers.contains(&seq));
                !(cancelled
                    && m.instance_id == instance_id
                    && m.execution == Some(turn.execution)
                    && m.lease.is_none())
            });
        }
        // Calls that ended (cancelled, or their results consumed): their records go, and
        // any work item made of one.
        let ended: Vec<u64> = turn
            .cancelled_activities
            .iter()
            .chain(&turn.finished_calls)
            .copied()
            .collect();
        if !ended.is_empty() {
            self.items.retain(|_, item| {
                item.instance_id != instance_id
                    || item.execution != turn.execution
                    || !ended.contains(&item.seq)
            });
        }
        if let Some(instance) = self.instances.get_mut(instance_id) {
            if ends_execution {
                instance.calls.clear();
            }
            for seq in &ended {
                instance.calls.remove(seq);
            }
        }

        // New work: activities (claimed by the turn's worker, which runs them), children,
        // messages.
        let activity_ids = turn
            .activities
            .iter()
            .map(|activity| {
                // Never for a turn that ends its execution: no one waits for the result.
                let in_memory = activity.in_memory && activity.run_here && !ends_execution;
                let item = WorkItem {
                    instance_id: turn.instance_id.clone(),
                    seq: activity.seq,
                    name: activity.name.clone(),
                    input: activity.input.clone(),
                    execution: turn.execution,
                    // An unclaimed item's first claim makes it its first attempt.
                    attempt: activity.attempt.max(1) - 1
                        + u32::from(activity.run_here || in_memory),
                    holder: turn.owner.clone(),
                    lease_until: activity.run_here.then(|| truncate_millis(turn.lease_until)),
                    timeouts: activity.timeouts,
                    deadline: activity.deadline,
                    heartbeat: activity.heartbeat.clone(),
                    heartbeat_at: None,
                    flow_key: activity.flow_key.clone(),
                    priority: activity.priority,
                };
                // A call whose result the same turn consumed (it ran before an earlier
                // attempt of the turn failed to commit) has ended already: no record, no
                // work item.
                if turn.finished_calls.contains(&activity.seq) {
                    return 0;
                }
                if in_memory {
                    if let Some(instance) = self.instances.get_mut(instance_id) {
                        instance.calls.insert(activity.seq, item);
                    }
                    return 0;
                }
                self.last_item_id += 1;
                self.items.insert(self.last_item_id, item);
                effects.work |= !activity.run_here;
                self.last_item_id
            })
            .collect();
        for child in &turn.new_instances {
            self.create_child(child, now, effects);
        }
        for message in &turn.messages {
            if terminal && message.instance_id == turn.instance_id {
                continue; // the instance is done: its own timers would only be dropped
            }
            if !self.ensure_target(&message.instance_id, now) {
                tracing::debug!(instance_id = %message.instance_id, "dropping a message to an instance that does not exist");
                continue;
            }
            let visible_at = truncate_millis(message.visible_at);
            let event = message.event.clone();
            self.push_message(
                &message.instance_id,
                visible_at,
                event,
                message.execution,
                None,
            );
            effects.work |= visible_at <= now;
        }

        if let Some(instance) = self.instances.get_mut(instance_id) {
            apply_status(instance, turn, terminal);
            if terminal {
                effects.finished.push(instance.row.clone());
            }
        }
        Ok(TurnCommitted {
            activity_ids,
            held_timers: Vec::new(),
        })
    }

    /// Refuses a turn with `Conflict` when another worker holds the instance, or what the
    /// turn consumed is not held by its worker (or is consumed twice), and as transient when
    /// the history moved on since the worker loaded it.
    /// The instance a turn starts ([`TurnCommit::create`]), leased to the turn's owner and
    /// without a start message; refused, changing nothing, when the id is taken by an
    /// instance that has not finished (a finished one is replaced). The turn's checks then
    /// hold by construction.
    fn create_for_turn(&mut self, new: &NewInstance, turn: &TurnCommit) -> Result<(), Error> {
        if let Some(existing) = self.instances.get(&new.instance_id) {
            if !existing.row.status.is_terminal() {
                return Err(Error::InstanceExists {
                    instance_id: new.instance_id.clone(),
                    status: existing.row.status.to_string(),
                });
            }
            self.forget(&new.instance_id);
        }
        let mut instance = Instance::orchestration(new);
        instance.lease = Some(Lease::new(&turn.owner, turn.lease_until));
        self.instances.insert(new.instance_id.clone(), instance);
        Ok(())
    }

    fn check_turn(&self, turn: &TurnCommit, now: DateTime<Utc>) -> Result<(), Error> {
        let Some(instance) = self.instances.get(&turn.instance_id) else {
            return Err(Error::InstanceNotFound(turn.instance_id.clone()));
        };
        let conflict = || Error::Conflict {
            instance_id: turn.instance_id.clone(),
        };
        let owner = turn.owner.as_str();
        if !free_for(instance.lease.as_ref(), owner, now) {
            return Err(conflict());
        }
        // Exactly once: each consumed message and completed work item is still there, held
        // by this worker (its lease may have lapsed, as long as nobody took it over), once.
        let mut seen = HashSet::new();
        for id in &turn.consumed {
            let held = self
                .messages
                .get(id)
                .and_then(|m| m.lease.as_ref())
                .is_some_and(|lease| lease.owner == owner);
            if !held || !seen.insert(*id) {
                return Err(conflict());
            }
        }
        let mut seen = HashSet::new();
        for id in &turn.completed_activities {
            let held = self.items.get(id).is_some_and(|item| item.holder == owner);
            if !held || !seen.insert(*id) {
                return Err(conflict());
            }
        }
        let history_len = instance.history.len() as u64;
        if !turn.reset_history && history_len != turn.history_start {
            return Err(Error::store_transient(format!(
                "the history of instance `{}` has {} events, but this worker expected {}; reloading it",
                turn.instance_id, history_len, turn.history_start
            )));
        }
        Ok(())
    }

    /// A sub-orchestration a turn starts. One whose id is taken by an instance that has not
    /// finished is not created: its parent gets a `SubOrchestrationFailed` message instead.
    fn create_child(&mut self, child: &NewInstance, now: DateTime<Utc>, effects: &mut Effects) {
        let Err(error) = self.create(child, None, effects) else {
            return;
        };
        if let Some(parent) = &child.parent {
            let failed = Event::SubOrchestrationFailed {
                seq: parent.seq,
                failure: error.to_failure(),
            };
            let execution = Some(parent.execution);
            self.push_message(&parent.instance_id, now, failed, execution, None);
            effects.work = true;
        }
    }

    /// Deletes a completed work item and enqueues its result, if `completion.owner` holds
    /// the item (anyone else's completion changes nothing). The result is claimed for the
    /// worker and returned when it also holds the instance, to be delivered in memory.
    fn complete_activity(
        &mut self,
        completion: &ActivityCompletion,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Option<OrchestrationMessage> {
        let owner = completion.owner.as_str();
        let held = self
            .items
            .get(&completion.item_id)
            .is_some_and(|item| item.holder == owner);
        if !held {
            return None;
        }
        self.items.remove(&completion.item_id);
        let instance = self.instances.get(&completion.instance_id)?;
        let claimed = instance
            .lease
            .as_ref()
            .is_some_and(|lease| lease.owner == owner && lease.until >= now);
        let lease = claimed.then(|| Lease::new(owner, completion.lease_until));
        let event = completion.event.clone();
        let execution = Some(completion.execution);
        let id = self.push_message(&completion.instance_id, now, event, execution, lease);
        if claimed {
            self.messages.get(&id).map(|message| message.claimed(id))
        } else {
            effects.work = true;
            None
        }
    }
}

/// Applies a committed turn to its instance's row: status, output or failure, custom status,
/// input, entity state; the lease stays with the turn's worker unless the instance finished.
fn apply_status(instance: &mut Instance, turn: &TurnCommit, terminal: bool) {
    let row = &mut instance.row;
    let at = truncate_millis(turn.now);
    if let Some(status) = turn.status {
        row.status = status;
    }
    let completed_at = terminal.then_some(at);
    if turn.reset_history {
        // A new history (continue-as-new, rewind): the old outcome goes with the old one.
        row.output = turn.output.clone();
        row.failure = turn.failure.clone();
        row.completed_at = completed_at;
    } else {
        row.output = turn.output.clone().or(row.output.take());
        row.failure = turn.failure.clone().or(row.failure.take());
        row.completed_at = completed_at.or(row.completed_at);
    }
    if let Some(custom_status) = &turn.custom_status {
        row.custom_status = Some(custom_status.clone());
    }
    if let Some(input) = &turn.input {
        row.input = input.clone();
    }
    row.updated_at = at;
    if let (Some(entity), Some(update)) = (&mut instance.entity, &turn.entity) {
        entity.state = update.state.clone();
        entity.lock_owner = update.lock_owner.clone();
    }
    instance.lease = (!terminal).then(|| Lease::new(&turn.owner, turn.lease_until));
}

/// Queries, purging, cleaning.
impl State {
    /// Orchestration instances matching the query, ordered by instance id.
    fn list_instances(&self, query: &InstanceQuery) -> Vec<InstanceStatus> {
        let limit = query.limit.unwrap_or(100).min(10_000) as usize;
        self.instances
            .iter()
            .filter(|(_, instance)| instance.entity.is_none())
            .map(|(_, instance)| &instance.row)
            .filter(|row| query.statuses.is_empty() || query.statuses.contains(&row.status))
            .filter(|row| {
                query
                    .instance_id_prefix
                    .as_deref()
                    .is_none_or(|prefix| row.instance_id.starts_with(prefix))
            })
            .filter(|row| created_within(row.created_at, query.created_from, query.created_to))
            .filter(|row| query.name.as_deref().is_none_or(|name| row.name == name))
            .filter(|row| {
                query
                    .after
                    .as_deref()
                    .is_none_or(|after| row.instance_id.as_str() > after)
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// Entities matching the query, ordered by name, then key (their instance ids' order).
    fn list_entities(&self, query: &EntityQuery) -> Vec<EntityStatus> {
        let limit = query.limit.unwrap_or(100).min(10_000) as usize;
        let after = query.after.as_ref().map(EntityId::instance_id);
        let key_prefix = query.key_prefix.as_deref().unwrap_or_default();
        self.instances
            .iter()
            .filter(|(id, _)| after.as_ref().is_none_or(|after| *id > after))
            .filter_map(|(id, instance)| instance.entity_status(id))
            .filter(|entity| {
                query
                    .name
                    .as_ref()
                    .is_none_or(|name| entity.id.name == *name)
            })
            .filter(|entity| entity.id.key.starts_with(key_prefix))
            .filter(|entity| query.include_empty || entity.state.is_some())
            .take(limit)
            .collect()
    }

    /// The earliest time a message nobody holds becomes visible, if it is after `now`.
    fn next_visible_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.messages
            .values()
            .filter(|m| m.lease.is_none() && m.visible_at > now)
            .map(|m| m.visible_at)
            .min()
    }

    /// Deletes the finished orchestration instances matching the query; returns how many.
    fn purge(&mut self, query: &PurgeQuery) -> u64 {
        let purged: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, instance)| {
                instance.finished_status().is_some_and(|status| {
                    query.statuses.is_empty() || query.statuses.contains(&status)
                })
            })
            .filter(|(id, _)| query.instance_id.as_ref().is_none_or(|only| only == *id))
            .filter(|(_, instance)| {
                created_within(
                    instance.row.created_at,
                    query.created_from,
                    query.created_to,
                )
            })
            .map(|(id, _)| id.clone())
            .collect();
        for instance_id in &purged {
            self.forget(instance_id);
        }
        purged.len() as u64
    }

    /// Releases locks held by orchestrations that are finished or gone, through an
    /// `EntityUnlock` message to the entity (which then runs what waited for the lock), and
    /// removes entities with no state, no lock and no pending message.
    fn clean_entities(&mut self, now: DateTime<Utc>, effects: &mut Effects) -> EntityCleanup {
        let running = |owner: &str| {
            self.instances
                .get(owner)
                .is_some_and(|instance| !instance.row.status.is_terminal())
        };
        let orphaned: Vec<(String, String)> = self
            .instances
            .iter()
            .filter_map(|(id, instance)| {
                let owner = instance.entity.as_ref()?.lock_owner.as_ref()?;
                (!running(owner)).then(|| (id.clone(), owner.clone()))
            })
            .collect();
        for (entity, owner) in &orphaned {
            let unlock = Event::EntityUnlock {
                owner: owner.clone(),
            };
            self.push_message(entity, now, unlock, None, None);
            effects.work = true;
        }
        let addressed: HashSet<&str> = self
            .messages
            .values()
            .map(|m| m.instance_id.as_str())
            .collect();
        let empty: Vec<String> = self
            .instances
            .iter()
            .filter(|(id, instance)| {
                instance
                    .entity
                    .as_ref()
                    .is_some_and(|entity| entity.state.is_none() && entity.lock_owner.is_none())
                    && !addressed.contains(id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &empty {
            self.instances.remove(id);
        }
        EntityCleanup {
            removed_empty: empty.len() as u64,
            released_locks: orphaned.len() as u64,
        }
    }

    /// Queue depths and orchestration counts by status, at `now`.
    fn stats(&self, now: DateTime<Utc>) -> StoreStats {
        let ready = self
            .messages
            .values()
            .filter(|m| m.visible_at <= now)
            .count() as u64;
        let delayed = self.messages.len() as u64 - ready;
        let instances = RuntimeStatus::ALL
            .into_iter()
            .map(|status| {
                let count = self
                    .instances
                    .values()
                    .filter(|instance| instance.entity.is_none() && instance.row.status == status)
                    .count() as u64;
                (status, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        let calls: usize = self.instances.values().map(|i| i.calls.len()).sum();
        StoreStats::new(ready, delayed, (self.items.len() + calls) as u64, instances)
    }
}

/// Whether `created_at` is at or after `from` and before `to` (each when given).
fn created_within(
    created_at: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> bool {
    from.is_none_or(|from| created_at >= from) && to.is_none_or(|to| created_at < to)
}

#[cfg(test)]
mod tests {
    //! What is particular to this store: time read from its clock, and lapsed leases not
    //! taken back by their holder. The rest of the contract is the conformance suite's
    //! (`tests/tests/conformance.rs`), which runs against this store too.

    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::store::{NewActivity, NewMessage};

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000).unwrap_or_default()
    }

    /// Instance `i` of `flow`, created now.
    fn instance_i(clock: &Clock) -> NewInstance {
        NewInstance {
            instance_id: "i".into(),
            name: "flow".into(),
            version: String::new(),
            input: Payload::null(),
            created_at: clock.now(),
            parent: None,
            flow: None,
        }
    }

    /// A store on a manual clock, with one instance whose first turn, committed by `w1`,
    /// set a timer due in an hour and released the instance.
    async fn store_with_a_timer() -> (MemoryStore, Clock, DateTime<Utc>) {
        let clock = Clock::manual(start());
        let store = MemoryStore::with_clock(clock.clone());
        store.create_instance(instance_i(&clock)).await.unwrap();
        let lease = clock.now() + TimeDelta::seconds(30);
        let claimed = store.claim_messages("w1", 10, lease).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let due = clock.now() + TimeDelta::hours(1);
        store
            .commit_turn(turn("w1", vec![claimed[0].id], &clock, due))
            .await
            .unwrap();
        store.release_instance("i", "w1").await.unwrap();
        (store, clock, due)
    }

    /// A turn of instance `i` that consumes `consumed` and sets a timer due at `due`.
    fn turn(owner: &str, consumed: Vec<i64>, clock: &Clock, due: DateTime<Utc>) -> TurnCommit {
        TurnCommit {
            instance_id: "i".into(),
            owner: owner.into(),
            history_start: 0,
            create: None,
            reset_history: false,
            execution: 0,
            new_events: vec![Event::OrchestratorStarted {
                timestamp: clock.now(),
            }],
            consumed,
            completed_activities: Vec::new(),
            finished_calls: Vec::new(),
            activities: Vec::new(),
            cancelled_activities: Vec::new(),
            cancelled_timers: Vec::new(),
            hold_timers: false,
            messages: vec![NewMessage {
                instance_id: "i".into(),
                visible_at: due,
                event: Event::TimerFired {
                    seq: 0,
                    fire_at: due,
                },
                execution: Some(0),
            }],
            new_instances: Vec::new(),
            status: Some(RuntimeStatus::Running),
            output: None,
            failure: None,
            custom_status: None,
            input: None,
            entity: None,
            lease_until: clock.now() + TimeDelta::seconds(30),
            now: clock.now(),
        }
    }

    fn lease(clock: &Clock) -> DateTime<Utc> {
        clock.now() + TimeDelta::seconds(30)
    }

    #[tokio::test]
    async fn a_timer_stays_invisible_until_the_clock_is_moved_past_it() {
        let (store, clock, due) = store_with_a_timer().await;
        assert!(
            store
                .claim_messages("w2", 10, lease(&clock))
                .await
                .unwrap()
                .is_empty()
        );
        clock.advance(Duration::from_secs(3_599)).unwrap();
        assert!(
            store
                .claim_messages("w2", 10, lease(&clock))
                .await
                .unwrap()
                .is_empty(),
            "a second early"
        );
        clock.advance_to(due).unwrap();
        let fired = store.claim_messages("w2", 10, lease(&clock)).await.unwrap();
        assert_eq!(fired.len(), 1);
        assert!(matches!(fired[0].event, Event::TimerFired { seq: 0, .. }));
    }

    #[tokio::test]
    async fn next_visible_at_follows_the_clock() {
        let (store, clock, due) = store_with_a_timer().await;
        assert_eq!(store.next_visible_at().await.unwrap(), Some(due));
        clock.advance(Duration::from_secs(1_800)).unwrap();
        assert_eq!(store.next_visible_at().await.unwrap(), Some(due));
        clock.advance(Duration::from_secs(1_800)).unwrap();
        assert_eq!(
            store.next_visible_at().await.unwrap(),
            None,
            "due now: no longer in the future"
        );
    }

    #[tokio::test]
    async fn stats_count_claimed_messages_as_ready_and_timers_as_delayed_by_the_clock() {
        let (store, clock, _) = store_with_a_timer().await;
        let stats = store.stats().await.unwrap().unwrap();
        assert_eq!((stats.messages_ready, stats.messages_delayed), (0, 1));
        assert_eq!(stats.instances, vec![(RuntimeStatus::Running, 1)]);
        clock.advance(Duration::from_secs(3_600)).unwrap();
        let stats = store.stats().await.unwrap().unwrap();
        assert_eq!((stats.messages_ready, stats.messages_delayed), (1, 0));
        // Claimed (a turn in progress), it is still work to do.
        let claimed = store.claim_messages("w1", 10, lease(&clock)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let stats = store.stats().await.unwrap().unwrap();
        assert_eq!((stats.messages_ready, stats.activity_items), (1, 0));
    }

    #[tokio::test]
    async fn a_lapsed_lease_is_taken_over_by_another_worker_not_by_its_holder() {
        let clock = Clock::manual(start());
        let store = MemoryStore::with_clock(clock.clone());
        store.create_instance(instance_i(&clock)).await.unwrap();
        let claimed = store.claim_messages("w1", 10, lease(&clock)).await.unwrap();
        let mut commit = turn("w1", vec![claimed[0].id], &clock, clock.now());
        commit.messages.clear();
        commit.activities.push(NewActivity {
            seq: 0,
            name: "slow".into(),
            input: Payload::null(),
            timeouts: Default::default(),
            deadline: None,
            heartbeat: None,
            run_here: true,
            in_memory: false,
            flow_key: None,
            priority: 0,
            attempt: 1,
        });
        let item = store.commit_turn(commit).await.unwrap().activity_ids[0];
        store
            .enqueue(
                "i",
                Event::EventRaised {
                    name: "e".into(),
                    data: Payload::null(),
                },
                None,
            )
            .await
            .unwrap();
        let event = store.claim_messages("w1", 10, lease(&clock)).await.unwrap();
        assert_eq!(event.len(), 1);

        // A day passes while w1 still runs the activity and holds the event.
        clock.advance(Duration::from_secs(86_400)).unwrap();
        assert!(
            store
                .claim_activities("w1", &["slow".to_owned()], &[], 10, lease(&clock))
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            store
                .claim_messages("w1", 10, lease(&clock))
                .await
                .unwrap()
                .is_empty()
        );
        let stats = store.stats().await.unwrap().unwrap();
        assert_eq!((stats.messages_ready, stats.activity_items), (1, 1));

        // Another worker takes both over, as after a crash.
        let taken = store
            .claim_activities("w2", &["slow".to_owned()], &[], 10, lease(&clock))
            .await
            .unwrap()
            .items;
        assert_eq!((taken[0].id, taken[0].attempt), (item, 2));
        let taken = store.claim_messages("w2", 10, lease(&clock)).await.unwrap();
        assert_eq!(taken[0].id, event[0].id);
    }

    #[test]
    fn the_store_reads_its_own_clock() {
        let clock = Clock::manual(start());
        let store = MemoryStore::with_clock(clock.clone());
        clock.advance(Duration::from_secs(60)).unwrap();
        assert_eq!(store.clock().now(), start() + TimeDelta::seconds(60));
        assert!(!MemoryStore::new().clock().is_manual());
        assert!(format!("{store:?}").starts_with("MemoryStore"));
    }
}
