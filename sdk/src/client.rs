//! The client: start orchestrations, raise events, query status and history, wait.
//!
//! A [`Client`] talks to the store directly, so it works in any process that can open the
//! store, with or without a runtime. In the runtime's own process
//! ([`Runtime::client`](crate::Runtime::client)) it is woken at once when an instance
//! finishes; elsewhere it polls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entity::{ClientSignal, Entity, ProxyMode, ProxyTarget, SignalFromClient};
use crate::error::Error;
use crate::flow::FlowControl;
use crate::handles::Orchestrator;
use crate::history::Event;
use crate::id::EntityId;
use crate::id::{self, is_entity_instance_id, validate_instance_id};
use crate::limits::Limits;
use crate::panics::lock;
use crate::payload::Payload;
use crate::registry::Registry;
use crate::schedule::{
    SCHEDULE_ENTITY, Schedule, ScheduleEntity, ScheduleOp, ScheduleSpec, ScheduleStatus,
};
pub use crate::store::InstanceStatus;
pub use crate::store::PurgeQuery;
use crate::store::{
    ActivityStatus, FinishWatch, FlowHold, InstanceQuery, NewInstance, OrchestrationMessage,
    RuntimeStatus, Store,
};
pub use crate::store::{EntityCleanup, EntityQuery, EntityStatus, FlowStatus};

pub use crate::store::InstanceQuery as ListQuery;

impl InstanceStatus {
    /// The output deserialized as `T`. Fails if the instance has not completed
    /// (with its failure, if it failed) or the output is not a `T`.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match (&self.status, &self.output, &self.failure) {
            (RuntimeStatus::Completed, Some(output), _) => {
                output.decode_as(format_args!("output of instance `{}`", self.instance_id))
            }
            (RuntimeStatus::Failed, _, Some(failure)) => Err(Error::Failed(failure.clone())),
            (status, _, _) => Err(Error::InvalidArgument(format!(
                "instance `{}` has no output: it is {status}",
                self.instance_id
            ))),
        }
    }

    /// The custom status deserialized as `T`, if one was set.
    pub fn custom_status<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.custom_status
            .as_ref()
            .map(|p| {
                p.decode_as(format_args!(
                    "custom status of instance `{}`",
                    self.instance_id
                ))
            })
            .transpose()
    }

    /// `true` once the instance is Completed, Failed or Terminated.
    pub fn is_finished(&self) -> bool {
        self.status.is_terminal()
    }
}

/// Starts, queries and signals orchestration instances.
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    limits: Limits,
    /// The registry lists every entity type of the app (a worker's client, the generated
    /// main's commands): an unregistered entity name is a typo, not another program's type.
    registry_complete: bool,
    /// The worker of this process, when this is its runtime's client: starts are leased to
    /// it in the commit that creates them and handed to it in memory.
    local: Option<Arc<dyn LocalWorker>>,
    /// Finish watches of the instances this client started for its worker, shared by its
    /// clones.
    started: Arc<Mutex<StartedWatches>>,
}

/// Finish watches registered by starts, before their instances were created, for a later
/// [`Client::wait_for_completion`]: a finish committed in this process hands the watch the
/// instance's row, so that wait needs no read of the status (reading it, on another thread,
/// cost a one-at-a-time start-to-finish a quarter of its time). Only the newest
/// [`STARTED_WATCHES`] are kept (an evicted start's wait reads, as any other does): each
/// watched finish also has the store read the row it hands over. A watch takes that row
/// only up to [`STARTED_ROW_BYTES`] of payloads, so the rows of finished instances nobody
/// has waited for yet hold at most a few megabytes (a larger one's wait reads it). The
/// watches go with the last clone of the client.
struct StartedWatches {
    /// The store whose events hold the watches.
    store: Arc<dyn Store>,
    /// Each watched instance's entry.
    by_id: HashMap<String, StartedWatch>,
    /// The watched ids with their entries' numbers, oldest first; an id whose entry is gone
    /// or newer is skipped when it comes up for eviction.
    order: VecDeque<(u64, String)>,
    /// The next entry's number.
    next: u64,
}

/// The watch of one run a client started.
struct StartedWatch {
    /// Its number among the client's entries ([`StartedWatches::order`]).
    number: u64,
    /// The run's creation time, which a handed row must have.
    created_at: DateTime<Utc>,
    watch: Arc<FinishWatch>,
}

