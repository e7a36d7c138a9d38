//! The runtime: actix actors that claim work, run orchestration turns and activities.
//!
//! * `dispatcher` — one `Dispatcher` actor per runtime: claims messages from the store
//!   (when woken, at timer due times, and by a fallback poll), routes them to instance
//!   actors, loads and unloads those, renews leases.
//! * `instance` — one `InstanceActor` per loaded orchestration instance: it keeps the live
//!   orchestrator future between turns (no replay per step), runs a turn when messages arrive,
//!   commits it, and hands new activity work straight to the worker.
//! * `entity` — one `EntityActor` per loaded entity: runs its operations one at a time in
//!   arrival order, holds others' messages while a critical section locks it, and commits
//!   each batch (state, lock, consumed messages, replies, signals) in one store call.
//! * `activity` — the `ActivityWorker` actor, on its own thread: runs activities with a
//!   concurrency limit and commits their results.
//! * `messages` — everything the actors say to each other; no actor file imports another
//!   to talk to it (they hold recipients, the dispatcher holds what it started).
//! * `residency` — the load → run → idle → unload (or give up) lifecycle that instance and
//!   entity actors share.
//! * `turn` — what a turn writes: the executor's output planned into one store commit, pure.
//! * `versioning` — whether this worker runs an instance of a given version ([`Versioning`]).
//! * `metrics` — the counters and latency histograms the actors update
//!   ([`Runtime::metrics`]).
//!
//! The actors run on a dedicated thread (an actix `System`), the activity worker on a second
//! (an `Arbiter`). Nothing actix appears in this module's public API: [`Runtime`] and
//! [`RuntimeBuilder`] are plain types, usable from any async runtime.

mod activity;
mod dispatcher;
mod entity;
mod instance;
mod messages;
pub(crate) mod metrics;
mod poll;
mod quick;
mod residency;
mod timers;
mod turn;
mod versioning;

pub use metrics::{HistogramSnapshot, MetricsSnapshot};
pub use versioning::{VersionMatch, VersionMismatch, Versioning};

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::activity::ActivityBody;
use crate::activity::SharedState;
use crate::client::Client;
use crate::clock::{Clock, saturating_after};
use crate::error::Error;
use crate::flow::{FlowControl, FlowRule};
use crate::handles::{Activity, Orchestrator};
use crate::limits::Limits;
use crate::orchestration::OrchestratorBody;
use crate::registry::Registry;
use crate::store::Store;

/// Tunable settings of a runtime; see the [`RuntimeBuilder`] methods.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) activity_concurrency: usize,
    pub(crate) idle_unload_after: Duration,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) claim_batch: u32,
    pub(crate) shutdown_grace: Duration,
    pub(crate) activity_cancel_grace: Duration,
    pub(crate) activity_sync_interval: Duration,
    pub(crate) quick_activities: bool,
    pub(crate) limits: Limits,
    pub(crate) versioning: Versioning,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            activity_concurrency: 256,
            idle_unload_after: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            claim_batch: 500,
            shutdown_grace: Duration::from_secs(10),
            activity_cancel_grace: Duration::from_secs(5),
            activity_sync_interval: Duration::from_millis(250),
            quick_activities: true,
            limits: Limits::default(),
            versioning: Versioning::default(),
        }
    }
}

