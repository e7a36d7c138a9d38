//! The storage contract: what a backend (SQLite, PostgreSQL) must do, as the [`Store`] trait.
//!
//! The store holds, per instance, its history and a status row, and two queues:
//!
//! * the **orchestration queue**: messages to instances (`ExecutionStarted`, activity results,
//!   fired timers, raised events), each visible from a time (timers are messages visible at
//!   their fire time);
//! * the **activity queue**: work items for activity workers.
//!
//! Work is claimed under a lease (an owner id and an expiry): a worker that dies loses its
//! leases when they lapse and another worker takes the work over. A turn is committed in one
//! transaction ([`Store::commit_turn`]): history appended, consumed messages deleted, new work
//! enqueued, status updated. An activity result is committed with the deletion of its work
//! item, also in one transaction ([`Store::complete_activity`]). Backends batch concurrent
//! calls into shared transactions (group commit); callers just call.
//!
//! Backends live in other crates (`duractor-sqlx`); this module has no database code.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::error::{Error, Failure};
use crate::flow::FlowRule;
use crate::history::{Event, ParentInstance, Payload};
use crate::id::EntityId;
use crate::panics::lock;
use crate::timeouts::ActivityTimeouts;

/// The status of an orchestration instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuntimeStatus {
    /// Created; its first turn has not run yet.
    Pending,
    /// Started and not finished.
    Running,
    /// The orchestrator returned a value.
    Completed,
    /// The orchestrator returned an error, panicked, or replay detected nondeterminism.
    Failed,
    /// Terminated from outside.
    Terminated,
    /// Suspended from outside: it runs nothing until resumed.
    Suspended,
}

impl RuntimeStatus {
    /// All statuses.
    pub const ALL: [RuntimeStatus; 6] = [
        RuntimeStatus::Pending,
        RuntimeStatus::Running,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Terminated,
        RuntimeStatus::Suspended,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Pending => "Pending",
            RuntimeStatus::Running => "Running",
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Terminated => "Terminated",
            RuntimeStatus::Suspended => "Suspended",
        }
    }

    /// `true` for Completed, Failed and Terminated: the instance will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Completed | RuntimeStatus::Failed | RuntimeStatus::Terminated
        )
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuntimeStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        RuntimeStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown status `{s}`; expected one of Pending, Running, Completed, Failed, Terminated, Suspended"
                ))
            })
    }
}

/// An instance's status row: what clients query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance id.
    pub instance_id: String,
    /// The orchestrator's registered name.
    pub name: String,
    /// The orchestrator version stamped at start.
    pub version: String,
    /// The status.
    pub status: RuntimeStatus,
    /// The input.
    pub input: Payload,
    /// The output, once Completed; the reason (a JSON string), once Terminated.
    pub output: Option<Payload>,
    /// The failure, once Failed.
    pub failure: Option<Failure>,
    /// The last custom status the orchestrator set.
    pub custom_status: Option<Payload>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its status row last changed.
    pub updated_at: DateTime<Utc>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A new instance to create ([`Store::create_instance`]).
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The instance id (unique among pending and running instances).
    pub instance_id: String,
    /// Orchestrator name.
    pub name: String,
    /// Orchestrator version.
    pub version: String,
    /// Input.
    pub input: Payload,
    /// Creation time; the `ExecutionStarted` message is visible from then.
    pub created_at: DateTime<Utc>,
    /// The parent, for sub-orchestrations.
    pub parent: Option<ParentInstance>,
    /// Held back by its orchestrator's flow-control limits: created Pending and held (with
    /// its messages) until [`Store::admit_instances`] lets it run.
    pub flow: Option<FlowHold>,
}

/// How an instance of a flow-controlled orchestrator waits for its turn to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowHold {
    /// Its flow-control key (the orchestrator's [`FlowControl::key`](crate::flow::FlowControl::key)
    /// read from the input).
    pub key: Option<String>,
    /// Its priority among held instances (higher runs first, then older).
    pub priority: i32,
}

/// The lease owner of held instances ([`NewInstance::flow`]): no worker claims their messages
/// until [`Store::admit_instances`] releases them; restarts and lease resets leave them held.
pub const FLOW_HOLD_OWNER: &str = "duractor.flow";

/// Until when held instances are leased to [`FLOW_HOLD_OWNER`]: for ever, in practice.
pub fn flow_hold_until() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(253_402_300_799_000).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What [`Store::admit_instances`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The instances it let run.
    pub admitted: Vec<String>,
    /// Instances still held (of the orchestrators it looked at).
    pub waiting: u64,
}

/// A claimed message to an orchestration instance.
#[derive(Debug, Clone)]
pub struct OrchestrationMessage {
    /// Queue id; [`TurnCommit::consumed`] deletes it.
    pub id: i64,
    /// Target instance.
    pub instance_id: String,
    /// The event the message delivers.
    pub event: Event,
    /// The execution the message belongs to (activity results, timers); `None` for messages
    /// to whichever execution is current (events, control messages).
    pub execution: Option<u32>,
}

/// What [`Store::claim_activities`] took.
#[derive(Debug, Default)]
pub struct ClaimedActivities {
    /// The work items claimed, leased to the claiming worker.
    pub items: Vec<ActivityWorkItem>,
    /// Work items of a limited activity may still wait: its limits held some back, another
    /// worker's claim of it held its rule, or the claim's `limit` was reached before its rule
    /// was looked at. Limits free up as attempts end anywhere and as rate windows pass, so
    /// the worker claims again soon while this is true (and only then: an idle worker with
    /// limited activities makes no claims beyond its poll).
    pub held_back: bool,
}