impl StartedWatches {
    fn new(store: Arc<dyn Store>) -> Self {
        StartedWatches {
            store,
            by_id: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    /// Watches the finish of `instance`, about to be created; evicts the oldest watch past
    /// [`STARTED_WATCHES`].
    fn watch(&mut self, instance: &NewInstance) -> Arc<FinishWatch> {
        let id = &instance.instance_id;
        let watch = self
            .store
            .events()
            .watch_finished_up_to(id, STARTED_ROW_BYTES);
        let number = self.next;
        self.next += 1;
        self.put(
            id,
            StartedWatch {
                number,
                created_at: instance.created_at,
                watch: watch.clone(),
            },
        );
        watch
    }

    /// Keeps `entry` for `id` (unwatching one it replaces), and evicts past the bound.
    fn put(&mut self, id: &str, entry: StartedWatch) {
        self.order.push_back((entry.number, id.to_owned()));
        if let Some(replaced) = self.by_id.insert(id.to_owned(), entry) {
            self.store.events().unwatch_finished(id, &replaced.watch);
        }
        while self.order.len() > STARTED_WATCHES {
            let Some((number, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.by_id.get(&oldest).is_some_and(|e| e.number == number)
                && let Some(evicted) = self.by_id.remove(&oldest)
            {
                self.store
                    .events()
                    .unwatch_finished(&oldest, &evicted.watch);
            }
        }
    }

    /// Takes the entry of `instance_id`, if any, still registered.
    fn take(&mut self, instance_id: &str) -> Option<StartedWatch> {
        self.by_id.remove(instance_id)
    }

    /// Before a start of `instance`: sets aside the watch of a run started earlier under
    /// its id (it must not answer for this one) and, if `watched`, watches this one.
    fn begin(&mut self, instance: &NewInstance, watched: bool) -> StartWatching {
        StartWatching {
            earlier: self.take(&instance.instance_id),
            watch: watched.then(|| self.watch(instance)),
        }
    }

    /// After the start [`begin`](Self::begin) prepared: a failed one drops its watch and
    /// puts back the earlier run's; a created one lets the earlier run's go.
    fn settle(&mut self, instance_id: &str, start: StartWatching, created: bool) {
        let events = self.store.events();
        if !created && let Some(watch) = &start.watch {
            if self
                .by_id
                .get(instance_id)
                .is_some_and(|kept| Arc::ptr_eq(&kept.watch, watch))
            {
                self.by_id.remove(instance_id);
            }
            events.unwatch_finished(instance_id, watch);
        }
        if let Some(earlier) = start.earlier {
            if created || self.by_id.contains_key(instance_id) {
                events.unwatch_finished(instance_id, &earlier.watch);
            } else {
                self.put(instance_id, earlier);
            }
        }
    }
}

/// What a start changed in its client's [`StartedWatches`], until it is settled.
struct StartWatching {
    /// The watch of the run started earlier under the id, set aside.
    earlier: Option<StartedWatch>,
    /// This start's watch, if it is watched.
    watch: Option<Arc<FinishWatch>>,
}

impl Drop for StartedWatches {
    fn drop(&mut self) {
        let events = self.store.events();
        for (id, entry) in self.by_id.drain() {
            events.unwatch_finished(&id, &entry.watch);
        }
    }
}

/// How many instances a client keeps finish watches for ([`StartedWatches`]).
const STARTED_WATCHES: usize = 1024;

/// The largest row (payload bytes) a start's watch keeps ([`StartedWatches`]).
const STARTED_ROW_BYTES: usize = 8 * 1024;

/// How long a wait on a watch its start registered waits for the finish before it reads
/// the status (the ordinary loop; a finish notification may come from another process
/// without the row, or not at all if it was lost).
const STARTED_WAIT: Duration = Duration::from_millis(5);

/// The worker a runtime's own client starts instances for (see
/// [`Store::create_instance_claimed`]).
pub(crate) trait LocalWorker: Send + Sync {
    /// The worker's lease owner id.
    fn owner(&self) -> &str;
    /// The lease deadline for work it takes now.
    fn lease_until(&self) -> DateTime<Utc>;
    /// Runs a message leased to it (the `ExecutionStarted` of an instance just created).
    fn run(&self, message: OrchestrationMessage);
    /// Runs a new instance whose first turn creates it in the store
    /// ([`TurnCommit::create`](crate::store::TurnCommit::create)); the receiver gets that
    /// commit's outcome. `None` when the worker cannot (its store does not create with
    /// turns); a receiver dropped unanswered means the worker did not take it (the id is
    /// loaded there, it is stopping): the caller creates the instance in the store instead.
    fn start(
        &self,
        instance: NewInstance,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), Error>>>;
    /// Whether it has the orchestrator `name` (the others are left to workers that do).
    fn has_orchestrator(&self, name: &str) -> bool;
    /// The flow-control limits it enforces, by activity name.
    fn flow_limits(&self) -> BTreeMap<String, FlowControl>;
    /// The flow-control limits it enforces on orchestrator `name`.
    fn orchestrator_flow(&self, name: &str) -> Option<FlowControl>;
    /// The flow-control limits it enforces, by orchestrator name.
    fn orchestrator_flow_limits(&self) -> BTreeMap<String, FlowControl>;
}

impl Client {
    /// A client on `store`, which knows every orchestrator linked into this program
    /// ([`Registry::global`]) for [`start_by_name`](Self::start_by_name).
    pub fn new(store: impl Store) -> Self {
        Client::from_parts(
            Arc::new(store),
            Arc::new(Registry::global()),
            Limits::default(),
        )
    }

    /// A client on a store that is already shared, e.g. the one `duractor_sqlx::open(url)`
    /// returns.
    pub fn new_dyn(store: Arc<dyn Store>) -> Self {
        Client::from_parts(store, Arc::new(Registry::global()), Limits::default())
    }

    pub(crate) fn from_parts(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        limits: Limits,
    ) -> Self {
        let started = Arc::new(Mutex::new(StartedWatches::new(store.clone())));
        Client {
            store,
            registry,
            limits,
            registry_complete: false,
            local: None,
            started,
        }
    }

    /// The same client, starting instances for `worker` (a runtime's own client).
    pub(crate) fn with_local_worker(mut self, worker: Arc<dyn LocalWorker>) -> Self {
        self.local = Some(worker);
        self
    }

    /// The same client, treating its registry as the whole app's: entity names it does not
    /// register are refused with [`Error::UnknownEntity`].
    pub(crate) fn with_complete_registry(mut self) -> Self {
        self.registry_complete = true;
        self
    }

    /// The same client with other payload limits (checked before anything is sent).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The store this client uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The functions this client knows (those of this program).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts an instance of a typed orchestrator; resolves to its instance id.
    ///
    /// ```no_run
    /// # use duractor::prelude::*;
    /// # #[orchestrator]
    /// # async fn greet(_ctx: OrchestrationContext, name: String) -> Result<String, duractor::Error> { Ok(name) }
    /// # async fn run(client: Client) -> Result<(), duractor::Error> {
    /// let id = client.start(Greet, "Ada".to_string()).await?;              // a new random id
    /// client.start(Greet, "Bob".to_string()).instance_id("greet-bob").await?; // a chosen id
    /// # Ok(()) }
    /// ```
    pub fn start<O: Orchestrator>(&self, _orchestrator: O, input: O::Input) -> Start<'_> {
        let input = Payload::encode(&input).map_err(|e| {
            Error::invalid_payload(format!("input for orchestrator `{}`", O::NAME), e)
        });
        Start {
            client: self,
            name: O::NAME.to_owned(),
            version: O::VERSION.to_owned(),
            input,
            instance_id: None,
            if_exists: IfExists::Reject,
            priority: 0,
        }
    }

    /// Starts an orchestrator by name with JSON input (for CLIs and HTTP front ends).
    /// The name must be registered and the input must deserialize into its input type.
    pub fn start_by_name(&self, name: &str, input_json: &str) -> Start<'_> {
        let checked = self.registry.get_orchestrator(name).and_then(|entry| {
            let input = Payload::from_json(input_json).map_err(|e| {
                Error::invalid_payload(
                    format!("input for orchestrator `{name}` (not valid JSON)"),
                    e,
                )
            })?;
            self.limits
                .check_payload(&format!("the input of orchestrator `{name}`"), &input)?;
            entry.check_input(&input)?;
            Ok((entry.version.to_owned(), input))
        });
        let (version, input) = match checked {
            Ok((version, input)) => (version, Ok(input)),
            Err(e) => (String::new(), Err(e)),
        };
        Start {
            client: self,
            name: name.to_owned(),
            version,
            input,
            instance_id: None,
            if_exists: IfExists::Reject,
            priority: 0,
        }
    }

    /// Signal-with-start: raises event `event` with `data` to instance `instance_id` of
    /// orchestrator `O`, starting it with `input` first if it does not exist (or has
    /// finished, since a finished instance can no longer receive events). Resolves to `true`
    /// when this call started the instance. Any number of callers at once make exactly one
    /// instance, and every one of their events is delivered to it: the store creates an id
    /// once, and each caller raises its event after its start or the one that beat it.
    ///
    /// ```no_run
    /// # use duractor::prelude::*;
    /// # #[orchestrator]
    /// # async fn cart(ctx: OrchestrationContext, customer: String) -> Result<u32, duractor::Error> { Ok(0) }
    /// # async fn run(client: Client) -> Result<(), duractor::Error> {
    /// // Every "add to cart" goes to the customer's one cart instance, started by the first.
    /// client.signal_with_start(Cart, "ada".to_string(), "cart-ada", "add", &"book").await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal_with_start<O: Orchestrator, T: Serialize + ?Sized>(
        &self,
        orchestrator: O,
        input: O::Input,
        instance_id: &str,
        event: &str,
        data: &T,
    ) -> Result<bool, Error> {
        let data = Payload::encode(data)
            .map_err(|e| Error::invalid_payload(format!("data of event `{event}`"), e))?;
        let start = self.start(orchestrator, input).instance_id(instance_id);
        self.start_then_raise(start, event, data).await
    }

    /// [`signal_with_start`](Self::signal_with_start) by orchestrator name, with JSON input
    /// and event data (for CLIs and HTTP front ends).
    pub async fn signal_with_start_by_name(
        &self,
        name: &str,
        input_json: &str,
        instance_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<bool, Error> {
        let start = self
            .start_by_name(name, input_json)
            .instance_id(instance_id);
        self.start_then_raise(start, event, data).await
    }

    /// Starts `start` unless its instance runs, then raises the event; again if the instance
    /// finished in between.
    async fn start_then_raise(
        &self,
        start: Start<'_>,
        event: &str,
        data: Payload,
    ) -> Result<bool, Error> {
        id::validate_event_name(event)?;
        let (instance_id, instance) = start.prepare()?;
        for _ in 0..5 {
            let started = match self.create(instance.clone()).await {
                Ok(()) => true,
                Err(Error::InstanceExists { .. }) => false,
                Err(error) => return Err(error),
            };
            match self.raise_event(&instance_id, event, &data).await {
                Ok(()) => return Ok(started),
                // It finished between the two: start it again.
                Err(Error::InstanceFinished { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(Error::InvalidState {
            instance_id,
            status: "finishing".to_owned(),
            message: "it kept finishing before the event could be raised (5 times); \
                      its orchestrator ends without waiting for events"
                .to_owned(),
        })
    }

    /// How a new instance of orchestrator `name` with `input` waits for its flow-control
    /// limits (`None`: it has none, it runs at once).
    fn hold_for(&self, name: &str, input: &Payload, priority: i32) -> Option<FlowHold> {
        let limits = match &self.local {
            Some(worker) if worker.has_orchestrator(name) => worker.orchestrator_flow(name)?,
            _ => (self.registry.get_orchestrator(name).ok()?.flow)()?,
        };
        Some(FlowHold {
            key: limits.key_of(input),
            priority,
        })
    }

    /// Creates an instance. With a worker in this process that has its orchestrator, that
    /// worker runs it from memory: on a store that [creates instances with their first
    /// turn](Store::creates_with_turn) the first turn's commit creates it (one commit for
    /// both), otherwise it is created leased to the worker, which runs it without claiming
    /// it. Its finish is then watched from before it exists ([`StartedWatches`]), as it is on
    /// a store that [announces finished rows](Store::announces_finished_rows) to every
    /// process.
    async fn create(&self, instance: NewInstance) -> Result<(), Error> {
        // A held instance waits for an admission, in this process or another.
        let local = self
            .local
            .as_ref()
            .filter(|worker| worker.has_orchestrator(&instance.name) && instance.flow.is_none());
        let id = instance.instance_id.clone();
        let watched = local.is_some() || self.store.announces_finished_rows();
        let watching = lock(&self.started).begin(&instance, watched);
        let created = match local {
            Some(worker) => self.create_for(worker.as_ref(), instance).await,
            None => self.store.create_instance(instance).await,
        };
        lock(&self.started).settle(&id, watching, created.is_ok());
        created
    }

    /// Creates an instance its orchestrator's `worker` in this process runs.
    async fn create_for(
        &self,
        worker: &dyn LocalWorker,
        instance: NewInstance,
    ) -> Result<(), Error> {
        // One commit: the worker runs the first turn from memory and commits it with the
        // creation.
        if let Some(created) = worker.start(instance.clone())
            && let Ok(created) = created.await
        {
            return created;
        }
        let claimed = self
            .store
            .create_instance_claimed(instance, worker.owner(), worker.lease_until())
            .await?;
        if let Some(message) = claimed {
            worker.run(message);
        }
        Ok(())
    }

    /// Raises the external event `name` with `data` to an instance. The event is delivered
    /// to the orchestrator's `wait_for_event(name)`, or buffered until it waits.
    ///
    /// Fails with [`Error::InstanceNotFound`] if there is no such instance and with
    /// [`Error::InstanceFinished`] if it has finished (nothing would ever read the event);
    /// event names follow [the rules of `duractor::id`](crate::id).
    pub async fn raise_event<T: Serialize + ?Sized>(
        &self,
        instance_id: &str,
        name: &str,
        data: &T,
    ) -> Result<(), Error> {
        id::validate_event_name(name)?;
        if is_entity_instance_id(instance_id) {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        let what = format!("data of event `{name}`");
        let data = Payload::encode(data).map_err(|e| Error::invalid_payload(what.clone(), e))?;
        self.limits.check_payload(&what, &data)?;
        let event = Event::EventRaised {
            name: name.to_owned(),
            data,
        };
        self.store.enqueue(instance_id, event, None).await
    }

    /// A proxy for signalling (one-way) operations of entity `E` with `key`: each method
    /// returns a future that resolves once the signal is stored. The entity exists from its
    /// first message on.
    ///
    /// ```no_run
    /// # use duractor::prelude::*;
    /// # #[entity]
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Counter { value: i64 }
    /// # #[entity]
    /// # impl Counter { fn add(&mut self, n: i64) { self.value += n } }
    /// # async fn run(client: Client) -> Result<(), duractor::Error> {
    /// client.signal_entity::<Counter>("visits").add(1).await?;
    /// let counter: Option<Counter> = client.entity_state::<Counter>("visits").await?;
    /// # Ok(()) }
    /// ```
    pub fn signal_entity<E: Entity>(&self, key: impl Into<String>) -> E::Proxy<SignalFromClient> {
        ProxyTarget::proxy::<E>(self.clone(), key, None)
    }

    /// Like [`signal_entity`](Self::signal_entity), delivered at `at` (a durable, scheduled
    /// signal: it survives restarts).
    pub fn signal_entity_at<E: Entity>(
        &self,
        key: impl Into<String>,
        at: DateTime<Utc>,
    ) -> E::Proxy<SignalFromClient> {
        ProxyTarget::proxy::<E>(self.clone(), key, Some(at))
    }

    /// Signals operation `operation` of `entity` with JSON `input` (for CLIs and HTTP front
    /// ends), optionally at a later time. When this program registers the entity type, the
    /// operation and the input are checked against it first ([`Error::UnknownOperation`],
    /// [`Error::InvalidPayload`]); the client of a worker or of the generated main also
    /// refuses entity names the app does not register ([`Error::UnknownEntity`]).
    pub async fn signal_entity_raw(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Payload,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        id::validate_entity_id(&entity.name, &entity.key)?;
        if let Some(at) = at
            && at > crate::clock::latest_timer_time()
        {
            return Err(Error::InvalidArgument(format!(
                "a signal cannot be scheduled at {at}: the latest time is {}",
                crate::clock::latest_timer_time()
            )));
        }
        if let Some(known) = self.registry.entities().find(|e| e.name == entity.name) {
            let operations = (known.operations)();
            let Some(info) = operations.iter().find(|o| o.name == operation) else {
                let names: Vec<&str> = operations.iter().map(|o| o.name).collect();
                return Err(Error::UnknownOperation {
                    entity: entity.name.clone(),
                    operation: operation.to_owned(),
                    known: names.join(", "),
                });
            };
            (info.check_input)(&entity.name, &input)?;
        }
        self.check_entity_name(&entity.name)?;
        let what = format!("input of entity operation `{entity}.{operation}`");
        self.limits.check_payload(&what, &input)?;
        let event = Event::EntityOperation {
            operation: operation.to_owned(),
            input,
            caller: None,
            sender: None,
        };
        self.store.enqueue(&entity.instance_id(), event, at).await
    }

    /// The flow-control limits in force, by activity name: for a runtime's client, that
    /// runtime's (declared on the activities, changed with
    /// [`RuntimeBuilder::flow_control`](crate::RuntimeBuilder::flow_control)); otherwise
    /// those declared on the activities linked into this program.
    pub fn flow_limits(&self) -> BTreeMap<String, FlowControl> {
        match &self.local {
            Some(local) => local.flow_limits(),
            None => self.registry.declared_flow_limits(),
        }
    }

    /// What runs and what waits of the activities and orchestrators named in `names` (none
    /// given: those with limits in [`flow_limits`](Self::flow_limits) and
    /// [`orchestrator_flow_limits`](Self::orchestrator_flow_limits)), per function and
    /// flow-control key: the work a limit holds back is the `waiting` of a key whose `running`
    /// is at its limit. Held orchestrations are Pending instances.
    pub async fn flow_status(&self, names: &[&str]) -> Result<Vec<FlowStatus>, Error> {
        let (activities, orchestrators): (Vec<String>, Vec<String>) = if names.is_empty() {
            (
                self.flow_limits().into_keys().collect(),
                self.orchestrator_flow_limits().into_keys().collect(),
            )
        } else {
            let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
            (names.clone(), names)
        };
        let mut status = Vec::new();
        if !activities.is_empty() {
            status = self.store.flow_status(&activities).await?;
        }
        if !orchestrators.is_empty() {
            status.extend(self.store.instance_flow_status(&orchestrators).await?);
        }
        Ok(status)
    }

    /// The flow-control limits in force on orchestrators, by name: for a runtime's client,
    /// that runtime's (declared with `#[orchestrator(concurrency = ..)]`, changed with
    /// [`RuntimeBuilder::orchestrator_flow_control`](crate::RuntimeBuilder::orchestrator_flow_control));
    /// otherwise those declared on the orchestrators linked into this program.
    pub fn orchestrator_flow_limits(&self) -> BTreeMap<String, FlowControl> {
        match &self.local {
            Some(local) => local.orchestrator_flow_limits(),
            None => self.registry.declared_orchestrator_flow_limits(),
        }
    }

    /// The last committed state of entity `E` with `key` (`None` if it has none).
    pub async fn entity_state<E: Entity>(
        &self,
        key: impl Into<String>,
    ) -> Result<Option<E>, Error> {
        let id = EntityId::of::<E>(key);
        match self.store.load_entity(&id).await? {
            Some(status) => status.state(),
            None => Ok(None),
        }
    }

    /// An entity's stored state and lock (`None` if nothing ever addressed it).
    pub async fn entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        self.check_entity_name(&id.name)?;
        self.store.load_entity(id).await
    }

    /// Entities matching `query` (by name, key prefix; with or without state; paged).
    pub async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        if let Some(name) = &query.name {
            self.check_entity_name(name)?;
        }
        self.store.list_entities(query).await
    }

    /// Deletes an entity's state. The deletion is a message like any other: it runs after
    /// the messages sent to the entity before it.
    pub async fn delete_entity(&self, id: &EntityId) -> Result<(), Error> {
        id::validate_entity_id(&id.name, &id.key)?;
        self.check_entity_name(&id.name)?;
        self.store
            .enqueue(&id.instance_id(), Event::EntityDelete {}, None)
            .await
    }

    /// [`Error::UnknownEntity`] for a name the app does not register, when this client knows
    /// the whole app (a worker's client; the generated main's commands and HTTP API). A client
    /// made with [`Client::new`] may address entity types that only other programs link in.
    fn check_entity_name(&self, name: &str) -> Result<(), Error> {
        if self.registry_complete {
            self.registry.get_entity(name)?;
        }
        Ok(())
    }

    /// Removes entities without state and without pending messages, and releases entity
    /// locks held by orchestrations that are finished or gone.
    pub async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.store.clean_entities().await
    }

    /// Terminates a pending, running or suspended instance: it ends with status Terminated at
    /// its next turn. `.cascade(true)` terminates its running sub-orchestrations too.
    pub fn terminate<'a>(&'a self, instance_id: &'a str, reason: &str) -> Terminate<'a> {
        Terminate {
            client: self,
            instance_id,
            reason: reason.to_owned(),
            cascade: false,
        }
    }

    /// Suspends a running instance: it records what arrives but runs nothing (activity
    /// results and events wait) until [`resume`](Self::resume)d.
    pub async fn suspend(&self, instance_id: &str, reason: &str) -> Result<(), Error> {
        self.control(
            instance_id,
            Event::ExecutionSuspended {
                reason: reason.to_owned(),
            },
            &[RuntimeStatus::Pending, RuntimeStatus::Running],
            "only pending or running instances can be suspended",
        )
        .await
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, instance_id: &str, reason: &str) -> Result<(), Error> {
        self.control(
            instance_id,
            Event::ExecutionResumed {
                reason: reason.to_owned(),
            },
            &[RuntimeStatus::Suspended],
            "only suspended instances can be resumed",
        )
        .await
    }

    /// Rewinds a failed instance: the failed activity calls and sub-orchestrations (and any
    /// call left without a result) run again, and the orchestrator goes on from there — after
    /// you fixed what made them fail.
    pub async fn rewind(&self, instance_id: &str, reason: &str) -> Result<(), Error> {
        self.control(
            instance_id,
            Event::ExecutionRewound {
                reason: reason.to_owned(),
            },
            &[RuntimeStatus::Failed],
            "only failed instances can be rewound",
        )
        .await
    }

    /// Starts a finished instance again from the beginning with its original input: under
    /// the same id (replacing its history), or with `new_instance_id` under a new random id.
    /// Resolves to the id of the new run.
    pub async fn restart(&self, instance_id: &str, new_instance_id: bool) -> Result<String, Error> {
        let status = self.status(instance_id).await?;
        if !new_instance_id && !status.status.is_terminal() {
            return Err(Error::InvalidState {
                instance_id: instance_id.to_owned(),
                status: status.status.to_string(),
                message: "only finished instances can be restarted under the same id; \
                          terminate it first or restart it under a new id"
                    .to_owned(),
            });
        }
        let start = Start {
            client: self,
            name: status.name,
            version: status.version,
            input: Ok(status.input),
            instance_id: (!new_instance_id).then(|| instance_id.to_owned()),
            if_exists: IfExists::Reject,
            priority: 0,
        };
        start.await
    }

    /// Deletes a finished instance (status, history, queued messages). Returns `false` if
    /// there was nothing to delete (no such instance); fails with [`Error::InvalidState`] if
    /// the instance is still pending, running or suspended.
    pub async fn purge(&self, instance_id: &str) -> Result<bool, Error> {
        let status = match self.status(instance_id).await {
            Ok(status) => status,
            Err(Error::InstanceNotFound(_)) => return Ok(false),
            Err(error) => return Err(error),
        };
        if !status.status.is_terminal() {
            return Err(Error::InvalidState {
                instance_id: instance_id.to_owned(),
                status: status.status.to_string(),
                message: "only finished instances can be purged; terminate it first".to_owned(),
            });
        }
        let purged = self
            .store
            .purge_instances(&PurgeQuery {
                instance_id: Some(instance_id.to_owned()),
                ..Default::default()
            })
            .await?;
        Ok(purged > 0)
    }

    /// Deletes every finished instance matching `query`; returns how many.
    pub async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        self.store.purge_instances(query).await
    }

    /// Sends a control message after checking the instance's status.
    async fn control(
        &self,
        instance_id: &str,
        event: Event,
        allowed: &[RuntimeStatus],
        message: &str,
    ) -> Result<(), Error> {
        let status = self.status(instance_id).await?;
        if status.status.is_terminal() && !allowed.contains(&status.status) {
            return Err(Error::InstanceFinished {
                instance_id: instance_id.to_owned(),
                status: status.status.to_string(),
                message: message.to_owned(),
            });
        }
        if !allowed.contains(&status.status) {
            return Err(Error::InvalidState {
                instance_id: instance_id.to_owned(),
                status: status.status.to_string(),
                message: message.to_owned(),
            });
        }
        self.store.enqueue(instance_id, event, None).await
    }

    /// The status of an instance; [`Error::InstanceNotFound`] if there is none (entity ids,
    /// `@name@key`, never name an instance: read entities with [`entity`](Self::entity)).
    pub async fn status(&self, instance_id: &str) -> Result<InstanceStatus, Error> {
        if is_entity_instance_id(instance_id) {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        self.store
            .get_instance(instance_id)
            .await?
            .ok_or_else(|| Error::InstanceNotFound(instance_id.to_owned()))
    }

    /// Waits until the instance is Completed, Failed or Terminated and returns its status;
    /// [`Error::Timeout`] if it is still running after `timeout`.
    ///
    /// A runtime's own client (`runtime.client()`) watches the instances it starts for its
    /// worker from before they exist, and any client on PostgreSQL watches all it starts.
    /// The first wait for one of its latest 1,024 such starts answers for the run this
    /// client started last under that id (even if another client or process has started the
    /// id again since) and, when that run's finish handed over its row (at most 8 KiB of
    /// payloads) and came before the wait or within 5 ms of it, reads nothing. A store error that may
    /// pass (`Error::Store` with `transient: true`: the database went away for a moment)
    /// does not end the wait: it reads again until `timeout`, and returns that error if the
    /// store has not answered by then. A read the store leaves unanswered (a connection
    /// that hangs, a pool waiting for a server that is gone) is given up at `timeout`, or
    /// [`STATUS_READ_GRACE`] after it when less than that was left, so the wait returns
    /// that late at most.
    pub async fn wait_for_completion(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<InstanceStatus, Error> {
        // A timeout too long to represent waits without a deadline.
        let deadline = Instant::now().checked_add(timeout);
        let events = self.store.events();
        // A run this client started was watched from before it existed: a finish since then
        // has notified the watch, most often handing over the row (checked to be that run's:
        // a late notification of an earlier run's finish, from another process, may come
        // first). Without that row the wait reads, as any other does.
        let started = lock(&self.started).take(instance_id);
        if let Some(StartedWatch {
            created_at, watch, ..
        }) = started
        {
            let wait = deadline.map_or(STARTED_WAIT, |deadline| {
                STARTED_WAIT.min(deadline.saturating_duration_since(Instant::now()))
            });
            let notified = tokio::time::timeout(wait, watch.notified()).await.is_ok();
            events.unwatch_finished(instance_id, &watch);
            if let Some(handed) = notified.then(|| watch.take_status()).flatten()
                && handed.is_finished()
                && handed.created_at.timestamp_millis() == created_at.timestamp_millis()
            {
                return Ok(handed);
            }
        }
        let mut poll = Duration::from_millis(5);
        loop {
            let notify = events.watch_finished(instance_id);
            let status = self.status_by(instance_id, deadline).await;
            let status = match status {
                Ok(status) if !status.is_finished() => Some(status),
                Err(
                    error @ Error::Store {
                        transient: true, ..
                    },
                ) if deadline.is_none_or(|deadline| Instant::now() < deadline) => {
                    tracing::debug!(instance_id, %error, "reading the status failed; waiting on");
                    None
                }
                other => {
                    events.unwatch_finished(instance_id, &notify);
                    return other;
                }
            };
            let now = Instant::now();
            // Without a status (the store did not answer) the wait goes on: the next read
            // comes after the back-off, or returns the error once the deadline has passed.
            if let Some(status) = &status
                && deadline.is_some_and(|deadline| now >= deadline)
            {
                events.unwatch_finished(instance_id, &notify);
                return Err(Error::Timeout {
                    what: format!(
                        "instance `{}` to finish (it is {})",
                        instance_id, status.status
                    ),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let wait = deadline.map_or(poll, |deadline| poll.min(deadline - now));
            let _ = tokio::time::timeout(wait, notify.notified()).await;
            events.unwatch_finished(instance_id, &notify);
            // A finish whose commit handed over the instance's row (a backend that had it at
            // hand, `StoreEvents::notify_finished_with`) needs no read — if it is the run just
            // read as running (a finish never changes `created_at`): a notification from
            // another process may arrive late, and the finish of an earlier run under the
            // same id (one started again since) is not this one's.
            if let Some(handed) = notify.take_status().filter(InstanceStatus::is_finished)
                && status
                    .as_ref()
                    .is_some_and(|running| handed.created_at == running.created_at)
            {
                return Ok(handed);
            }
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    /// The status of an instance, read within the time left until `deadline` (at least
    /// [`STATUS_READ_GRACE`]): past it, a transient store error says the store did not answer.
    async fn status_by(
        &self,
        instance_id: &str,
        deadline: Option<Instant>,
    ) -> Result<InstanceStatus, Error> {
        let Some(deadline) = deadline else {
            return self.status(instance_id).await;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let bound = left.max(STATUS_READ_GRACE);
        tokio::time::timeout(bound, self.status(instance_id))
            .await
            .unwrap_or_else(|_| {
                Err(Error::store_transient(format!(
                    "reading the status of instance `{instance_id}` got no answer from the \
                     store within {} ms; the instance goes on: check the database and wait again",
                    bound.as_millis()
                )))
            })
    }

    /// The instance's history, oldest event first.
    pub async fn history(&self, instance_id: &str) -> Result<Vec<Event>, Error> {
        if is_entity_instance_id(instance_id) {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        let history = self.store.load_history(instance_id).await?;
        if history.is_empty() && self.store.get_instance(instance_id).await?.is_none() {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        Ok(history)
    }

    /// The instance's activity calls in flight (queued or running): which attempt, which
    /// worker holds it, its timeouts and its last heartbeat. Empty when none is.
    pub async fn activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error> {
        if is_entity_instance_id(instance_id)
            || self.store.get_instance(instance_id).await?.is_none()
        {
            return Err(Error::InstanceNotFound(instance_id.to_owned()));
        }
        self.store.list_activities(instance_id).await
    }

    /// Instances matching `query`, ordered by instance id.
    ///
    /// ```no_run
    /// # async fn run(client: duractor::Client) -> Result<(), duractor::Error> {
    /// use duractor::{RuntimeStatus, client::ListQuery};
    /// let failed = client
    ///     .list(ListQuery { statuses: vec![RuntimeStatus::Failed], ..Default::default() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, query: InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        self.store.list_instances(&query).await
    }
}

/// What a start does when an instance with its id already exists ([`Start::if_exists`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IfExists {
    /// Fail with [`Error::InstanceExists`] while it is pending, running or suspended; replace
    /// a finished one (the default).
    #[default]
    Reject,
    /// Replace it only if it failed or was terminated: a completed one, or one still running,
    /// is [`Error::InstanceExists`].
    ReplaceIfFailed,
    /// Terminate a pending, running or suspended one, wait until it is, and start anew.
    TerminateRunning,
    /// Start nothing and answer with the existing instance, whatever its status: the same
    /// request made twice gives the same instance (an idempotent start).
    UseExisting,
}

impl std::str::FromStr for IfExists {
    type Err = Error;

    /// `reject`, `replace-if-failed`, `terminate-running`, `use-existing` (the camelCase
    /// forms too, as the HTTP API writes them).
    fn from_str(text: &str) -> Result<Self, Error> {
        match text.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "reject" => Ok(IfExists::Reject),
            "replaceiffailed" => Ok(IfExists::ReplaceIfFailed),
            "terminaterunning" => Ok(IfExists::TerminateRunning),
            "useexisting" => Ok(IfExists::UseExisting),
            _ => Err(Error::InvalidArgument(format!(
                "unknown start policy `{text}`; use reject, replace-if-failed, \
                 terminate-running or use-existing"
            ))),
        }
    }
}

/// How long a start with [`IfExists::TerminateRunning`] waits for the running instance to
/// end (a worker must take the terminate first).
const TERMINATE_RUNNING_WAIT: Duration = Duration::from_secs(30);

/// A pending start request; `.await` it (optionally after [`Start::instance_id`],
/// [`Start::if_exists`]).
#[must_use = "a start request does nothing unless awaited"]
pub struct Start<'a> {
    client: &'a Client,
    name: String,
    version: String,
    input: Result<Payload, Error>,
    instance_id: Option<String>,
    if_exists: IfExists,
    priority: i32,
}

impl Start<'_> {
    /// Its priority among instances held back by the orchestrator's flow-control limits
    /// (`#[orchestrator(concurrency = ..)]`): higher runs first, then older. Default 0; no
    /// effect on an orchestrator without limits.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Uses this instance id instead of a new random one. Starting an id that is pending or
    /// running fails with [`Error::InstanceExists`]; a finished one is replaced. The id must
    /// follow [the rules of `duractor::id`](crate::id) ([`Error::InvalidArgument`] otherwise).
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// Stamps this version on the instance instead of the orchestrator's default.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// What to do when an instance with this id already exists (default
    /// [`IfExists::Reject`]).
    ///
    /// ```no_run
    /// # use duractor::prelude::*;
    /// # #[orchestrator]
    /// # async fn charge(_ctx: OrchestrationContext, cents: u64) -> Result<u64, duractor::Error> { Ok(cents) }
    /// # async fn run(client: Client) -> Result<(), duractor::Error> {
    /// use duractor::client::IfExists;
    /// // A retried request (same order id) gets the same instance, never a second charge.
    /// let id = client
    ///     .start(Charge, 1200)
    ///     .instance_id("order-17")
    ///     .if_exists(IfExists::UseExisting)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn if_exists(mut self, policy: IfExists) -> Self {
        self.if_exists = policy;
        self
    }

    /// The instance id and the instance to create, checked.
    fn prepare(self) -> Result<(String, NewInstance), Error> {
        let input = self.input?;
        self.client.limits.check_payload(
            &format!("the input of orchestrator `{}`", self.name),
            &input,
        )?;
        let instance_id = match self.instance_id {
            Some(id) => {
                validate_instance_id(&id)?;
                id
            }
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let instance = NewInstance {
            instance_id: instance_id.clone(),
            name: self.name,
            version: self.version,
            input,
            created_at: self.client.store.clock().now(),
            parent: None,
            flow: None,
        };
        let flow = self
            .client
            .hold_for(&instance.name, &instance.input, self.priority);
        let instance = NewInstance { flow, ..instance };
        Ok((instance_id, instance))
    }
}

/// A pending terminate request; `.await` it (optionally after [`Terminate::cascade`]).
#[must_use = "a terminate request does nothing unless awaited"]
pub struct Terminate<'a> {
    client: &'a Client,
    instance_id: &'a str,
    reason: String,
    cascade: bool,
}

impl Terminate<'_> {
    /// Also terminates the instance's running sub-orchestrations (and theirs).
    pub fn cascade(mut self, cascade: bool) -> Self {
        self.cascade = cascade;
        self
    }
}

impl<'a> IntoFuture for Terminate<'a> {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.client
                .control(
                    self.instance_id,
                    Event::ExecutionTerminated {
                        reason: self.reason,
                        cascade: self.cascade,
                    },
                    &[
                        RuntimeStatus::Pending,
                        RuntimeStatus::Running,
                        RuntimeStatus::Suspended,
                    ],
                    "only pending, running or suspended instances can be terminated",
                )
                .await
        })
    }
}

impl<'a> IntoFuture for Start<'a> {
    type Output = Result<String, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let client = self.client;
            let policy = self.if_exists;
            let (instance_id, instance) = self.prepare()?;
            let existing = match policy {
                IfExists::Reject => None,
                _ => client.store.get_instance(&instance_id).await?,
            };
            match (policy, existing.map(|e| e.status)) {
                (IfExists::UseExisting, Some(_)) => return Ok(instance_id),
                (IfExists::ReplaceIfFailed, Some(status))
                    if !matches!(status, RuntimeStatus::Failed | RuntimeStatus::Terminated) =>
                {
                    return Err(Error::InstanceExists {
                        instance_id,
                        status: status.to_string(),
                    });
                }
                (IfExists::TerminateRunning, Some(status)) if !status.is_terminal() => {
                    client
                        .terminate(&instance_id, "replaced by a new start (terminate-running)")
                        .await?;
                    client
                        .wait_for_completion(&instance_id, TERMINATE_RUNNING_WAIT)
                        .await?;
                }
                _ => {}
            }
            match client.create(instance).await {
                // Another start won the race for the id: it is the one to use.
                Err(Error::InstanceExists { .. }) if policy == IfExists::UseExisting => {
                    Ok(instance_id)
                }
                result => result.map(|()| instance_id),
            }
        })
    }
}