/// What every actor of one runtime shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) owner: String,
    pub(crate) options: Options,
    pub(crate) shared_state: SharedState,
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The store's clock: every time the runtime stamps or waits for.
    pub(crate) clock: Clock,
    /// The activities this worker runs (it claims only their work items).
    pub(crate) activity_names: Vec<String>,
    /// Whether this worker runs orchestrations or entities: an activity-only worker claims
    /// no orchestration messages (it would fail their instances as unknown).
    pub(crate) runs_instances: bool,
    /// The flow-control limits of activities, by name (declared on the activity, overridden
    /// with [`RuntimeBuilder::flow_control`]).
    pub(crate) flow: HashMap<String, FlowControl>,
    /// The same, as the store's claims take them (only those of activities this worker has).
    pub(crate) flow_rules: Vec<FlowRule>,
    /// The flow-control limits of orchestrators, by name (declared on the orchestrator,
    /// overridden with [`RuntimeBuilder::orchestrator_flow_control`]): their new instances
    /// are held until an admission lets them run.
    pub(crate) orchestrator_flow: HashMap<String, FlowControl>,
    /// The same, as the store's admissions take them (only orchestrators this worker has).
    pub(crate) orchestrator_flow_rules: Vec<FlowRule>,
    /// Which activities run their first poll on the thread of the instance that called them.
    quick: quick::QuickActivities,
    /// The key of the last attempt of a call kept in memory (counting down from -1; work
    /// items have positive ids).
    memory_keys: AtomicI64,
    /// The activity worker's tokio runtime, once it started: attempts of quick activities
    /// are polled in it ([`activity::start_here`]).
    worker_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// The activity worker drains (the runtime shuts down): no attempt starts anywhere,
    /// quick ones included.
    activities_draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The current time on the store's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether the activity worker drains ([`Drain`](messages::Drain)): no attempt starts
    /// anywhere then, quick ones included.
    pub(crate) fn activities_draining(&self) -> bool {
        self.activities_draining.load(Ordering::Relaxed)
    }

    /// A key for an attempt of a call kept in memory, which has no queue id.
    fn next_memory_key(&self) -> i64 {
        self.memory_keys.fetch_sub(1, Ordering::Relaxed) - 1
    }

    /// The lease expiry for work claimed now.
    pub(crate) fn lease_until(&self) -> DateTime<Utc> {
        saturating_after(self.now(), self.options.lease)
    }

    /// Holds the new instances (sub-orchestrations, entity starts) of flow-controlled
    /// orchestrators until an admission lets them run.
    pub(crate) fn hold_flow_controlled(&self, instances: &mut [crate::store::NewInstance]) {
        for instance in instances {
            if let Some(limits) = self.orchestrator_flow.get(&instance.name) {
                instance.flow = Some(crate::store::FlowHold {
                    key: limits.key_of(&instance.input),
                    priority: 0,
                });
            }
        }
    }
}

/// Configures and starts a [`Runtime`].
///
/// ```no_run
/// # async fn run(store: impl duractor::Store) -> Result<(), duractor::Error> {
/// use std::time::Duration;
/// let runtime = duractor::Runtime::builder(store)
///     .activity_concurrency(64)
///     .idle_unload_after(Duration::from_secs(60))
///     .start()
///     .await?;
/// # runtime.shutdown().await }
/// ```
pub struct RuntimeBuilder {
    store: Arc<dyn Store>,
    registry: Registry,
    auto_register: bool,
    options: Options,
    shared_state: SharedState,
    schedules: Vec<crate::schedule::Schedule>,
    flow: Vec<(String, Option<FlowControl>)>,
    orchestrator_flow: Vec<(String, Option<FlowControl>)>,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("options", &self.options)
            .field("auto_register", &self.auto_register)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Also registers this activity (useful with [`auto_register(false)`](Self::auto_register)).
    pub fn activity<A: ActivityBody>(mut self, activity: A) -> Self {
        self.registry.activity(activity);
        self
    }

    /// Also registers this orchestrator.
    pub fn orchestrator<O: OrchestratorBody>(mut self, orchestrator: O) -> Self {
        self.registry.orchestrator(orchestrator);
        self
    }