/// A claimed activity work item.
#[derive(Debug, Clone)]
pub struct ActivityWorkItem {
    /// Queue id.
    pub id: i64,
    /// The instance that called the activity.
    pub instance_id: String,
    /// The call's sequence number in that instance.
    pub seq: u64,
    /// Activity name.
    pub name: String,
    /// Activity input.
    pub input: Payload,
    /// The attempt: the retry policy's attempt number on its first delivery (1 for a call's
    /// first try), one more each time a lease lapsed (crash) and the item was claimed again.
    pub attempt: u32,
    /// The execution of the instance that called it.
    pub execution: u32,
    /// The call's start-to-close and heartbeat timeouts (the worker enforces them).
    pub timeouts: ActivityTimeouts,
    /// When the call's schedule-to-close timeout ends it, if it has one: an attempt still
    /// running then is stopped, and one not started by then fails without running.
    pub deadline: Option<DateTime<Utc>>,
    /// The last heartbeat details recorded for the call (by an earlier delivery, or carried
    /// over from the attempt before a retry): where a resumed attempt picks up.
    pub heartbeat: Option<Payload>,
}

/// A new activity call to enqueue with a turn.
#[derive(Debug, Clone)]
pub struct NewActivity {
    /// The call's sequence number.
    pub seq: u64,
    /// Activity name.
    pub name: String,
    /// Activity input.
    pub input: Payload,
    /// The call's timeouts (start-to-close and heartbeat are stored with the work item).
    pub timeouts: ActivityTimeouts,
    /// When the call's schedule-to-close timeout ends it.
    pub deadline: Option<DateTime<Utc>>,
    /// Heartbeat details the first attempt starts from (a retry of an attempt that
    /// heartbeated).
    pub heartbeat: Option<Payload>,
    /// Whether the turn's worker runs it (it has the activity registered): the item is then
    /// claimed by `owner` with the turn. Otherwise it is enqueued unclaimed, for a worker that
    /// has the activity (activity-only workers).
    pub run_here: bool,
    /// Whether the turn's worker keeps the call in memory instead of a work item (with
    /// `run_here`, on a store that [keeps calls in memory](Store::keeps_calls_in_memory)):
    /// the store records the call on the instance's row, which the turn writes anyway, and
    /// writes no queue row. The call becomes a work item when the worker asks
    /// ([`Store::persist_calls`]: it runs long, or heartbeats), when it releases the
    /// instance, or when its lease on the instance lapses ([`Store::recover_calls`]); the
    /// turn that consumes its result lists it in [`TurnCommit::finished_calls`]. Ignored in
    /// a turn that ends its execution (a terminal status, or `reset_history`): such a call
    /// gets a work item, and the turn leaves no call on the row.
    pub in_memory: bool,
    /// The flow-control key of the call (its activity's [`FlowControl::key`](crate::flow::FlowControl::key) read from the
    /// input), for limits per key.
    pub flow_key: Option<String>,
    /// Its priority among waiting work (higher first; default 0).
    pub priority: i32,
    /// The attempt number its first delivery gets: 1, or for a retry the retry policy's
    /// attempt number (each delivery after a crash adds one).
    pub attempt: u32,
}

/// Heartbeat details of a running work item, recorded by [`Store::sync_activities`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityHeartbeat {
    /// The work item.
    pub item_id: i64,
    /// The details the activity passed to `ActivityContext::heartbeat`.
    pub details: Payload,
}

/// An activity work item as the management API shows it ([`Store::list_activities`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityStatus {
    /// Queue id.
    pub id: i64,
    /// The calling instance.
    pub instance_id: String,
    /// The call's sequence number.
    pub seq: u64,
    /// Activity name.
    pub name: String,
    /// The attempt: the retry policy's attempt number, one more for each delivery after a
    /// crash.
    pub attempt: u32,
    /// The worker running it, if any.
    pub locked_by: Option<String>,
    /// Until when that worker holds it.
    pub locked_until: Option<DateTime<Utc>>,
    /// Its start-to-close and heartbeat timeouts.
    pub timeouts: ActivityTimeouts,
    /// When its schedule-to-close timeout ends it.
    pub deadline: Option<DateTime<Utc>>,
    /// The last heartbeat details.
    pub heartbeat: Option<Payload>,
    /// When they were recorded.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Its flow-control key.
    pub flow_key: Option<String>,
    /// Its priority among waiting work.
    pub priority: i32,
}

/// What is running and waiting of one limited activity or orchestrator and key
/// ([`Store::flow_status`], [`Store::instance_flow_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowStatus {
    /// An activity or an orchestrator.
    #[serde(default)]
    pub kind: FlowKind,
    /// The activity or orchestrator.
    pub name: String,
    /// The key (`None`: the limit is not per key).
    pub key: Option<String>,
    /// Activity attempts running (leased); orchestrations let run and not finished.
    pub running: u32,
    /// Work items waiting to be claimed; orchestrations held back (Pending).
    pub waiting: u32,
}

/// What a [`FlowStatus`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FlowKind {
    /// Activity work items.
    #[default]
    Activity,
    /// Orchestration instances.
    Orchestration,
}

/// A message to enqueue for an instance, visible from `visible_at`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Target instance.
    pub instance_id: String,
    /// When it becomes visible (a timer's fire time; now for everything else).
    pub visible_at: DateTime<Utc>,
    /// The event it delivers.
    pub event: Event,
    /// The execution it belongs to (see [`OrchestrationMessage::execution`]).
    pub execution: Option<u32>,
}