impl ProxyMode for SignalFromClient {
    type Sender = Client;
    type Output<T: DeserializeOwned + 'static> = ClientSignal;

    fn send<T: DeserializeOwned + 'static>(
        target: &ProxyTarget<Self>,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) -> ClientSignal {
        let client = target.sender.clone();
        let entity = target.entity.clone();
        let at = target.at;
        Box::pin(async move {
            client
                .signal_entity_raw(&entity, operation, input?, at)
                .await
        })
    }
}

/// Schedules (see [`crate::schedule`]). A change is a signal to the schedule's entity; each
/// method returns once a worker has applied it, or after
/// [`SCHEDULE_APPLY_WAIT`] if none did (it applies when a worker runs).
impl Client {
    /// Creates a schedule; [`Error::ScheduleExists`] if its id is taken. A bad spec, or an
    /// orchestrator this program does not register, is an error naming the problem.
    pub async fn create_schedule(&self, schedule: &Schedule) -> Result<(), Error> {
        self.create_schedule_spec(schedule.spec()?).await
    }

    /// [`create_schedule`](Self::create_schedule) from a spec (the HTTP API's body).
    pub async fn create_schedule_spec(&self, spec: ScheduleSpec) -> Result<(), Error> {
        self.check_schedule(&spec)?;
        if self.schedule(&spec.id).await?.is_some() {
            return Err(Error::ScheduleExists(spec.id));
        }
        let id = spec.id.clone();
        let op = ScheduleOp::Upsert {
            spec: spec.clone(),
            paused: None,
            create: true,
        };
        match self.change_schedule(&id, op).await? {
            // Another create of the same id won the race.
            Some(state) if state.spec().is_some_and(|stored| *stored != spec) => {
                Err(Error::ScheduleExists(id))
            }
            _ => Ok(()),
        }
    }

