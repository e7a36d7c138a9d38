//! A store that answers a worker's own starts late: the instance is created (and its start
//! leased to the worker) at once, but the call returns only after a delay, so whatever is
//! sent to the instance meanwhile reaches the worker before the start does. It can also fail
//! turn commits now and then. It does not create instances with their first turn
//! (`Store::creates_with_turn` is `false`, unless [`SlowStarts::creating_with_turns`]):
//! starts take `create_instance_claimed`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duractor::chrono::{DateTime, Utc};
use duractor::clock::Clock;
use duractor::entity::EntityId;
use duractor::flow::FlowRule;
use duractor::store::{
    ActivityCompletion, ActivityHeartbeat, ActivityStatus, Admission, ClaimedActivities,
    EntityCleanup, EntityQuery, EntityStatus, FlowStatus, HeldWork, InstanceQuery, InstanceStatus,
    MemoryCall, NewInstance, OrchestrationMessage, PurgeQuery, StoreEvents, StoreStats, TurnCommit,
    TurnCommitted,
};
use duractor::{Error, Event, Store};

/// Instances, with the execution, whose first turn failed once.
type FailedFirst = HashSet<(String, u32)>;

/// Forwards everything to `inner`; [`Store::create_instance_claimed`] returns `delay` late,
/// and with [`failing_turns`](Self::failing_turns) some turn commits fail. It counts the
/// status reads ([`Store::get_instance`]) it forwards.
#[derive(Clone)]
pub struct SlowStarts {
    inner: Arc<dyn Store>,
    delay: Duration,
    /// Every how many turn commits one fails (0: none), and how many came so far.
    fail_every: u32,
    turns: Arc<AtomicU32>,
    /// With [`failing_first_turns`](Self::failing_first_turns): the instances (with the
    /// execution) whose first turn failed already.
    failed_first: Option<Arc<Mutex<FailedFirst>>>,
    /// How many times [`Store::get_instance`] was called.
    status_reads: Arc<AtomicU32>,
    /// Whether it creates instances with their first turn as `inner` does.
    with_turns: bool,
}

impl SlowStarts {
    /// `inner`, with starts handed back `delay` late.
    pub fn new(inner: impl Store, delay: Duration) -> Self {
        SlowStarts {
            inner: Arc::new(inner),
            delay,
            fail_every: 0,
            turns: Arc::default(),
            failed_first: None,
            status_reads: Arc::default(),
            with_turns: false,
        }
    }

    /// Creates instances with their first turn when `inner` does (the worker's own starts
    /// then commit their creation with the first turn, not through
    /// [`Store::create_instance_claimed`]).
    pub fn creating_with_turns(mut self) -> Self {
        self.with_turns = true;
        self
    }

    /// How many status reads ([`Store::get_instance`]) it has forwarded so far.
    pub fn status_reads(&self) -> u32 {
        self.status_reads.load(Ordering::SeqCst)
    }

    /// Fails every `every`th [`Store::commit_turn`] with a transient error, writing nothing
    /// (as a database that went away for a moment would).
    pub fn failing_turns(mut self, every: u32) -> Self {
        self.fail_every = every;
        self
    }

    /// Fails the first commit of every execution's first turn (the one that consumes its
    /// start) with a transient error, writing nothing; the turn's second try goes through.
    pub fn failing_first_turns(mut self) -> Self {
        self.failed_first = Some(Arc::default());
        self
    }
}

#[async_trait::async_trait]
impl Store for SlowStarts {
    async fn register_worker(&self, owner: &str) -> Result<(), Error> {
        self.inner.register_worker(owner).await
    }
    async fn unregister_worker(&self, owner: &str) -> Result<(), Error> {
        self.inner.unregister_worker(owner).await
    }
    async fn stop_claiming(&self, owner: &str) -> Result<(), Error> {
        self.inner.stop_claiming(owner).await
    }
    fn take_offered(&self, owner: &str) -> Vec<OrchestrationMessage> {
        self.inner.take_offered(owner)
    }
    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        self.inner.create_instance(instance).await
    }
    async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let claimed = self
            .inner
            .create_instance_claimed(instance, owner, lease_until)
            .await;
        tokio::time::sleep(self.delay).await;
        claimed
    }
    async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        self.inner.enqueue(instance_id, event, visible_at).await
    }
    async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.inner.abandon_messages(owner, ids, visible_at).await
    }
    async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        self.inner.purge_instances(query).await
    }
    async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        self.inner.claim_messages(owner, limit, lease_until).await
    }
    async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error> {
        self.inner
            .claim_activities(owner, names, rules, limit, lease_until)
            .await
    }
    async fn flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        self.inner.flow_status(names).await
    }
    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        self.inner.admit_instances(rules).await
    }
    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        self.inner.instance_flow_status(names).await
    }
    async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        let n = self.turns.fetch_add(1, Ordering::Relaxed) + 1;
        let first = turn.history_start == 0 || turn.reset_history;
        if let Some(failed) = &self.failed_first
            && first
            && failed
                .lock()
                .unwrap()
                .insert((turn.instance_id.clone(), turn.execution))
        {
            return Err(Error::store_transient(format!(
                "the first turn of instance `{}` failed on purpose",
                turn.instance_id
            )));
        }
        if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
            return Err(Error::store_transient(format!(
                "turn commit {n} of instance `{}` failed on purpose",
                turn.instance_id
            )));
        }
        self.inner.commit_turn(turn).await
    }
    fn creates_with_turn(&self) -> bool {
        self.with_turns && self.inner.creates_with_turn()
    }
    fn announces_finished_rows(&self) -> bool {
        self.inner.announces_finished_rows()
    }
    fn keeps_calls_in_memory(&self) -> bool {
        self.inner.keeps_calls_in_memory()
    }
    async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        self.inner.persist_calls(owner, calls, lease_until).await
    }
    async fn recover_calls(&self) -> Result<u64, Error> {
        self.inner.recover_calls().await
    }
    async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        self.inner.complete_activity(completion).await
    }
    async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        self.inner.renew_leases(owner, held, lease_until).await
    }
    async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, Error> {
        self.inner
            .sync_activities(owner, heartbeats, running, now)
            .await
    }
    async fn list_activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error> {
        self.inner.list_activities(instance_id).await
    }
    async fn release_instance(&self, instance_id: &str, owner: &str) -> Result<(), Error> {
        self.inner.release_instance(instance_id, owner).await
    }
    async fn load_history(&self, instance_id: &str) -> Result<Vec<Event>, Error> {
        self.inner.load_history(instance_id).await
    }
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error> {
        self.status_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_instance(instance_id).await
    }
    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        self.inner.list_instances(query).await
    }
    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        self.inner.next_visible_at().await
    }
    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        self.inner.load_entity(id).await
    }
    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        self.inner.list_entities(query).await
    }
    async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.inner.clean_entities().await
    }
    fn events(&self) -> &StoreEvents {
        self.inner.events()
    }
    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        self.inner.stats().await
    }
    fn clock(&self) -> Clock {
        self.inner.clock()
    }
}