/// Everything one orchestration turn changes, committed atomically by [`Store::commit_turn`].
#[derive(Debug, Clone)]
pub struct TurnCommit {
    /// The instance.
    pub instance_id: String,
    /// The lease owner running the turn; the commit fails with a lost-lease error if another
    /// owner holds the instance now.
    pub owner: String,
    /// History index of the first new event (the current history length).
    pub history_start: u64,
    /// The instance this turn starts, created by the same commit
    /// ([`Store::creates_with_turn`]): leased to `owner` and already past its first turn, its
    /// `ExecutionStarted` (the first of `new_events`) never queued. It fails as
    /// [`create_instance`](Store::create_instance) does ([`Error::InstanceExists`] for an id
    /// a pending or running instance has; a finished one is replaced) and then writes
    /// nothing. Such a turn consumes nothing (`consumed` and `completed_activities` empty)
    /// and starts at history index 0.
    pub create: Option<NewInstance>,
    /// Replace the whole history with `new_events` (`history_start` is then 0): for
    /// continue-as-new and rewind. Also drops the instance's queued activity results and
    /// timers, which belong to the old history.
    pub reset_history: bool,
    /// The execution that made the turn (stamped on new activities).
    pub execution: u32,
    /// Events to append.
    pub new_events: Vec<Event>,
    /// Claimed messages the turn consumed (deleted).
    pub consumed: Vec<i64>,
    /// Activity work items whose results were delivered to the turn in memory (by the worker
    /// that ran them) instead of as queue messages: deleted with the turn, so an activity's
    /// completion and the turn that consumes it commit together.
    pub completed_activities: Vec<i64>,
    /// Calls of this execution kept in memory ([`NewActivity::in_memory`]) whose results the
    /// turn consumed (by `seq`): they are no longer recorded on the instance's row, and a
    /// work item made of one meanwhile ([`Store::persist_calls`]) is deleted. A call the turn
    /// both schedules ([`Self::activities`]) and finishes gets neither a record nor a work
    /// item (its id is 0): its worker ran it before an earlier attempt of this turn failed to
    /// commit.
    pub finished_calls: Vec<u64>,
    /// Activities to enqueue, claimed by `owner` until `lease_until` (the owner runs them).
    pub activities: Vec<NewActivity>,
    /// Calls of this execution the turn cancelled (by `seq`): their work items are deleted,
    /// which is how the worker running one learns of it ([`Store::sync_activities`]), and
    /// calls kept in memory are no longer recorded.
    pub cancelled_activities: Vec<u64>,
    /// Timers of this execution the turn cancelled (by `seq`): their queued `TimerFired`
    /// messages are deleted unless a worker has claimed them already (a claimed one is
    /// consumed by a turn as usual), so a cancelled timer does not wake the instance later.
    /// A timer held for `owner` ([`Self::hold_timers`]) counts as claimed: the owner lists
    /// it in [`Self::consumed`] when it drops it.
    pub cancelled_timers: Vec<u64>,
    /// Hold the turn's new timers for `owner`: each `TimerFired` message to this instance
    /// not yet due is stored leased to `owner` until `lease_until` (so no claim takes it
    /// while the lease is renewed) and returned in [`TurnCommitted::held_timers`], for the
    /// owner to deliver from memory at its due time instead of claiming it then. Releasing
    /// the instance ([`Store::release_instance`]) lets its held timers not yet due go. A
    /// store may ignore this and return none (the owner then claims them when due).
    pub hold_timers: bool,
    /// Messages to enqueue: timers, events to this instance (continue-as-new), results to a
    /// parent, control messages to children.
    pub messages: Vec<NewMessage>,
    /// Sub-orchestrations to create. One whose id is taken by a running instance is not
    /// created; its parent gets a `SubOrchestrationFailed` message instead.
    pub new_instances: Vec<NewInstance>,
    /// New status (`None` leaves it as it is, for a turn that only consumed late messages).
    pub status: Option<RuntimeStatus>,
    /// Output (Completed).
    pub output: Option<Payload>,
    /// Failure (Failed).
    pub failure: Option<Failure>,
    /// New custom status, if changed.
    pub custom_status: Option<Payload>,
    /// New input for the status row: the next execution's, when the turn continues as new
    /// (the status shows the current execution's input).
    pub input: Option<Payload>,
    /// For entities: the state and lock after the batch of operations this commit records.
    pub entity: Option<EntityUpdate>,
    /// The lease expiry for enqueued activities and the instance.
    pub lease_until: DateTime<Utc>,
    /// Turn time (status `updated_at`).
    pub now: DateTime<Utc>,
}

impl TurnCommit {
    /// The instance this turn creates ([`Self::create`]), if any; refused as invalid unless
    /// the turn is that instance's first (history index 0), consumes nothing and the instance
    /// is not held by flow control.
    pub fn instance_to_create(&self) -> Result<Option<&NewInstance>, Error> {
        let Some(instance) = &self.create else {
            return Ok(None);
        };
        let first_turn = instance.instance_id == self.instance_id
            && instance.flow.is_none()
            && self.history_start == 0
            && self.consumed.is_empty()
            && self.completed_activities.is_empty();
        if !first_turn {
            return Err(Error::InvalidArgument(format!(
                "a turn of instance `{}` that creates its instance must be its first turn, \
                 consume nothing and not be held by flow control",
                self.instance_id
            )));
        }
        Ok(Some(instance))
    }

    /// Whether the turn ends its execution: the instance ends (a terminal status) or
    /// continues as new (`reset_history`). Its timers, work items and calls kept in memory
    /// go with it.
    pub fn ends_execution(&self) -> bool {
        self.reset_history || self.status.is_some_and(RuntimeStatus::is_terminal)
    }
}

/// An entity's state and critical-section lock after a batch of its operations.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityUpdate {
    /// The state (`None`: the entity has no state — new, or deleted).
    pub state: Option<Payload>,
    /// The orchestration instance holding the entity in a critical section.
    pub lock_owner: Option<String>,
}