    /// Replaces an existing schedule's spec (its pause state stays); the next tick is
    /// computed from the new timing. [`Error::ScheduleNotFound`] if there is none.
    pub async fn update_schedule(&self, schedule: &Schedule) -> Result<(), Error> {
        self.update_schedule_spec(schedule.spec()?).await
    }

    /// [`update_schedule`](Self::update_schedule) from a spec.
    pub async fn update_schedule_spec(&self, spec: ScheduleSpec) -> Result<(), Error> {
        self.check_schedule(&spec)?;
        self.existing_schedule(&spec.id).await?;
        let id = spec.id.clone();
        let op = ScheduleOp::Upsert {
            spec,
            paused: None,
            create: false,
        };
        self.change_schedule(&id, op).await.map(drop)
    }

    /// Creates the schedule or brings its spec up to date, keeping its pause state and
    /// leaving an unchanged one alone (a schedule declared in code, at each startup).
    pub(crate) async fn declare_schedule(&self, spec: ScheduleSpec) -> Result<(), Error> {
        self.check_schedule(&spec)?;
        let id = spec.id.clone();
        if let Some(status) = self.schedule(&id).await?
            && status.spec == spec
        {
            return Ok(());
        }
        let op = ScheduleOp::Upsert {
            spec,
            paused: None,
            create: false,
        };
        self.change_schedule(&id, op).await.map(drop)
    }

