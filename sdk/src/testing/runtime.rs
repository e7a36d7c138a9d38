//! [`TestRuntime`]: the real runtime on a [`MemoryStore`] and a manual clock, with waits
//! that skip time and panics that print the history.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::memory::MemoryStore;
use super::mocks::{Mock, Router};
use super::table::{HistoryTable, relative};
use crate::activity::ActivityBody;
use crate::client::Client;
use crate::clock::Clock;
use crate::error::{Error, Failure};
use crate::handles::{Activity, Orchestrator};
use crate::history::Event;
use crate::orchestration::OrchestratorBody;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeBuilder};
use crate::store::{InstanceStatus, RuntimeStatus, Store, StoreStats};

/// How long, in real time, a kit wait may take before it gives up by default.
const REAL_TIME_LIMIT: Duration = Duration::from_secs(30);

/// How often a kit wait looks at the store (cheap: it is in memory).
const LOOK_EVERY: Duration = Duration::from_millis(1);

/// A customisation of the runtime under test.
type Configure = Box<dyn FnOnce(RuntimeBuilder) -> RuntimeBuilder + Send>;

/// Sets a [`TestRuntime`] up: where its clock starts, which functions it runs, the settings
/// of the runtime inside. [`TestRuntime::new`] is `TestRuntime::builder().start()`.
pub struct TestRuntimeBuilder {
    start_time: DateTime<Utc>,
    real_time_limit: Duration,
    auto_register: bool,
    registry: Registry,
    configure: Vec<Configure>,
}

impl std::fmt::Debug for TestRuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntimeBuilder")
            .field("start_time", &self.start_time)
            .field("real_time_limit", &self.real_time_limit)
            .field("auto_register", &self.auto_register)
            .finish_non_exhaustive()
    }
}

impl TestRuntimeBuilder {
    /// Where the virtual clock starts (default: the real time when the builder was made).
    pub fn start_time(mut self, start: DateTime<Utc>) -> Self {
        self.start_time = start;
        self
    }

    /// How long, in real time, a wait of the kit may take before it fails the test with what
    /// is still pending (default 30 s). Time skips make most waits take milliseconds; this
    /// bounds activities that really run.
    pub fn real_time_limit(mut self, limit: Duration) -> Self {
        self.real_time_limit = limit;
        self
    }

    /// Whether to run every `#[activity]`, `#[orchestrator]` and `#[entity]` linked into the
    /// test (default `true`). With `false`, only those added with [`activity`](Self::activity),
    /// [`orchestrator`](Self::orchestrator) and [`entity`](Self::entity) run.
    pub fn auto_register(mut self, enabled: bool) -> Self {
        self.auto_register = enabled;
        self
    }

    /// Also runs this activity.
    pub fn activity<A: ActivityBody>(mut self, activity: A) -> Self {
        self.registry.activity(activity);
        self
    }

    /// Also runs this orchestrator.
    pub fn orchestrator<O: OrchestratorBody>(mut self, orchestrator: O) -> Self {
        self.registry.orchestrator(orchestrator);
        self
    }

    /// Also runs this entity.
    pub fn entity<E: crate::entity::Entity>(mut self) -> Self {
        self.registry.entity::<E>();
        self
    }

    /// Shares a value with every activity, like [`RuntimeBuilder::with_shared`].
    pub fn with_shared<T: std::any::Any + Send + Sync>(self, value: T) -> Self {
        self.runtime(move |builder| builder.with_shared(value))
    }