/// An entity as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityStatus {
    /// The entity.
    pub id: EntityId,
    /// Its last committed state (`None`: no state).
    pub state: Option<Payload>,
    /// The orchestration instance holding it in a critical section.
    pub lock_owner: Option<String>,
    /// When it was first addressed.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
}

impl EntityStatus {
    /// The state deserialized as `T` (`None` when the entity has no state).
    pub fn state<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.state
            .as_ref()
            .map(|p| p.decode_as(format_args!("the state of entity `{}`", self.id)))
            .transpose()
    }
}

/// Filters for [`Store::list_entities`].
#[derive(Debug, Clone, Default)]
pub struct EntityQuery {
    /// Only entities of this name.
    pub name: Option<String>,
    /// Only keys starting with this prefix.
    pub key_prefix: Option<String>,
    /// Also entities without state (default: only those with state).
    pub include_empty: bool,
    /// At most this many (default 100).
    pub limit: Option<u32>,
    /// Continue after this entity (paging; results are ordered by name, then key).
    pub after: Option<EntityId>,
}

/// What [`Store::clean_entities`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCleanup {
    /// Entities without state and without pending messages, removed.
    pub removed_empty: u64,
    /// Locks held by orchestrations that have finished (or no longer exist), released.
    pub released_locks: u64,
}

/// What a worker holds in memory and keeps leased ([`Store::renew_leases`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldWork {
    /// Loaded instances and entities: their rows, and the messages and activity work items
    /// leased to the worker for them.
    pub instances: Vec<String>,
    /// Activity work items queued or running on the worker (whatever their instance).
    pub activity_items: Vec<i64>,
}

/// What [`Store::commit_turn`] returns.
#[derive(Debug, Clone, Default)]
pub struct TurnCommitted {
    /// The queue ids given to [`TurnCommit::activities`], in order; 0 for a call kept in
    /// memory ([`NewActivity::in_memory`]), which has no work item.
    pub activity_ids: Vec<i64>,
    /// The timers the store holds for the turn's owner ([`TurnCommit::hold_timers`]): their
    /// `TimerFired` messages, due at their `fire_at`, leased to the owner.
    pub held_timers: Vec<OrchestrationMessage>,
}

/// The result of an activity, committed by [`Store::complete_activity`].
#[derive(Debug, Clone)]
pub struct ActivityCompletion {
    /// The work item (deleted).
    pub item_id: i64,
    /// The instance to notify.
    pub instance_id: String,
    /// The execution that called the activity.
    pub execution: u32,
    /// `TaskCompleted` or `TaskFailed`.
    pub event: Event,
    /// The worker completing it. If it also holds the instance, the result message is claimed
    /// for it and returned, so it can be delivered in memory without a poll.
    pub owner: String,
    /// Lease expiry for a message claimed that way.
    pub lease_until: DateTime<Utc>,
}

/// A call an instance keeps in memory ([`NewActivity::in_memory`]), by its instance,
/// execution and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoryCall {
    /// The calling instance.
    pub instance_id: String,
    /// The execution that made the call (a later execution may use its seq again).
    pub execution: u32,
    /// The call's sequence number.
    pub seq: u64,
}

/// Filters for [`Store::list_instances`].
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    /// Only these statuses (all when empty).
    pub statuses: Vec<RuntimeStatus>,
    /// Only ids starting with this prefix.
    pub instance_id_prefix: Option<String>,
    /// Only instances of this orchestrator (its registered name).
    pub name: Option<String>,
    /// Only instances created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only instances created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// At most this many (default 100).
    pub limit: Option<u32>,
    /// Continue after this instance id (paging; results are ordered by instance id).
    pub after: Option<String>,
}

/// Which finished instances [`Store::purge_instances`] deletes. Only Completed, Failed and
/// Terminated instances are ever purged.
#[derive(Debug, Clone, Default)]
pub struct PurgeQuery {
    /// Only this instance.
    pub instance_id: Option<String>,
    /// Only these statuses (all finished ones when empty).
    pub statuses: Vec<RuntimeStatus>,
    /// Only instances created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only instances created before this time.
    pub created_to: Option<DateTime<Utc>>,
}