    /// Declares a schedule: [`start`](Self::start) creates it, or updates it if its spec
    /// changed, and leaves it alone otherwise — so a restart neither duplicates it nor moves
    /// its ticks, and a pause made from the CLI or API survives the restart. A bad spec (an
    /// invalid cron expression, an unknown time zone, an orchestrator this worker does not
    /// have) fails `start`.
    pub fn schedule(mut self, schedule: crate::schedule::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Limits activity `A` across every worker of the store (see [`crate::flow`]): at most
    /// so many attempts running at once and so many started per period, per key taken from
    /// the input when the limits have one. Replaces the limits declared on the activity
    /// (`#[activity(concurrency = .., rate = "..", key = "..")]`). Every worker of an app
    /// should declare the same limits. Bad limits (0, an empty period, a key that is not a
    /// JSON pointer) fail [`start`](Self::start).
    pub fn flow_control<A: Activity>(mut self, _activity: A, limits: FlowControl) -> Self {
        self.flow.push((A::NAME.to_owned(), Some(limits)));
        self
    }

    /// Removes the limits declared on activity `A` for this worker's app.
    pub fn no_flow_control<A: Activity>(mut self, _activity: A) -> Self {
        self.flow.push((A::NAME.to_owned(), None));
        self
    }

    /// Limits orchestrator `O` across every worker of the store (see [`crate::flow`]): at
    /// most so many instances running (started and not finished) at once and so many let
    /// run per period, per key taken from the input when the limits have one. Instances
    /// beyond the limits are created Pending and wait, durably, until one may run (higher
    /// [`Start::priority`](crate::client::Start::priority) first, then older). Replaces the
    /// limits declared with `#[orchestrator(concurrency = .., rate = "..", key = "..")]`.
    /// Every worker and client process of an app should declare the same limits. Bad limits
    /// fail [`start`](Self::start).
    pub fn orchestrator_flow_control<O: Orchestrator>(
        mut self,
        _orchestrator: O,
        limits: FlowControl,
    ) -> Self {
        self.orchestrator_flow
            .push((O::NAME.to_owned(), Some(limits)));
        self
    }

    /// Removes the limits declared on orchestrator `O` for this worker's app.
    pub fn no_orchestrator_flow_control<O: Orchestrator>(mut self, _orchestrator: O) -> Self {
        self.orchestrator_flow.push((O::NAME.to_owned(), None));
        self
    }

    /// Also registers every function of `registry`.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry.merge(registry);
        self
    }

    /// Whether to register every `#[activity]` and `#[orchestrator]` linked into the program
    /// (default `true`). With `false`, only what is added explicitly is run.
    pub fn auto_register(mut self, enabled: bool) -> Self {
        self.auto_register = enabled;
        self
    }

    /// How many activities may run at once on this worker (default 256).
    pub fn activity_concurrency(mut self, limit: usize) -> Self {
        self.options.activity_concurrency = limit.max(1);
        self
    }

    /// How long an instance with nothing to do stays loaded in memory (default 30 s). After
    /// that it is unloaded and replayed from history when it gets work again.
    /// `Duration::ZERO` unloads after every turn (no cache; every step replays, and every
    /// activity call gets a work item in the store instead of being kept in memory).
    /// Otherwise an instance waiting for an activity this worker runs stays loaded until the
    /// result arrives.
    pub fn idle_unload_after(mut self, after: Duration) -> Self {
        self.options.idle_unload_after = after;
        self
    }