    /// Any other setting of the runtime under test, e.g.
    /// `.runtime(|r| r.limits(Limits { max_history_events: 50, ..Limits::default() }))`.
    pub fn runtime(
        mut self,
        configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder + Send + 'static,
    ) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Starts the runtime on a fresh in-memory store.
    ///
    /// # Panics
    ///
    /// If the runtime cannot start (a test has nothing to do then but fail).
    pub async fn start(self) -> TestRuntime {
        let clock = Clock::manual(self.start_time);
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        let mut registry = if self.auto_register {
            Registry::global()
        } else {
            Registry::new()
        };
        registry.merge(&self.registry);
        let (router, routed) = Router::wrap(&registry);
        let router = Arc::new(router);
        let mut builder = Runtime::builder_dyn(store.clone())
            .auto_register(false)
            .registry(&routed)
            .with_shared(router.clone())
            // Nothing else writes to this store: notifications wake the runtime at once, the
            // poll is a safety net only.
            .poll_interval(Duration::from_millis(50));
        for configure in self.configure {
            builder = configure(builder);
        }
        let runtime = builder
            .start()
            .await
            .unwrap_or_else(|e| panic!("the test runtime did not start: {e}"));
        TestRuntime {
            client: runtime.client(),
            runtime: Some(runtime),
            store,
            origin: clock.now(),
            clock,
            router,
            real_time_limit: self.real_time_limit,
        }
    }
}

/// The real engine — same executor, same replay, same runtime — on an in-memory store and a
/// virtual clock, for tests that take milliseconds whatever the timers say.
///
/// Time stands still until the test moves it: [`advance`](Self::advance) and
/// [`advance_to`](Self::advance_to) move it by hand and run everything that falls due on the
/// way, in order; [`wait`](Self::wait) (and [`output`](Self::output),
/// [`failure`](Self::failure)) skip it: whenever nothing but timers is pending, the clock
/// jumps to the next one. A 30-day timeout is tested in milliseconds; an event raised before
/// the wait arrives before any timeout.
///
/// Its methods panic with a readable message (the instance's history as a table) instead of
/// returning errors: they are for tests. [`client`](Self::client) gives the `Result` API.
///
/// ```
/// use std::time::Duration;
/// use duractor::prelude::*;
/// use duractor::testing::TestRuntime;
///
/// #[orchestrator]
/// async fn reminder(ctx: OrchestrationContext, days: u64) -> Result<String, duractor::Error> {
///     ctx.sleep(Duration::from_secs(days * 86_400)).await;
///     Ok(format!("{days} days later"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let t = TestRuntime::new().await;
/// let id = t.start(Reminder, 30).await;
/// assert_eq!(t.output(Reminder, &id).await, "30 days later");
/// assert_eq!(t.elapsed(), Duration::from_secs(30 * 86_400));
/// # }
/// ```
pub struct TestRuntime {
    runtime: Option<Runtime>,
    client: Client,
    store: Arc<MemoryStore>,
    clock: Clock,
    origin: DateTime<Utc>,
    router: Arc<Router>,
    real_time_limit: Duration,
}