/// A storage backend. Implemented by `duractor_sqlx::SqliteStore` and `PostgresStore`.
///
/// Implementations must make every method atomic, return [`Error::Store`] with
/// `transient: true` for failures that may pass (connection lost, database busy) after
/// retrying what they can themselves, and call [`StoreEvents`] hooks after commits.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Prepares the store for a worker with this owner id: takes whatever exclusive access the
    /// backend needs and releases leases that a previous, dead worker left behind where the
    /// backend can know it is dead.
    async fn register_worker(&self, owner: &str) -> Result<(), Error>;

    /// Called when a worker stops cleanly: expires its leases so other workers can take its
    /// work at once, and gives up what `register_worker` took.
    async fn unregister_worker(&self, owner: &str) -> Result<(), Error>;

    /// Called when a worker stops claiming orchestration work (its runtime is shutting down
    /// and drains what it holds), before [`unregister_worker`](Self::unregister_worker): a
    /// backend that leaves new work to particular workers leaves none to this one from now
    /// on. The default does nothing.
    async fn stop_claiming(&self, owner: &str) -> Result<(), Error> {
        let _ = owner;
        Ok(())
    }

    /// The messages this store was handed for the worker `owner` to run without a claim,
    /// already leased to it (a backend whose clients lease a start to one worker and tell it
    /// in memory: PostgreSQL), taken once; [`StoreEvents::notify_offered`] says some came.
    /// Their lease may be short (PostgreSQL's: 3 s): the runtime renews its leases within a
    /// second of taking them. The default has none; a store that wraps another must forward
    /// this, or what the inner store was handed waits until its lease lapses and is claimed.
    fn take_offered(&self, owner: &str) -> Vec<OrchestrationMessage> {
        let _ = owner;
        Vec::new()
    }

    /// Creates an instance and enqueues its `ExecutionStarted` message. Fails with
    /// [`Error::InstanceExists`] if the id is used by a pending or running instance; a
    /// finished instance with the same id is replaced (its history is deleted).
    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error>;

    /// Creates an instance as [`create_instance`](Self::create_instance) does and, in the same
    /// commit, leases it and its `ExecutionStarted` message to `owner` until `lease_until`,
    /// returning the message: a worker's own client starts an instance and hands the message
    /// to that worker, which runs the first turn without claiming it (a start in one commit).
    /// The default creates the instance and returns `None`; the worker then claims it as any
    /// other.
    async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let _ = (owner, lease_until);
        self.create_instance(instance).await.map(|()| None)
    }

    /// Enqueues a message for an instance (an `EventRaised`, or a control message such as
    /// `ExecutionTerminated`). Fails with [`Error::InstanceNotFound`] if the instance does not
    /// exist — except for entities (`@name@key`), which exist from their first message on —
    /// and an `EventRaised` with [`Error::InstanceFinished`] if the instance has finished
    /// (checked in the same transaction, so an event is never stored for an instance that
    /// can no longer read it). The message is visible from `visible_at` (now when `None`). An `ExecutionRewound` also
    /// sets a Failed instance's status to Pending, so that waiting for it does not return the
    /// failure being rewound.
    async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error>;

    /// Gives claimed messages back, visible again from `visible_at` (a worker that must not
    /// run an instance, e.g. of another version, leaves it for others).
    async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error>;

    /// Deletes finished instances matching `query` (status row, history, queued messages);
    /// returns how many were deleted.
    async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error>;

    /// Claims up to `limit` visible orchestration messages whose instances are free (or
    /// already held by `owner`), and leases those instances to `owner` until `lease_until`.
    /// Messages are returned in queue order.
    ///
    /// Every lease deadline a caller passes (here, in [`TurnCommit::lease_until`],
    /// [`ActivityCompletion::lease_until`], [`renew_leases`](Self::renew_leases)) is what the
    /// caller wants as of the call; a backend that runs the call later (queued behind a slow
    /// batch, waiting for a connection) moves it by that wait, so a lease is never shorter
    /// than asked from when the work is leased.
    async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error>;

    /// Claims up to `limit` activity work items that nobody holds (or whose lease lapsed), of
    /// the activities named in `names` (those the worker can run: an activity-only worker
    /// leaves the others to workers that have them), higher priority first, then oldest.
    ///
    /// Items of an activity with a rule in `rules` are taken only as far as its limits allow
    /// ([`crate::flow::pick`] over what runs now and what started recently, per key), with
    /// the claims of that activity serialized across workers so two claims never both take
    /// the last free slot; a claim records the starts its rate counts, and says whether it
    /// left any of their items waiting ([`ClaimedActivities::held_back`]).
    async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error>;

    /// Running and waiting work items of the activities in `names`, per activity and key.
    async fn flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error>;

    /// Lets held instances ([`NewInstance::flow`]) of the orchestrators with a rule in `rules`
    /// run as far as their limits allow ([`crate::flow::pick`] over the instances let run and
    /// not finished, and those let run within the rate's period, per key), higher priority
    /// first, then older; a held instance with an `ExecutionTerminated` queued is let go
    /// whatever the limits (it ends at once). Admissions of one orchestrator are serialized
    /// across workers. Released instances are claimed as any others.
    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error>;

    /// Instances let run and not finished, and held, of the orchestrators in `names`, per
    /// orchestrator and key.
    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error>;

    /// Commits one turn atomically (see [`TurnCommit`]).
    async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error>;

    /// Whether [`commit_turn`](Self::commit_turn) can create the instance it commits a turn
    /// of ([`TurnCommit::create`]): a worker's own client then starts an instance by handing
    /// it to the worker, which commits the creation together with the first turn (one
    /// commit instead of two). The default is `false`: the client creates the instance
    /// first ([`create_instance_claimed`](Self::create_instance_claimed)).
    fn creates_with_turn(&self) -> bool {
        false
    }

    /// Deletes a completed work item and enqueues its result for the instance, atomically.
    /// Returns the result message when it was claimed for `completion.owner`.
    async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error>;

    /// Extends `owner`'s leases on what it holds — the instances in `held` (their rows and
    /// the messages claimed for them) and the activity work items in `held` — to
    /// `lease_until`, and returns the instances of `held` that `owner` no longer holds (its
    /// lease lapsed and another worker took them): the worker gives up their in-memory state.
    ///
    /// Leases on anything else `owner` holds are left to lapse, so work a worker lost track of
    /// (a claim whose answer was lost) is claimed again within a lease period.
    async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error>;

    /// Records `heartbeats` (with the time `now`) on the work items `owner` holds, and
    /// returns the ids of `running` that `owner` no longer holds: deleted because their call
    /// was cancelled or their orchestration ended, or taken over by another worker after a
    /// lapsed lease. The worker cancels those attempts.
    async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, Error>;

    /// The activity work items of an instance (queued or running), in queue order. Calls
    /// kept in memory ([`NewActivity::in_memory`]) have no work item until they are
    /// persisted ([`persist_calls`](Self::persist_calls)).
    async fn list_activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error>;

    /// Whether a finish committed by any process on this store reaches this process's
    /// [`events`](Self::events) with the instance's row
    /// ([`StoreEvents::notify_finished_with`]), as PostgreSQL's notifications bring it: a
    /// [`Client`](crate::Client) then watches the finish of each instance it starts from
    /// before creating it, and its first wait for one needs no status read. The default is
    /// `false`: a finish in another process may come unannounced, or without its row.
    fn announces_finished_rows(&self) -> bool {
        false
    }

    /// Whether the store can keep calls in memory ([`NewActivity::in_memory`]): record them
    /// on the instance's row instead of as work items, and implement
    /// [`persist_calls`](Self::persist_calls) and [`recover_calls`](Self::recover_calls).
    /// The default is `false`: every call gets a work item.
    fn keeps_calls_in_memory(&self) -> bool {
        false
    }

    /// Turns calls `owner` keeps in memory into work items leased to it until `lease_until`
    /// (an attempt that runs long enough to heartbeat, or to be listed): each is no longer
    /// recorded on its instance's row, and its work item's attempt is the call's. Returns
    /// each call's queue id, in order; `None` for a call no longer recorded (its result was
    /// consumed, it was cancelled, or another worker recovered it) or whose instance `owner`
    /// no longer holds. The default persists nothing.
    async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        let _ = (owner, lease_until);
        Ok(vec![None; calls.len()])
    }

    /// Turns the calls kept in memory of instances whose lease lapsed (the worker running
    /// them died or stalled), or that another worker holds now (it took a lapsed lease over),
    /// into work items any worker may claim, counted as one attempt more (the lost worker may
    /// have started them). Returns how many. Releasing an instance
    /// ([`release_instance`](Self::release_instance), [`unregister_worker`](Self::unregister_worker))
    /// does the same for its calls at once. The default recovers nothing.
    async fn recover_calls(&self) -> Result<u64, Error> {
        Ok(0)
    }

    /// Releases `owner`'s lease on an instance (it was unloaded from memory); the calls it
    /// kept in memory become work items any worker may claim, and the timers held for it
    /// ([`TurnCommit::hold_timers`]) that are not due yet become ordinary queued timers.
    async fn release_instance(&self, instance_id: &str, owner: &str) -> Result<(), Error>;

    /// The instance's history, in order.
    async fn load_history(&self, instance_id: &str) -> Result<Vec<Event>, Error>;

    /// The orchestration instance's status row (`None` for entities and unknown ids).
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error>;

    /// Instances matching the query, ordered by instance id.
    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error>;

    /// The earliest time a message that nobody holds becomes visible, if it is in the future
    /// (the next timer): the dispatcher sleeps until then.
    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error>;

    /// An entity's stored state and lock; `None` if nothing ever addressed it.
    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error>;

    /// Entities matching the query, ordered by name, then key.
    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error>;

    /// Removes entities without state and without pending messages, and releases locks
    /// held by orchestrations that are finished or gone.
    async fn clean_entities(&self) -> Result<EntityCleanup, Error>;

    /// In-process notifications about this store's commits.
    fn events(&self) -> &StoreEvents;

    /// Queue depths and instance counts for monitoring (the HTTP API's `/metrics`).
    /// `Ok(None)` when the backend does not count them (the default).
    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        Ok(None)
    }

    /// The clock this store's times are read on: when a message is visible, when a lease
    /// lapses, and (through the runtime and the client) every time the engine stamps. The
    /// system clock by default; the test kit's store runs on a [`Clock::manual`].
    fn clock(&self) -> Clock {
        Clock::system()
    }
}

