//! A store that answers a worker's own starts late: the instance is created (and its start
//! leased to the worker) at once, but the call returns only after a delay, so whatever is
//! sent to the instance meanwhile reaches the worker before the start does.

use std::sync::Arc;
use std::time::Duration;

use duractor::chrono::{DateTime, Utc};
use duractor::clock::Clock;
use duractor::entity::EntityId;
use duractor::flow::FlowRule;
use duractor::store::{
    ActivityCompletion, ActivityHeartbeat, ActivityStatus, ActivityWorkItem, Admission,
    EntityCleanup, EntityQuery, EntityStatus, FlowStatus, HeldWork, InstanceQuery, InstanceStatus,
    NewInstance, OrchestrationMessage, PurgeQuery, StoreEvents, StoreStats, TurnCommit,
    TurnCommitted,
};
use duractor::{Error, Event, Store};

/// Forwards everything to `inner`; [`Store::create_instance_claimed`] returns `delay` late.
#[derive(Clone)]
pub struct SlowStarts {
    inner: Arc<dyn Store>,
    delay: Duration,
}

impl SlowStarts {
    /// `inner`, with starts handed back `delay` late.
    pub fn new(inner: impl Store, delay: Duration) -> Self {
        SlowStarts {
            inner: Arc::new(inner),
            delay,
        }
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
    ) -> Result<Vec<ActivityWorkItem>, Error> {
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
        self.inner.commit_turn(turn).await
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