    /// How long claimed work stays leased to this worker without renewal (default 30 s);
    /// leases are renewed every third of it while the worker lives.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.options.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// The longest wait between polls of the store for work nothing woke the worker for
    /// (default 1 s): bounds how late work written by another process is noticed when no
    /// notification arrives (SQLite files shared by processes, PostgreSQL notifications lost
    /// while a connection was down). After a poll finds work, polls come at a thirty-second
    /// of this (at least 10 ms) and back off to it again while they find nothing.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.options.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long [`Runtime::shutdown`] waits for running activities and commits (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.options.shutdown_grace = grace;
        self
    }

    /// How long an activity attempt that was told to stop (cancelled, timed out) may keep
    /// running to wind down before the worker drops it (default 5 s). What it returns in that
    /// time is ignored; a timed-out attempt's failure is recorded at once, not after it.
    pub fn activity_cancel_grace(mut self, grace: Duration) -> Self {
        self.options.activity_cancel_grace = grace;
        self
    }

    /// How often, while activities run, the worker stores their latest heartbeats and checks
    /// whether their calls were cancelled by another process (default 250 ms): the longest a
    /// cancellation from another worker takes to reach a running activity. Cancellations by
    /// instances this worker runs reach it at once.
    pub fn activity_sync_interval(mut self, interval: Duration) -> Self {
        self.options.activity_sync_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Whether calls of quick activities may run on the runtime's own thread (default
    /// `true`). An activity is quick once its last eight attempts each finished within
    /// 50 µs of being started, without waiting for anything; a call of it that an instance
    /// keeps in memory then runs where the instance runs, and its result is back without
    /// two hops between threads (about 60–120 µs per call here). An attempt that is not done
    /// at once goes on there with its timeouts, cancellation and heartbeats as usual, and the
    /// activity waits for eight quick attempts on the activity worker again; the second that
    /// holds the thread for a millisecond or more makes its activity slow for the rest of the
    /// process. What a quick attempt spawns with `tokio::spawn` runs on the activity worker's
    /// thread. Turn it off when an activity may block its thread without warning after many
    /// quick runs (every instance of this worker waits while it does).
    pub fn quick_activities(mut self, enabled: bool) -> Self {
        self.options.quick_activities = enabled;
        self
    }

    /// Guard rails on payload sizes, history length and calls per turn (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.options.limits = limits;
        self
    }

    /// Which instance versions this worker runs (default: all).
    ///
    /// ```no_run
    /// # async fn run(store: impl duractor::Store) -> Result<(), duractor::Error> {
    /// use duractor::runtime::{VersionMatch, VersionMismatch, Versioning};
    /// let runtime = duractor::Runtime::builder(store)
    ///     .versioning(Versioning {
    ///         match_strategy: VersionMatch::Strict,
    ///         on_mismatch: VersionMismatch::Fail,
    ///         ..Default::default()
    ///     })
    ///     .start()
    ///     .await?;
    /// # runtime.shutdown().await }
    /// ```
    pub fn versioning(mut self, versioning: Versioning) -> Self {
        self.options.versioning = versioning;
        self
    }

    /// Shares a value with every activity ([`ActivityContext::shared`](crate::ActivityContext::shared)),
    /// e.g. an HTTP client or a connection pool.
    pub fn with_shared<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.shared_state.insert(value);
        self
    }

    /// Starts the runtime: registers the worker with the store and starts claiming work.
    pub async fn start(self) -> Result<Runtime, Error> {
        crate::panics::install_hook();
        let mut registry = if self.auto_register {
            Registry::global()
        } else {
            Registry::new()
        };
        registry.merge(&self.registry);
        if registry.orchestrators().next().is_some() {
            registry.entity::<crate::schedule::ScheduleEntity>();
        }
        let registry = Arc::new(registry);
        let mut flow: HashMap<String, FlowControl> =
            registry.declared_flow_limits().into_iter().collect();
        for (name, limits) in self.flow {
            match limits {
                Some(limits) => flow.insert(name, limits),
                None => flow.remove(&name),
            };
        }
        for (name, limits) in &flow {
            limits.check(name)?;
        }
        let mut orchestrator_flow: HashMap<String, FlowControl> = registry
            .declared_orchestrator_flow_limits()
            .into_iter()
            .collect();
        for (name, limits) in self.orchestrator_flow {
            match limits {
                Some(limits) => orchestrator_flow.insert(name, limits),
                None => orchestrator_flow.remove(&name),
            };
        }
        for (name, limits) in &orchestrator_flow {
            limits.check_orchestrator(name)?;
        }
        // In name order: admissions take their orchestrators' locks in this order.
        let mut orchestrator_flow_rules: Vec<FlowRule> = orchestrator_flow
            .iter()
            .filter(|(name, _)| registry.get_orchestrator(name).is_ok())
            .map(|(name, limits)| FlowRule {
                name: name.clone(),
                limits: limits.clone(),
            })
            .collect();
        orchestrator_flow_rules.sort_by(|a, b| a.name.cmp(&b.name));
        let flow_rules = flow
            .iter()
            .filter(|(name, _)| registry.get_activity(name).is_ok())
            .map(|(name, limits)| FlowRule {
                name: name.clone(),
                limits: limits.clone(),
            })
            .collect();
        let mut schedules = Vec::with_capacity(self.schedules.len());
        for schedule in &self.schedules {
            let spec = schedule.spec()?;
            registry.get_orchestrator(&spec.orchestrator).map_err(|_| {
                Error::InvalidArgument(format!(
                    "schedule `{}` starts orchestrator `{}`, which this worker does not have",
                    spec.id, spec.orchestrator
                ))
            })?;
            schedules.push(spec);
        }
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        self.store.register_worker(&owner).await?;
        let quick = quick::QuickActivities::new(
            registry.activities().map(|a| a.name),
            self.options.quick_activities,
        );
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            registry: registry.clone(),
            owner,
            options: self.options,
            shared_state: self.shared_state,
            metrics: Arc::default(),
            clock: self.store.clock(),
            activity_names: registry.activities().map(|a| a.name.to_owned()).collect(),
            runs_instances: registry.orchestrators().next().is_some()
                || registry.entities().next().is_some(),
            flow,
            flow_rules,
            orchestrator_flow,
            orchestrator_flow_rules,
            quick,
            memory_keys: AtomicI64::new(0),
            worker_runtime: std::sync::OnceLock::new(),
            activities_draining: std::sync::atomic::AtomicBool::new(false),
        });

        let (ready_tx, ready_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let (released_tx, released_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("duractor-runtime".into())
            .spawn(move || {
                let result = dispatcher::run_system(thread_shared, ready_tx, shutdown_rx);
                let _ = released_tx.send(());
                let _ = stopped_tx.send(result);
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the runtime thread: {e}")))?;
        let dispatcher = ready_rx.await.map_err(|_| Error::Shutdown)?;
        tracing::info!(owner = %shared.owner, "duractor runtime started");
        let local = Arc::new(LocalStarts {
            shared: shared.clone(),
            dispatcher,
        });
        let client = Client::from_parts(self.store, registry, shared.options.limits)
            .with_complete_registry()
            .with_local_worker(local);
        for spec in schedules {
            client.declare_schedule(spec).await?;
        }
        Ok(Runtime {
            client,
            shared,
            shutdown: Some(shutdown_tx),
            stopped: Some(stopped_rx),
            released: Some(released_rx),
            thread: thread.thread().id(),
        })
    }
}

/// What the runtime's own client starts instances for: this worker, which runs them from
/// memory (the dispatcher routes the leased `ExecutionStarted` as if it had claimed it, or,
/// on a store that [creates instances with their first turn](Store::creates_with_turn),
/// runs the start before anything is stored).
struct LocalStarts {
    shared: Arc<Shared>,
    dispatcher: messages::FromClient,
}

impl crate::client::LocalWorker for LocalStarts {
    fn owner(&self) -> &str {
        &self.shared.owner
    }

    fn lease_until(&self) -> DateTime<Utc> {
        self.shared.lease_until()
    }

    fn run(&self, message: crate::store::OrchestrationMessage) {
        // A stopped runtime drops it: the message stays leased to this worker until its
        // lease lapses or the worker's leases are released, then any worker claims it.
        self.dispatcher
            .route
            .do_send(messages::Route(vec![messages::Inbound::Queued(message)]));
    }

    fn start(
        &self,
        instance: crate::store::NewInstance,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), Error>>> {
        if !self.shared.store.creates_with_turn() || !self.shared.runs_instances {
            return None;
        }
        let (reply, created) = tokio::sync::oneshot::channel();
        // A stopped runtime drops it: the client then creates the instance in the store.
        self.dispatcher
            .start
            .do_send(messages::Start { instance, reply });
        Some(created)
    }

    fn has_orchestrator(&self, name: &str) -> bool {
        self.shared.registry.get_orchestrator(name).is_ok()
    }

    fn flow_limits(&self) -> std::collections::BTreeMap<String, FlowControl> {
        self.shared
            .flow
            .iter()
            .map(|(name, limits)| (name.clone(), limits.clone()))
            .collect()
    }

    fn orchestrator_flow(&self, name: &str) -> Option<FlowControl> {
        self.shared.orchestrator_flow.get(name).cloned()
    }

    fn orchestrator_flow_limits(&self) -> std::collections::BTreeMap<String, FlowControl> {
        self.shared
            .orchestrator_flow
            .iter()
            .map(|(name, limits)| (name.clone(), limits.clone()))
            .collect()
    }
}

/// A running duractor worker: it runs the orchestrations and activities of its store.
///
/// Build one with [`Runtime::builder`]; stop it with [`Runtime::shutdown`]. Dropping it
/// stops it too, without waiting for running activities (they run again elsewhere: they are
/// at-least-once), and releases what the worker holds just as `shutdown` does — the SQLite
/// worker lock, its leases on PostgreSQL — before `drop` returns (waiting at most
/// [`DROP_RELEASE_WAIT`]), so a new runtime can start on the store at once.
pub struct Runtime {
    client: Client,
    shared: Arc<Shared>,
    /// Tells the runtime thread to stop, draining for at most the given grace.
    shutdown: Option<oneshot::Sender<Duration>>,
    /// The runtime thread's result once it stopped and released the worker.
    stopped: Option<oneshot::Receiver<Result<(), Error>>>,
    /// The same moment, for `drop`, which cannot await.
    released: Option<std::sync::mpsc::Receiver<()>>,
    thread: std::thread::ThreadId,
}

/// How long dropping a [`Runtime`] waits for it to stop and release its worker.
pub const DROP_RELEASE_WAIT: Duration = Duration::from_secs(5);

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("owner", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder for a runtime on `store`.
    pub fn builder(store: impl Store) -> RuntimeBuilder {
        Self::builder_dyn(Arc::new(store))
    }

    /// A builder for a runtime on a store that is already shared, e.g. the one
    /// `duractor_sqlx::open(url)` returns.
    pub fn builder_dyn(store: Arc<dyn Store>) -> RuntimeBuilder {
        RuntimeBuilder {
            store,
            registry: Registry::new(),
            auto_register: true,
            options: Options::default(),
            shared_state: SharedState::default(),
            schedules: Vec::new(),
            flow: Vec::new(),
            orchestrator_flow: Vec::new(),
        }
    }

    /// A client on the same store, woken at once when this runtime finishes an instance.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The functions this runtime runs.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// This worker's lease owner id.
    pub fn worker_id(&self) -> &str {
        &self.shared.owner
    }

    /// The runtime's counters, gauges and latencies, as of now.
    ///
    /// ```no_run
    /// # fn show(runtime: &duractor::Runtime) {
    /// let metrics = runtime.metrics();
    /// println!("{} turns, {} activities", metrics.turns, metrics.activities_completed);
    /// # }
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The live metrics, for the HTTP API.
    pub(crate) fn live_metrics(&self) -> Arc<metrics::Metrics> {
        self.shared.metrics.clone()
    }

    /// Waits until the store has no message ready and no activity queued (durable timers
    /// that are not due yet do not count), up to `limit`. `true` when it got there; `false`
    /// at the limit, or at once if the store does not count its queues ([`Store::stats`]).
    ///
    /// For batch programs and tests: after the instances they care about finished, the
    /// messages those sent last (entity signals, lock releases) are applied before
    /// [`shutdown`](Self::shutdown); without it they wait for the next worker.
    ///
    /// ```no_run
    /// # async fn run(runtime: duractor::Runtime) -> Result<(), duractor::Error> {
    /// runtime.wait_idle(std::time::Duration::from_secs(5)).await;
    /// runtime.shutdown().await
    /// # }
    /// ```
    pub async fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(limit)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        loop {
            match self.shared.store.stats().await {
                Ok(Some(stats)) if stats.is_idle() => {
                    return true;
                }
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Ok(Some(stats)) => {
                    tracing::debug!(
                        ready = stats.messages_ready,
                        activities = stats.activity_items,
                        "still busy at the wait_idle limit"
                    );
                    return false;
                }
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Stops claiming work, waits (up to the shutdown grace) for running activities and
    /// commits, and releases this worker's leases so other workers can take over at once.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.released = None;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(self.shared.options.shutdown_grace);
        }
        match self.stopped.take() {
            Some(stopped) => stopped.await.unwrap_or(Err(Error::Shutdown)),
            None => Ok(()),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(Duration::ZERO);
        }
        // Wait for the release, unless this is the runtime's own thread (it would wait for
        // itself). The runtime thread needs nothing from this one, so this cannot deadlock.
        if let Some(released) = self.released.take()
            && std::thread::current().id() != self.thread
            && released.recv_timeout(DROP_RELEASE_WAIT).is_err()
        {
            tracing::warn!(
                owner = %self.shared.owner,
                "the dropped runtime did not release its worker within {DROP_RELEASE_WAIT:?}; \
                 its leases lapse on their own"
            );
        }
    }
}