/// Queue depths and instance counts of a store, for monitoring ([`Store::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Orchestration messages visible now: work waiting for a turn.
    pub messages_ready: u64,
    /// Orchestration messages visible later: durable timers not yet due.
    pub messages_delayed: u64,
    /// Activity calls queued or running: work items, and calls kept in memory
    /// ([`NewActivity::in_memory`]).
    pub activity_items: u64,
    /// How many instances have each status (statuses with none may be missing).
    pub instances: Vec<(RuntimeStatus, u64)>,
}

impl StoreStats {
    /// Counts assembled by a backend.
    pub fn new(
        messages_ready: u64,
        messages_delayed: u64,
        activity_items: u64,
        instances: Vec<(RuntimeStatus, u64)>,
    ) -> Self {
        StoreStats {
            messages_ready,
            messages_delayed,
            activity_items,
            instances,
        }
    }

    /// Nothing is ready to run and no activity is queued or running: only durable timers
    /// that are not due yet (or nothing) are pending.
    pub fn is_idle(&self) -> bool {
        self.messages_ready == 0 && self.activity_items == 0
    }
}

/// In-process notifications from a store: work became available, an instance finished.
///
/// Backends call [`StoreEvents::notify_work`] after committing messages or work items that no
/// worker holds, and [`StoreEvents::notify_finished`] (or, when the commit gave them the
/// instance's row as it now stands, [`StoreEvents::notify_finished_with`]) after committing a
/// terminal status; [`StoreEvents::notify_offered`] when they were handed messages for one of
/// their workers to take without a claim ([`Store::take_offered`]). The runtime's dispatcher and
/// [`Client::wait_for_completion`](crate::Client::wait_for_completion) listen, and fall back
/// to polling for changes made by other processes.
#[derive(Default)]
pub struct StoreEvents {
    work: Notify,
    /// Bumped by every [`StoreEvents::notify_offered`]: each dispatcher watches it.
    offered: tokio::sync::watch::Sender<u64>,
    finished: Mutex<HashMap<String, Vec<Arc<FinishWatch>>>>,
}

/// One waiter's watch of [`StoreEvents::notify_offered`] ([`StoreEvents::watch_offered`]).
#[derive(Debug)]
pub struct OfferedWatch(tokio::sync::watch::Receiver<u64>);