    /// A schedule's spec, next run, running and recent runs (`None` if there is none).
    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleStatus>, Error> {
        Ok(self
            .schedule_state(id)
            .await?
            .and_then(ScheduleEntity::status))
    }

    async fn schedule_state(&self, id: &str) -> Result<Option<ScheduleEntity>, Error> {
        let entity = EntityId::new(SCHEDULE_ENTITY, id);
        id::validate_entity_id(&entity.name, &entity.key)?;
        match self.store.load_entity(&entity).await? {
            Some(stored) => stored.state(),
            None => Ok(None),
        }
    }

    /// Every schedule, by id.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleStatus>, Error> {
        let mut schedules = Vec::new();
        let mut after = None;
        loop {
            let query = EntityQuery {
                name: Some(SCHEDULE_ENTITY.to_owned()),
                limit: Some(500),
                after: after.take(),
                ..EntityQuery::default()
            };
            let page = self.store.list_entities(&query).await?;
            let full = page.len() >= 500;
            after = page.last().map(|entity| entity.id.clone());
            for stored in page {
                let state: Option<ScheduleEntity> = stored.state()?;
                schedules.extend(state.and_then(ScheduleEntity::status));
            }
            if !full {
                return Ok(schedules);
            }
        }
    }

    /// Pauses a schedule: its ticks do nothing (and a buffered run is dropped) until it is
    /// resumed. `note` says why (shown in its status).
    pub async fn pause_schedule(&self, id: &str, note: Option<&str>) -> Result<(), Error> {
        self.existing_schedule(id).await?;
        let note = note.map(str::to_owned);
        self.change_schedule(id, ScheduleOp::Pause { note })
            .await
            .map(drop)
    }

    /// Resumes a paused schedule from its next tick after now (ticks missed while paused do
    /// not run).
    pub async fn resume_schedule(&self, id: &str) -> Result<(), Error> {
        self.existing_schedule(id).await?;
        self.change_schedule(id, ScheduleOp::Resume).await.map(drop)
    }

    /// Starts a run now (instance id `{schedule}@{time}-now{n}`), under the overlap policy.
    pub async fn trigger_schedule(&self, id: &str) -> Result<(), Error> {
        self.existing_schedule(id).await?;
        self.change_schedule(id, ScheduleOp::Trigger)
            .await
            .map(drop)
    }

    /// Runs every tick from `from` to `to` (inclusive; at most
    /// [`MAX_RUNS_AT_ONCE`](crate::schedule::MAX_RUNS_AT_ONCE)), all at once whatever the
    /// overlap policy, with the ids those ticks have (a tick that already ran runs again).
    pub async fn backfill_schedule(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), Error> {
        if from > to {
            return Err(Error::InvalidArgument(format!(
                "a backfill from {from} to {to} runs backwards; give the earlier time first"
            )));
        }
        self.existing_schedule(id).await?;
        self.change_schedule(id, ScheduleOp::Backfill { from, to })
            .await
            .map(drop)
    }

    /// Deletes a schedule: no further ticks; runs already started go on.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), Error> {
        self.existing_schedule(id).await?;
        self.change_schedule(id, ScheduleOp::Delete).await.map(drop)
    }

    fn check_schedule(&self, spec: &ScheduleSpec) -> Result<(), Error> {
        spec.check()?;
        if self.registry_complete || self.registry.orchestrators().next().is_some() {
            let entry = self.registry.get_orchestrator(&spec.orchestrator)?;
            (entry.check_input)(&spec.input)?;
        }
        let what = format!("input of schedule `{}`", spec.id);
        self.limits.check_payload(&what, &spec.input)
    }

    async fn existing_schedule(&self, id: &str) -> Result<ScheduleStatus, Error> {
        self.schedule(id)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(id.to_owned()))
    }

    /// Sends `op` to the schedule and waits for a worker to apply it (up to
    /// [`SCHEDULE_APPLY_WAIT`]); returns the state it then has (`None`: deleted, or not
    /// applied in time).
    async fn change_schedule(
        &self,
        id: &str,
        op: ScheduleOp,
    ) -> Result<Option<ScheduleEntity>, Error> {
        let before = self.schedule_state(id).await?.map_or(0, |s| s.changes());
        let deleting = matches!(op, ScheduleOp::Delete);
        let (operation, input) = op.operation();
        let event = Event::EntityOperation {
            operation: operation.to_owned(),
            input,
            caller: None,
            sender: None,
        };
        let entity = EntityId::new(SCHEDULE_ENTITY, id);
        self.store
            .enqueue(&entity.instance_id(), event, None)
            .await?;
        let deadline = Instant::now() + SCHEDULE_APPLY_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let state = self.schedule_state(id).await?;
            let applied = match &state {
                None => deleting,
                Some(state) if deleting => state.spec().is_none(),
                Some(state) => state.changes() > before,
            };
            if applied || Instant::now() >= deadline {
                return Ok(state.filter(|_| applied));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The least time [`Client::wait_for_completion`] gives one status read when its timeout is
/// nearer than that: a wait returns at most this long after its timeout when the store does
/// not answer.
pub const STATUS_READ_GRACE: Duration = Duration::from_millis(250);

/// The longest a schedule change waits for a worker to apply it before returning (the
/// change stays stored and applies when a worker runs).
pub const SCHEDULE_APPLY_WAIT: Duration = Duration::from_secs(5);