impl std::fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntime")
            .field("clock", &self.clock)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl TestRuntime {
    /// A builder, to set the clock's start or the runtime's settings.
    pub fn builder() -> TestRuntimeBuilder {
        TestRuntimeBuilder {
            start_time: crate::clock::now_millis(),
            real_time_limit: REAL_TIME_LIMIT,
            auto_register: true,
            registry: Registry::new(),
            configure: Vec::new(),
        }
    }

    /// A runtime running every function linked into the test, its clock starting now.
    pub async fn new() -> TestRuntime {
        Self::builder().start().await
    }

    /// A client of the store under test: the whole [`Client`] API, with `Result`s.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The runtime under test (its [`metrics`](Runtime::metrics), for instance).
    pub fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime runs until shutdown")
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The virtual clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The virtual time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// When the virtual clock started.
    pub fn start_time(&self) -> DateTime<Utc> {
        self.origin
    }

    /// How much virtual time has passed since the start.
    pub fn elapsed(&self) -> Duration {
        (self.clock.now() - self.origin)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// Starts an orchestration; returns its instance id.
    pub async fn start<O: Orchestrator>(&self, orchestrator: O, input: O::Input) -> String {
        self.client
            .start(orchestrator, input)
            .await
            .unwrap_or_else(|e| panic!("starting `{}` failed: {e}", O::NAME))
    }

    /// Starts an orchestration with the given instance id.
    pub async fn start_with_id<O: Orchestrator>(
        &self,
        orchestrator: O,
        instance_id: &str,
        input: O::Input,
    ) -> String {
        self.client
            .start(orchestrator, input)
            .instance_id(instance_id)
            .await
            .unwrap_or_else(|e| panic!("starting `{}` as `{instance_id}` failed: {e}", O::NAME))
    }

    /// Raises an external event to an instance.
    pub async fn raise_event<T: Serialize + ?Sized>(
        &self,
        instance_id: &str,
        name: &str,
        data: &T,
    ) {
        self.client
            .raise_event(instance_id, name, data)
            .await
            .unwrap_or_else(|e| panic!("raising `{name}` to `{instance_id}` failed: {e}"));
    }

    /// Replaces activity `A` by `body` for this runtime (until [`Mock::remove`]); the
    /// returned handle tells how it was called. Activities without a mock run for real.
    ///
    /// ```
    /// use duractor::prelude::*;
    /// use duractor::testing::{TestRuntime, failing_first};
    ///
    /// #[activity]
    /// async fn charge_card(_ctx: ActivityContext, cents: u64) -> Result<String, duractor::Error> {
    ///     unreachable!("the test never reaches the card network")
    /// }
    ///
    /// #[orchestrator]
    /// async fn settle_invoice(ctx: OrchestrationContext, cents: u64) -> Result<String, duractor::Error> {
    ///     let retry = RetryPolicy::new(3, std::time::Duration::from_secs(3600));
    ///     ctx.call_activity_with_retry(ChargeCard, cents, &retry).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let t = TestRuntime::new().await;
    /// let charge = t.mock_activity(ChargeCard, failing_first(2, "declined", |cents| Ok(format!("paid {cents}"))));
    /// let id = t.start(SettleInvoice, 250).await;
    /// assert_eq!(t.output(SettleInvoice, &id).await, "paid 250");
    /// assert_eq!(charge.calls(), [250, 250, 250]);
    /// # }
    /// ```
    pub fn mock_activity<A: Activity>(
        &self,
        _activity: A,
        body: impl Fn(A::Input) -> Result<A::Output, Error> + Send + Sync + 'static,
    ) -> Mock<A> {
        self.router.set::<A>(body);
        Mock::new(self.router.clone())
    }

    /// Waits for the instance to finish, skipping virtual time whenever nothing but timers is
    /// pending, and returns its status.
    ///
    /// # Panics
    ///
    /// When the instance can never finish without the test (it waits for an event nobody
    /// raised: nothing runs, nothing is queued, no timer is pending), and after the real-time
    /// limit. The message shows the status and the history.
    pub async fn wait(&self, instance_id: &str) -> InstanceStatus {
        let started = tokio::time::Instant::now();
        loop {
            let status = self.status(instance_id).await;
            if status.status.is_terminal() {
                return status;
            }
            let stats = self.stats().await;
            if stats.is_idle() {
                // Nothing runs: the status just read is final unless a turn committed in
                // between, so read it again before deciding.
                let status = self.status(instance_id).await;
                if status.status.is_terminal() {
                    return status;
                }
                match self.next_timer().await {
                    Some(due) => {
                        self.move_clock_to(due);
                        continue;
                    }
                    None => {
                        panic!(
                            "instance `{instance_id}` is {} and waits for something only the test can give: \
                             no activity runs, no message is queued, no timer is pending. \
                             Raise the event it waits for before waiting (or it is suspended).\n{}",
                            status.status,
                            self.describe(instance_id).await
                        )
                    }
                }
            }
            if started.elapsed() > self.real_time_limit {
                panic!(
                    "instance `{instance_id}` did not finish within the real-time limit of {:?} \
                     ({} messages ready, {} activities queued or running)\n{}",
                    self.real_time_limit,
                    stats.messages_ready,
                    stats.activity_items,
                    self.describe(instance_id).await
                );
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Waits for the instance (see [`wait`](Self::wait)) and returns its output.
    ///
    /// # Panics
    ///
    /// Unless it completed; the message shows how it ended and its history.
    pub async fn output<O: Orchestrator>(&self, _orchestrator: O, instance_id: &str) -> O::Output {
        let status = self.wait(instance_id).await;
        if status.status != RuntimeStatus::Completed {
            panic!(
                "expected `{instance_id}` to complete, but it is {}\n{}",
                status.status,
                self.describe(instance_id).await
            );
        }
        match status.output::<O::Output>() {
            Ok(output) => output,
            Err(e) => panic!("the output of `{instance_id}` does not decode: {e}"),
        }
    }

    /// Waits for the instance (see [`wait`](Self::wait)) and returns its failure.
    ///
    /// # Panics
    ///
    /// Unless it failed; the message shows how it ended and its history.
    pub async fn failure(&self, instance_id: &str) -> Failure {
        let status = self.wait(instance_id).await;
        match status.failure {
            Some(failure) if status.status == RuntimeStatus::Failed => failure,
            _ => panic!(
                "expected `{instance_id}` to fail, but it is {}\n{}",
                status.status,
                self.describe(instance_id).await
            ),
        }
    }

    /// The instance's status now (no waiting).
    pub async fn status(&self, instance_id: &str) -> InstanceStatus {
        self.client
            .status(instance_id)
            .await
            .unwrap_or_else(|e| panic!("reading the status of `{instance_id}` failed: {e}"))
    }

    /// The instance's history.
    pub async fn history(&self, instance_id: &str) -> Vec<Event> {
        self.client
            .history(instance_id)
            .await
            .unwrap_or_else(|e| panic!("reading the history of `{instance_id}` failed: {e}"))
    }

    /// The instance's history as a table, times relative to the test's start.
    pub async fn history_table(&self, instance_id: &str) -> String {
        HistoryTable::new(&self.history(instance_id).await, self.origin).to_string()
    }

    /// The activities the instance called, in order, by name.
    pub async fn activity_names(&self, instance_id: &str) -> Vec<String> {
        self.history(instance_id)
            .await
            .into_iter()
            .filter_map(|event| match event {
                Event::TaskScheduled { name, .. } => Some(name),
                _ => None,
            })
            .collect()
    }

    /// The inputs of the instance's calls to activity `A`, in order.
    pub async fn activity_inputs<A: Activity>(
        &self,
        _activity: A,
        instance_id: &str,
    ) -> Vec<A::Input> {
        self.history(instance_id)
            .await
            .into_iter()
            .filter_map(|event| match event {
                Event::TaskScheduled { name, input, .. } if name == A::NAME => Some(input),
                _ => None,
            })
            .map(|input| {
                input
                    .decode_as(format_args!(
                        "an input of `{}` in `{instance_id}`'s history",
                        A::NAME
                    ))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// The durable timers the instance created, as how long after the test's start each
    /// was due, in the order they were created.
    pub async fn timers(&self, instance_id: &str) -> Vec<Duration> {
        self.history(instance_id)
            .await
            .into_iter()
            .filter_map(|event| match event {
                Event::TimerCreated { fire_at, .. } => {
                    Some((fire_at - self.origin).to_std().unwrap_or(Duration::ZERO))
                }
                _ => None,
            })
            .collect()
    }

    /// Asserts the instance called exactly these activities, in this order; on a mismatch
    /// the panic shows both lists and the history.
    pub async fn assert_activities(&self, instance_id: &str, expected: &[&str]) {
        let called = self.activity_names(instance_id).await;
        if called != expected {
            panic!(
                "`{instance_id}` called other activities than expected\n  expected: {expected:?}\n  called:   {called:?}\n{}",
                self.describe(instance_id).await
            );
        }
    }

    /// Moves the clock forward by `by`, running everything that falls due on the way at its
    /// own time (a timer due in an hour fires at +1h, and one it leads to after that), and
    /// returns once the engine is idle again.
    pub async fn advance(&self, by: Duration) {
        let to = crate::clock::checked_after(self.clock.now(), by)
            .unwrap_or_else(|| panic!("cannot advance the clock by {by:?}: past the latest time"));
        self.advance_to(to).await;
    }

    /// Moves the clock forward to `to` (see [`advance`](Self::advance)).
    pub async fn advance_to(&self, to: DateTime<Utc>) {
        loop {
            self.run_until_idle().await;
            match self.next_timer().await {
                Some(due) if due <= to => self.move_clock_to(due),
                _ => break,
            }
        }
        self.move_clock_to(to);
        self.run_until_idle().await;
    }

    /// Waits (in real time, without moving the clock) until nothing runs and nothing is
    /// queued that is due now.
    ///
    /// # Panics
    ///
    /// After the real-time limit.
    pub async fn run_until_idle(&self) {
        let started = tokio::time::Instant::now();
        loop {
            let stats = self.stats().await;
            if stats.is_idle() {
                return;
            }
            if started.elapsed() > self.real_time_limit {
                panic!(
                    "the engine was still busy after the real-time limit of {:?}: {} messages ready, {} activities queued or running",
                    self.real_time_limit, stats.messages_ready, stats.activity_items
                );
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Stops the runtime, waiting for what runs.
    pub async fn shutdown(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("the test runtime did not stop cleanly: {e}"));
        }
    }

    fn move_clock_to(&self, to: DateTime<Utc>) {
        // Never fails: the clock is manual and `to` is a time the store holds.
        let _ = self.clock.advance_to(to);
        // Wakes the dispatcher for what became visible even if it armed no timer for it
        // (a scheduled signal from a client, say).
        self.store.events().notify_work();
    }

    async fn stats(&self) -> StoreStats {
        match self.store.stats().await {
            Ok(Some(stats)) => stats,
            Ok(None) => unreachable!("the memory store counts its queues"),
            Err(e) => panic!("reading the store's queues failed: {e}"),
        }
    }

    async fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.store
            .next_visible_at()
            .await
            .unwrap_or_else(|e| panic!("reading the next timer failed: {e}"))
    }

    /// The status line and history table a failing assertion prints.
    async fn describe(&self, instance_id: &str) -> String {
        let status = match self.client.status(instance_id).await {
            Ok(status) => status,
            Err(e) => return format!("(no status: {e})"),
        };
        let mut text = format!(
            "status: {} at {} (virtual time; the test started at {})",
            status.status,
            relative(self.clock.now(), self.origin),
            self.origin
        );
        if let Some(failure) = &status.failure {
            text.push_str(&format!("\nfailure: {failure}"));
        }
        if let Some(output) = &status.output {
            text.push_str(&format!("\noutput: {}", output.preview()));
        }
        match self.client.history(instance_id).await {
            Ok(history) => {
                text.push_str("\nhistory:\n");
                text.push_str(&HistoryTable::new(&history, self.origin).to_string());
            }
            Err(e) => text.push_str(&format!("\n(no history: {e})")),
        }
        text
    }
}

/// What a `#[duractor::test]` function may take: the kit's runtime.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`#[duractor::test]` functions take the test kit's runtime, not `{Self}`",
    label = "expected `TestRuntime`",
    note = "write `async fn name(t: TestRuntime) {{ .. }}` with `use duractor::testing::TestRuntime;`"
)]
pub trait __TestParameter {}

impl __TestParameter for TestRuntime {}

/// Checks the parameter type of a `#[duractor::test]` function at compile time.
#[doc(hidden)]
pub const fn __test_parameter<T: __TestParameter>() {}

/// Runs a `#[duractor::test]` body: a single-threaded tokio runtime, a fresh
/// [`TestRuntime`], the body, then a clean shutdown.
#[doc(hidden)]
pub fn __run_test<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(TestRuntime) -> Fut,
    Fut: std::future::Future,
{
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime for the test: {e}"));
    tokio.block_on(async move {
        let t = TestRuntime::new().await;
        body(t).await
    })
}