impl OfferedWatch {
    /// Resolves when messages were handed to the store since this watch last resolved (or
    /// was made); `false` once the store is gone.
    pub async fn notified(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

impl fmt::Debug for StoreEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreEvents").finish_non_exhaustive()
    }
}

impl StoreEvents {
    /// Wakes the dispatcher: visible, unclaimed work may be waiting.
    pub fn notify_work(&self) {
        self.work.notify_one();
    }

    /// Resolves when [`notify_work`](Self::notify_work) is called (or was called since the
    /// last wait).
    pub async fn work_notified(&self) {
        self.work.notified().await;
    }

    /// Wakes every dispatcher of this store: messages were handed to it for a worker to
    /// take without a claim ([`Store::take_offered`]; each takes its own).
    pub fn notify_offered(&self) {
        self.offered
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A watch of [`notify_offered`](Self::notify_offered) for one waiter: every waiter
    /// sees every call (a call while it was not waiting included).
    pub fn watch_offered(&self) -> OfferedWatch {
        OfferedWatch(self.offered.subscribe())
    }

    /// Wakes everyone waiting for this instance to finish; they read its status.
    pub fn notify_finished(&self, instance_id: &str) {
        for watch in self.take_watches(instance_id) {
            watch.notify.notify_one();
        }
    }

    /// Wakes everyone waiting for this instance to finish, handing each `status`: the
    /// instance's row as the commit that finished it wrote it (the store's own answer, not
    /// one pieced together from the turn), so a waiter need not read it again.
    pub fn notify_finished_with(&self, status: &InstanceStatus) {
        let bytes = payload_bytes(status);
        for watch in self.take_watches(&status.instance_id) {
            if bytes <= watch.keeps_up_to {
                *lock(&watch.status) = Some(status.clone());
            }
            watch.notify.notify_one();
        }
    }

    /// Whether anyone waits for this instance to finish (a backend may skip reading a status
    /// to hand over when nobody would take it).
    pub fn is_watched(&self, instance_id: &str) -> bool {
        lock(&self.finished).contains_key(instance_id)
    }

    /// Registers interest in an instance finishing; await
    /// [`notified`](FinishWatch::notified) on the result. Register before checking the
    /// status, so a finish in between is not missed.
    pub fn watch_finished(&self, instance_id: &str) -> Arc<FinishWatch> {
        self.watch_finished_up_to(instance_id, usize::MAX)
    }

    /// [`watch_finished`](Self::watch_finished), for a watch that takes a handed row only
    /// if its payloads (input, output, custom status, failure messages) come to at most
    /// `bytes`: past that it is woken without the row, as by
    /// [`notify_finished`](Self::notify_finished). For a watch kept a long time, whose
    /// row would otherwise stay in memory however large.
    pub fn watch_finished_up_to(&self, instance_id: &str, bytes: usize) -> Arc<FinishWatch> {
        let watch = Arc::new(FinishWatch {
            keeps_up_to: bytes,
            ..FinishWatch::default()
        });
        lock(&self.finished)
            .entry(instance_id.to_owned())
            .or_default()
            .push(watch.clone());
        watch
    }

    /// Drops a registration made by [`watch_finished`](Self::watch_finished).
    pub fn unwatch_finished(&self, instance_id: &str, watch: &Arc<FinishWatch>) {
        let mut map = lock(&self.finished);
        if let Some(list) = map.get_mut(instance_id) {
            list.retain(|w| !Arc::ptr_eq(w, watch));
            if list.is_empty() {
                map.remove(instance_id);
            }
        }
    }

    fn take_watches(&self, instance_id: &str) -> Vec<Arc<FinishWatch>> {
        lock(&self.finished).remove(instance_id).unwrap_or_default()
    }
}

/// One registration for an instance finishing ([`StoreEvents::watch_finished`]).
#[derive(Debug)]
pub struct FinishWatch {
    notify: Notify,
    status: Mutex<Option<InstanceStatus>>,
    /// The largest handed row it takes ([`StoreEvents::watch_finished_up_to`]).
    keeps_up_to: usize,
}

impl Default for FinishWatch {
    fn default() -> Self {
        FinishWatch {
            notify: Notify::new(),
            status: Mutex::default(),
            keeps_up_to: usize::MAX,
        }
    }
}

/// The bytes of a status's payloads: input, output, custom status and failure messages.
fn payload_bytes(status: &InstanceStatus) -> usize {
    let payloads = [&status.output, &status.custom_status]
        .into_iter()
        .flatten()
        .map(Payload::len)
        .sum::<usize>();
    let mut failures = 0;
    let mut failure = status.failure.as_ref();
    while let Some(f) = failure {
        failures += f.message.len() + f.kind.len();
        failure = f.cause.as_deref();
    }
    status.input.len() + payloads + failures
}

impl FinishWatch {
    /// Resolves once the instance is announced finished (or was since the registration).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The finished status the announcement carried, if it carried one
    /// ([`StoreEvents::notify_finished_with`]); taken, so a second call answers `None`.
    pub fn take_status(&self) -> Option<InstanceStatus> {
        lock(&self.status).take()
    }
}

/// A shared store is a store: `Runtime::builder(Arc<dyn Store>)` works (for instance with
/// the store `duractor_sqlx::open(url)` returns).
#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn register_worker(&self, owner: &str) -> Result<(), Error> {
        (**self).register_worker(owner).await
    }
    async fn unregister_worker(&self, owner: &str) -> Result<(), Error> {
        (**self).unregister_worker(owner).await
    }
    async fn stop_claiming(&self, owner: &str) -> Result<(), Error> {
        (**self).stop_claiming(owner).await
    }
    fn take_offered(&self, owner: &str) -> Vec<OrchestrationMessage> {
        (**self).take_offered(owner)
    }
    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        (**self).create_instance(instance).await
    }
    async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        (**self)
            .create_instance_claimed(instance, owner, lease_until)
            .await
    }
    async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        (**self).enqueue(instance_id, event, visible_at).await
    }
    async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        (**self).abandon_messages(owner, ids, visible_at).await
    }
    async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        (**self).purge_instances(query).await
    }
    async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        (**self).claim_messages(owner, limit, lease_until).await
    }
    async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error> {
        (**self)
            .claim_activities(owner, names, rules, limit, lease_until)
            .await
    }

    async fn flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        (**self).flow_status(names).await
    }
    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        (**self).admit_instances(rules).await
    }
    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        (**self).instance_flow_status(names).await
    }
    async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        (**self).commit_turn(turn).await
    }
    fn creates_with_turn(&self) -> bool {
        (**self).creates_with_turn()
    }
    async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        (**self).complete_activity(completion).await
    }
    async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        (**self).renew_leases(owner, held, lease_until).await
    }
    async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, Error> {
        (**self)
            .sync_activities(owner, heartbeats, running, now)
            .await
    }
    async fn list_activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error> {
        (**self).list_activities(instance_id).await
    }
    fn announces_finished_rows(&self) -> bool {
        (**self).announces_finished_rows()
    }
    fn keeps_calls_in_memory(&self) -> bool {
        (**self).keeps_calls_in_memory()
    }
    async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        (**self).persist_calls(owner, calls, lease_until).await
    }
    async fn recover_calls(&self) -> Result<u64, Error> {
        (**self).recover_calls().await
    }
    async fn release_instance(&self, instance_id: &str, owner: &str) -> Result<(), Error> {
        (**self).release_instance(instance_id, owner).await
    }
    async fn load_history(&self, instance_id: &str) -> Result<Vec<Event>, Error> {
        (**self).load_history(instance_id).await
    }
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error> {
        (**self).get_instance(instance_id).await
    }
    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        (**self).list_instances(query).await
    }
    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        (**self).next_visible_at().await
    }
    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        (**self).load_entity(id).await
    }
    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        (**self).list_entities(query).await
    }
    async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        (**self).clean_entities().await
    }
    fn events(&self) -> &StoreEvents {
        (**self).events()
    }
    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        (**self).stats().await
    }
    fn clock(&self) -> Clock {
        (**self).clock()
    }
}

/// `url` with any password replaced by `***`, for messages and logs: what the command line
/// and the stores print of a database URL.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        // Only a password is hidden: `user@host` has none and is shown as it is.
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}/{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{InstanceStatus, RuntimeStatus, StoreEvents, redact_password};
    use crate::error::Failure;
    use crate::history::Payload;
    use std::time::Duration;

    fn finished(output_bytes: usize, failure_bytes: usize) -> InstanceStatus {
        let now = chrono::Utc::now();
        InstanceStatus {
            instance_id: "i".into(),
            name: "o".into(),
            version: String::new(),
            status: RuntimeStatus::Completed,
            input: Payload::encode(&"in").unwrap(),
            output: Some(Payload::encode(&"x".repeat(output_bytes)).unwrap()),
            failure: (failure_bytes > 0).then(|| Failure {
                message: "m".repeat(failure_bytes),
                kind: String::new(),
                cause: None,
                non_retriable: false,
            }),
            custom_status: None,
            created_at: now,
            updated_at: now,
            completed_at: Some(now),
        }
    }

    /// A watch limited to a row size takes handed rows up to it and is woken without the
    /// larger ones; an unlimited watch of the same finish takes every row.
    #[tokio::test]
    async fn a_limited_watch_takes_only_rows_up_to_its_size() {
        let events = StoreEvents::default();
        // The input is 4 bytes ("in" quoted), an output of n characters n + 2.
        for (output, failure, kept) in [
            (94, 0, true),
            (95, 0, false),
            (40, 54, true),
            (40, 55, false),
        ] {
            let limited = events.watch_finished_up_to("i", 100);
            let unlimited = events.watch_finished("i");
            events.notify_finished_with(&finished(output, failure));
            let wait = Duration::from_secs(5);
            tokio::time::timeout(wait, limited.notified())
                .await
                .unwrap();
            tokio::time::timeout(wait, unlimited.notified())
                .await
                .unwrap();
            assert_eq!(
                limited.take_status().is_some(),
                kept,
                "{output} + {failure}"
            );
            assert!(unlimited.take_status().is_some());
        }
    }

    /// Every dispatcher of a store sees every hand-over, one made while it was not waiting
    /// included, and only once.
    #[tokio::test]
    async fn every_watch_sees_each_hand_over_once() {
        let events = StoreEvents::default();
        let (mut first, mut second) = (events.watch_offered(), events.watch_offered());
        events.notify_offered();
        let wait = Duration::from_secs(5);
        assert!(tokio::time::timeout(wait, first.notified()).await.unwrap());
        assert!(tokio::time::timeout(wait, second.notified()).await.unwrap());
        let again = tokio::time::timeout(Duration::from_millis(20), first.notified()).await;
        assert!(again.is_err(), "seen twice");
        drop(events);
        assert!(!second.notified().await, "the store is gone");
    }

    #[test]
    fn only_passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://app:secret@db:5432/orders?schema=x"),
            "postgres://app:***@db:5432/orders?schema=x"
        );
        assert_eq!(
            redact_password("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact_password("postgres://db/test"), "postgres://db/test");
        assert_eq!(redact_password("sqlite://app.db"), "sqlite://app.db");
        assert_eq!(redact_password("postgres://u:@h/d"), "postgres://u:***@h/d");
    }
}
