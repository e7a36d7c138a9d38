//! [`OrchestrationContext`]: what an orchestrator does through — durable calls (activities,
//! sub-orchestrations, entities, timers, events), the deterministic replacements for clocks,
//! randomness and ids, continue-as-new — and `OrchestratorBody`, how generated code runs an
//! orchestrator with it. Also the proxy modes of entity calls and signals sent from here.

use std::cell::RefMut;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::actions::Action;
use super::combinators::{EventWaitTimeout, Join, JoinAll, Select, WhenAny};
use super::futures::{
    ActivityCall, Call, ContinueAsNew, Durable, DurableFuture, ENDED_IN_TIME, EventWait,
    LockRequest, SCHEDULE_TO_CLOSE_CANCEL, SubOrchestrationCall, Target, Timer, deadline_passed,
};
use super::state::{State, StateHandle};
use crate::clock::checked_after;
use crate::entity::{
    CallFromOrchestration, Entity, ProxyMode, ProxyTarget, SignalFromOrchestration,
};
use crate::error::{Error, Failure};
use crate::handles::{Activity, LocalBoxFuture, Orchestrator};
use crate::id::EntityId;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::retry::RetryPolicy;
use crate::timeouts::{ActivityOptions, ActivityTimeouts, SCHEDULE_TO_CLOSE_TIMEOUT};

/// How an orchestrator's function runs: implemented by `#[orchestrator]` beside
/// [`Orchestrator`].
#[doc(hidden)]
pub trait OrchestratorBody: Orchestrator {
    /// Runs the function.
    fn __invoke(
        ctx: OrchestrationContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, Failure>>;
}

/// The context of an orchestration: every durable call goes through it.
///
/// An orchestrator is replayed from its history after a restart or an unload, so it must make
/// the same durable calls in the same order every time it runs. The context gives it durable
/// versions of everything that would otherwise differ between runs: [`now`](Self::now) instead
/// of the system clock, [`new_uuid`](Self::new_uuid) and [`rng`](Self::rng) instead of
/// randomness, [`sleep`](Self::sleep) instead of a runtime timer, and activities
/// ([`call_activity`](Self::call_activity)) for all I/O.
///
/// The context is cheap to clone and is not `Send`: an orchestration runs on one thread.
///
/// ```
/// use duractor::prelude::*;
/// use std::time::Duration;
///
/// #[activity]
/// async fn charge(_ctx: ActivityContext, cents: u64) -> Result<String, duractor::Error> {
///     Ok(format!("receipt for {cents}"))
/// }
///
/// #[orchestrator]
/// async fn checkout(ctx: OrchestrationContext, cents: u64) -> Result<String, duractor::Error> {
///     ctx.set_custom_status("charging");
///     let receipt = ctx.call_activity(Charge, cents).await?;
///     ctx.sleep(Duration::from_secs(1)).await;
///     Ok(receipt)
/// }
/// ```
#[derive(Clone)]
pub struct OrchestrationContext {
    instance_id: Arc<str>,
    state: StateHandle,
}

impl fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// The namespace of the name-based UUIDs [`OrchestrationContext::new_uuid`] makes.
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6475_7261_6374_6f72_8000_0000_0000_0001);

impl OrchestrationContext {
    pub(crate) fn new(instance_id: Arc<str>, limits: Limits) -> Self {
        OrchestrationContext {
            state: StateHandle::new(&instance_id, limits),
            instance_id,
        }
    }

    /// The execution's state (for the executor).
    pub(crate) fn state(&self) -> RefMut<'_, State> {
        self.state.borrow()
    }

    /// The shared handle to the state.
    pub(crate) fn state_handle(&self) -> StateHandle {
        self.state.clone()
    }

    /// The instance id of this orchestration.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The orchestrator version stamped on this instance when it started ("" if unversioned).
    pub fn version(&self) -> String {
        self.state().version().to_owned()
    }

    /// The current time of the orchestration: the time at which the current turn started, as
    /// recorded in history. Use it instead of `SystemTime::now()` or `Utc::now()`, which would
    /// differ on replay.
    pub fn now(&self) -> DateTime<Utc> {
        self.state().now()
    }

    /// `true` while the orchestrator is replaying recorded history (its side effects already
    /// happened once); `false` while it runs new steps. Useful to skip logging on replay.
    pub fn is_replaying(&self) -> bool {
        self.state().is_replaying()
    }

    /// A new UUID that is the same on every replay: name-based (v5) from the instance id and a
    /// per-instance counter. Use it instead of `Uuid::new_v4()`.
    pub fn new_uuid(&self) -> Uuid {
        let number = self.state().next_uuid_number();
        let name = format!("{}/{number}", self.instance_id);
        Uuid::new_v5(&UUID_NAMESPACE, name.as_bytes())
    }

    /// A random number generator seeded from the instance id: it yields the same sequence on
    /// every replay. Use it instead of `rand::random()` or `thread_rng()`.
    pub fn rng(&self) -> OrchestrationRng {
        OrchestrationRng {
            state: self.state.clone(),
        }
    }

    /// Sets the custom status visible to clients (`status(..).custom_status`). It is saved
    /// with the turn in which it is set.
    ///
    /// A value that cannot be serialized is replaced by its error message as a string.
    pub fn set_custom_status<T: Serialize + ?Sized>(&self, status: &T) {
        let payload = Payload::encode(status).unwrap_or_else(|e| {
            Payload::encode(&format!("custom status could not be serialized: {e}"))
                .unwrap_or_else(|_| Payload::null())
        });
        let mut state = self.state();
        let payload = match state.limits().check_payload("the custom status", &payload) {
            Ok(()) => payload,
            Err(error) => Payload::encode(&error.to_string()).unwrap_or_else(|_| Payload::null()),
        };
        state.set_custom_status(payload);
    }

    /// Calls an activity and returns a future for its result.
    ///
    /// The call is scheduled when this method is called (not when the future is first
    /// polled), so several calls made before awaiting run in parallel. The output is
    /// `Err(Error::ActivityFailed { .. })` when the activity failed, panicked or timed out
    /// (the activity's default timeouts, from `#[activity(start_to_close = "..", ..)]`,
    /// apply; [`call_activity_with`](Self::call_activity_with) sets them per call).
    pub fn call_activity<A: Activity>(
        &self,
        _activity: A,
        input: A::Input,
    ) -> ActivityCall<A::Output> {
        match self.encode_input(&input, format_args!("input for activity `{}`", A::NAME)) {
            Ok(payload) => {
                let timeout = A::TIMEOUTS.schedule_to_close;
                let deadline = timeout.and_then(|timeout| checked_after(self.now(), timeout));
                let call = self.schedule_activity(A::NAME, |seq| Action::CallActivity {
                    seq,
                    name: A::NAME.to_owned(),
                    input: payload,
                    timeouts: A::TIMEOUTS,
                    deadline,
                    heartbeat: None,
                    priority: 0,
                    attempt: 1,
                });
                // The deadline is a durable timer too: it ends the call even if no worker
                // ever starts it (see `run_activity_attempts`).
                match (deadline.and_then(|at| self.deadline_timer(at)), timeout) {
                    (Some(timer), Some(timeout)) => call.with_deadline(timer, timeout),
                    _ => call,
                }
            }
            Err(error) => Call::failed(self.state.clone(), Target::Activity(A::NAME), error),
        }
    }

    /// Calls an activity, retrying failures as `policy` says, with durable timers between
    /// attempts. Resolves to the first success, or to the last failure. The same as
    /// [`call_activity_with`](Self::call_activity_with) with `ActivityOptions::new().retry(policy)`.
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # use std::time::Duration;
    /// # #[activity]
    /// # async fn charge(_ctx: ActivityContext, cents: u64) -> Result<String, duractor::Error> { Ok(String::new()) }
    /// #[orchestrator]
    /// async fn pay(ctx: OrchestrationContext, cents: u64) -> Result<String, duractor::Error> {
    ///     let policy = RetryPolicy::new(5, Duration::from_secs(1)).backoff_coefficient(2.0);
    ///     ctx.call_activity_with_retry(Charge, cents, &policy).await
    /// }
    /// ```
    pub fn call_activity_with_retry<A: Activity>(
        &self,
        activity: A,
        input: A::Input,
        policy: &RetryPolicy,
    ) -> Durable<impl std::future::Future<Output = Result<A::Output, Error>> + use<A>> {
        let options = ActivityOptions::new().retry(policy.clone());
        self.call_activity_with(activity, input, &options)
    }

    /// Calls an activity with per-call [`ActivityOptions`]: timeouts (over the activity's
    /// defaults) and a retry policy.
    ///
    /// * An attempt that runs longer than start-to-close, or goes longer than the heartbeat
    ///   timeout without `ctx.heartbeat(..)`, is cancelled and fails with a timeout
    ///   (`Failure::kind` `"start_to_close_timeout"` / `"heartbeat_timeout"`), which the retry
    ///   policy retries; a retry starts from the last heartbeat details of the attempt before
    ///   it ([`ActivityContext::heartbeat_details`](crate::ActivityContext::heartbeat_details)).
    /// * Schedule-to-close bounds the whole call: the deadline is a durable timer, so the
    ///   call ends at it even if no worker ever started an attempt; the attempt in flight is
    ///   cancelled, no retry starts that could not begin before it, and the call fails with
    ///   kind `"schedule_to_close_timeout"` (not retriable).
    /// * A result an attempt returns after it timed out is ignored.
    ///
    /// Invalid options (a zero or absurdly long timeout) fail the call at once with
    /// [`Error::InvalidArgument`] naming the timeout. The returned future is a cancellation
    /// scope: cancelling it (a `select` it loses) cancels the attempt in flight.
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # use std::time::Duration;
    /// # #[activity]
    /// # async fn export(_ctx: ActivityContext, day: String) -> Result<u64, duractor::Error> { Ok(0) }
    /// #[orchestrator]
    /// async fn nightly(ctx: OrchestrationContext, day: String) -> Result<u64, duractor::Error> {
    ///     let options = ActivityOptions::new()
    ///         .start_to_close(Duration::from_secs(600))
    ///         .heartbeat_timeout(Duration::from_secs(30))
    ///         .schedule_to_close(Duration::from_secs(3600))
    ///         .retry(RetryPolicy::new(5, Duration::from_secs(10)));
    ///     ctx.call_activity_with(Export, day, &options).await
    /// }
    /// ```
    pub fn call_activity_with<A: Activity>(
        &self,
        _activity: A,
        input: A::Input,
        options: &ActivityOptions,
    ) -> Durable<impl std::future::Future<Output = Result<A::Output, Error>> + use<A>> {
        let timeouts = A::TIMEOUTS.overridden_by(options.timeouts());
        let encoded = timeouts
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("activity `{}`: {e}", A::NAME)))
            .and_then(|()| {
                self.encode_input(&input, format_args!("input for activity `{}`", A::NAME))
            });
        let ctx = self.clone();
        let policy = options
            .retry
            .clone()
            .unwrap_or_else(|| RetryPolicy::new(1, Duration::ZERO));
        let priority = options.priority;
        Durable::__new(async move {
            let payload = encoded?;
            ctx.run_activity_attempts::<A::Output>(A::NAME, payload, timeouts, priority, &policy)
                .await
        })
    }

    /// The attempts of one activity call: each one a durable call, retried as `policy` says
    /// with durable timers between, within the schedule-to-close deadline, each retry
    /// starting from the heartbeat details the attempt before it left.
    async fn run_activity_attempts<T: DeserializeOwned>(
        &self,
        name: &'static str,
        input: Payload,
        timeouts: ActivityTimeouts,
        priority: i32,
        policy: &RetryPolicy,
    ) -> Result<T, Error> {
        let first_started = self.now();
        let deadline = timeouts
            .schedule_to_close
            .and_then(|timeout| checked_after(first_started, timeout));
        // The deadline is also a durable timer (armed after the first attempt is scheduled):
        // it ends the call even while no worker runs an attempt (none has the activity, flow
        // control holds it back, or the one running it died and its lease has not lapsed).
        let mut deadline_timer: Option<Timer> = None;
        let mut heartbeat = None;
        let mut number = 1;
        let outcome = loop {
            let call = self.schedule_activity::<T>(name, |seq| Action::CallActivity {
                seq,
                name: name.to_owned(),
                input: input.clone(),
                timeouts,
                deadline,
                heartbeat: heartbeat.clone(),
                priority,
                attempt: number,
            });
            let seq = call.seq();
            if number == 1
                && let Some(at) = deadline
            {
                deadline_timer = self.deadline_timer(at);
            }
            let result = match deadline_timer.as_mut() {
                Some(timer) => {
                    let mut call = call;
                    let raced = std::future::poll_fn(|cx| {
                        call.poll_before(timer, SCHEDULE_TO_CLOSE_CANCEL, cx)
                    });
                    match raced.await {
                        Some(result) => result,
                        None => {
                            let timeout = timeouts.schedule_to_close.unwrap_or_default();
                            break Err(deadline_passed(name, timeout, number));
                        }
                    }
                }
                None => call.await,
            };
            let error = match result {
                Ok(output) => break Ok(output),
                Err(error) => error,
            };
            if let Some(seq) = seq {
                heartbeat = self.state().take_failed_heartbeat(seq).or(heartbeat);
            }
            let wait = policy.delay_before(number);
            let elapsed = (self.now() - first_started).to_std().unwrap_or_default();
            if !policy.should_retry(&error, number, elapsed, wait) {
                break Err(error);
            }
            if let Some(deadline) = deadline
                && checked_after(self.now(), wait).is_none_or(|next| next >= deadline)
            {
                break Err(schedule_to_close_error(name, timeouts, error));
            }
            tracing::debug!(instance_id = %self.instance_id, activity = name, attempt = number, %error, "retrying after {wait:?}");
            self.sleep(wait).await;
            // The wait ends before the deadline, but a late worker may deliver both timers
            // in one turn: then the deadline ends the call, with the last real failure.
            if deadline.is_some_and(|deadline| self.now() >= deadline) {
                break Err(schedule_to_close_error(name, timeouts, error));
            }
            number += 1;
        };
        if let Some(timer) = deadline_timer {
            // A timer that already fired is left as it is.
            timer.cancel_because(ENDED_IN_TIME);
        }
        outcome
    }

    /// Starts a sub-orchestration (a child instance with id `<this instance id>:<call number>`)
    /// and returns a future for its output. A failed, terminated or unstartable child is
    /// `Err(Error::SubOrchestrationFailed { .. })`, carrying the child's failure.
    pub fn call_sub_orchestrator<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
    ) -> SubOrchestrationCall<O::Output> {
        self.sub_orchestrator::<O>(input, None)
    }

    /// Like [`call_sub_orchestrator`](Self::call_sub_orchestrator), with a chosen instance id
    /// for the child. If an instance with that id is running, the call fails; so does an id
    /// that breaks the rule in [`id`](crate::id) (e.g. one starting with `@`), with
    /// [`Error::InvalidArgument`], before anything is scheduled.
    pub fn call_sub_orchestrator_with_id<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
        instance_id: impl Into<String>,
    ) -> SubOrchestrationCall<O::Output> {
        self.sub_orchestrator::<O>(input, Some(instance_id.into()))
    }

    /// Calls a sub-orchestrator, retrying failures as `policy` says (each attempt is a new
    /// child instance).
    pub fn call_sub_orchestrator_with_retry<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
        policy: &RetryPolicy,
    ) -> Durable<impl std::future::Future<Output = Result<O::Output, Error>> + 'static> {
        let encoded =
            self.encode_input(&input, format_args!("input for orchestrator `{}`", O::NAME));
        let ctx = self.clone();
        let policy = policy.clone();
        Durable::__new(async move {
            let payload = encoded?;
            ctx.with_retry(&policy, || {
                ctx.schedule_sub_orchestrator::<O::Output>(
                    O::NAME,
                    O::VERSION,
                    payload.clone(),
                    None,
                )
            })
            .await
        })
    }

    fn sub_orchestrator<O: Orchestrator>(
        &self,
        input: O::Input,
        instance_id: Option<String>,
    ) -> SubOrchestrationCall<O::Output> {
        let checked = match &instance_id {
            Some(id) => crate::id::validate_instance_id(id).map_err(|e| {
                Error::InvalidArgument(format!("sub-orchestration `{}`: {e}", O::NAME))
            }),
            None => Ok(()),
        };
        let encoded = checked.and_then(|()| {
            self.encode_input(&input, format_args!("input for orchestrator `{}`", O::NAME))
        });
        match encoded {
            Ok(payload) => {
                self.schedule_sub_orchestrator(O::NAME, O::VERSION, payload, instance_id)
            }
            Err(error) => Call::failed(
                self.state.clone(),
                Target::SubOrchestration {
                    name: O::NAME,
                    instance_id: instance_id.unwrap_or_default(),
                },
                error,
            ),
        }
    }

    /// Encodes a call's input and checks its size.
    fn encode_input<T: Serialize>(
        &self,
        input: &T,
        what: std::fmt::Arguments<'_>,
    ) -> Result<Payload, Error> {
        let payload =
            Payload::encode(input).map_err(|e| Error::invalid_payload(what.to_string(), e))?;
        let limits = self.state().limits();
        limits.check_payload(&what.to_string(), &payload)?;
        Ok(payload)
    }

    /// The durable timer of the call just scheduled, for its schedule-to-close deadline `at`
    /// (`None` when replaying a history recorded before calls armed one).
    fn deadline_timer(&self, at: DateTime<Utc>) -> Option<Timer> {
        let here = self.state().deadline_timer_here(at);
        here.then(|| self.timer_at(at))
    }

    /// Schedules activity `name`'s call that `make` describes (given its sequence number).
    fn schedule_activity<T>(
        &self,
        name: &'static str,
        make: impl FnOnce(u64) -> Action,
    ) -> Call<T> {
        let seq = self.state().schedule(make);
        Call::new(self.state.clone(), seq, Target::Activity(name))
    }

    fn schedule_sub_orchestrator<T>(
        &self,
        name: &'static str,
        version: &'static str,
        input: Payload,
        instance_id: Option<String>,
    ) -> Call<T> {
        let mut child_id = String::new();
        let seq = self.state().schedule(|seq| {
            child_id = instance_id.unwrap_or_else(|| format!("{}:{seq}", self.instance_id));
            Action::CallSubOrchestrator {
                seq,
                name: name.to_owned(),
                version: version.to_owned(),
                instance_id: child_id.clone(),
                input,
            }
        });
        Call::new(
            self.state.clone(),
            seq,
            Target::SubOrchestration {
                name,
                instance_id: child_id,
            },
        )
    }

    /// Runs `attempt()` until it succeeds or `policy` says stop, sleeping durably between.
    async fn with_retry<T: serde::de::DeserializeOwned>(
        &self,
        policy: &RetryPolicy,
        mut attempt: impl FnMut() -> Call<T>,
    ) -> Result<T, Error> {
        let first_started = self.now();
        let mut number = 1;
        loop {
            let error = match attempt().await {
                Ok(output) => return Ok(output),
                Err(error) => error,
            };
            let wait = policy.delay_before(number);
            let elapsed = (self.now() - first_started).to_std().unwrap_or_default();
            if !policy.should_retry(&error, number, elapsed, wait) {
                return Err(error);
            }
            tracing::debug!(instance_id = %self.instance_id, attempt = number, %error, "retrying after {wait:?}");
            self.sleep(wait).await;
            number += 1;
        }
    }

    /// A proxy for calling operations of entity `E` with `key`: each method returns a durable
    /// future of the operation's output (or `Error::EntityOperationFailed`).
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # #[entity]
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Counter { value: i64 }
    /// # #[entity]
    /// # impl Counter {
    /// #     fn add(&mut self, n: i64) { self.value += n }
    /// #     fn get(&self) -> i64 { self.value }
    /// # }
    /// #[orchestrator]
    /// async fn count(ctx: OrchestrationContext, key: String) -> Result<i64, duractor::Error> {
    ///     ctx.signal_entity::<Counter>(key.clone()).add(1);      // one-way
    ///     ctx.call_entity::<Counter>(key).get().await            // two-way
    /// }
    /// ```
    pub fn call_entity<E: Entity>(
        &self,
        key: impl Into<String>,
    ) -> E::Proxy<CallFromOrchestration> {
        ProxyTarget::proxy::<E>(self.clone(), key, None)
    }

    /// A proxy for signalling (one-way) operations of entity `E` with `key`: each method
    /// returns `()`; the signal is sent when the turn commits.
    pub fn signal_entity<E: Entity>(
        &self,
        key: impl Into<String>,
    ) -> E::Proxy<SignalFromOrchestration> {
        ProxyTarget::proxy::<E>(self.clone(), key, None)
    }

    /// Like [`signal_entity`](Self::signal_entity), delivered at `at`.
    pub fn signal_entity_at<E: Entity>(
        &self,
        key: impl Into<String>,
        at: DateTime<Utc>,
    ) -> E::Proxy<SignalFromOrchestration> {
        ProxyTarget::proxy::<E>(self.clone(), key, Some(at))
    }

    /// Locks entities for this orchestration (a critical section): resolves when all are
    /// locked. They are locked in one global order (sorted ids), so two orchestrations locking
    /// overlapping sets cannot deadlock. While the returned guard lives, other callers'
    /// operations on these entities wait; the orchestration may call only these entities, one
    /// call at a time per entity. Critical sections do not nest.
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # use duractor::entity::EntityId;
    /// # #[entity]
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Account { balance: i64 }
    /// # #[entity]
    /// # impl Account {
    /// #     fn deposit(&mut self, n: i64) { self.balance += n }
    /// #     fn balance(&self) -> i64 { self.balance }
    /// # }
    /// #[orchestrator]
    /// async fn transfer(ctx: OrchestrationContext, (from, to, amount): (String, String, i64)) -> Result<bool, duractor::Error> {
    ///     let _section = ctx
    ///         .lock(&[EntityId::of::<Account>(from.clone()), EntityId::of::<Account>(to.clone())])
    ///         .await?;
    ///     if ctx.call_entity::<Account>(from.clone()).balance().await? < amount {
    ///         return Ok(false);
    ///     }
    ///     let debit = ctx.call_entity::<Account>(from).deposit(-amount);
    ///     let credit = ctx.call_entity::<Account>(to).deposit(amount);
    ///     let (debit, credit) = ctx.join(debit, credit).await;
    ///     debit?;
    ///     credit?;
    ///     Ok(true)
    /// }
    /// ```
    pub fn lock<I>(&self, entities: I) -> LockRequest
    where
        I: IntoIterator,
        I::Item: std::borrow::Borrow<EntityId>,
    {
        let mut sorted: Vec<EntityId> = entities
            .into_iter()
            .map(|id| std::borrow::Borrow::<EntityId>::borrow(&id).clone())
            .collect();
        sorted.sort();
        sorted.dedup();
        let locked = self.state().lock(sorted.clone());
        match locked {
            Ok(seq) => LockRequest::new(self.state.clone(), seq, sorted),
            Err(error) => LockRequest::failed(self.state.clone(), error),
        }
    }

    /// Schedules a two-way entity call (used by proxies).
    pub(crate) fn entity_call<T>(
        &self,
        entity: &EntityId,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) -> Call<T> {
        let target = Target::Entity {
            entity: entity.clone(),
            operation,
        };
        let scheduled = input.and_then(|payload| {
            let what = format!("input of entity operation `{entity}.{operation}`");
            let mut state = self.state();
            state.limits().check_payload(&what, &payload)?;
            state.call_entity(entity, operation, payload)
        });
        match scheduled {
            Ok(seq) => Call::new(self.state.clone(), seq, target),
            Err(error) => Call::failed(self.state.clone(), target, error),
        }
    }

    /// Schedules a one-way entity signal (used by proxies). A signal whose input cannot be
    /// serialized fails the orchestration.
    pub(crate) fn entity_signal(
        &self,
        entity: &EntityId,
        operation: &'static str,
        input: Result<Payload, Error>,
        at: Option<DateTime<Utc>>,
    ) {
        let mut state = self.state();
        match input {
            Ok(input) => {
                state.schedule(|seq| Action::SignalEntity {
                    seq,
                    entity: entity.clone(),
                    operation: operation.to_owned(),
                    input,
                    at,
                });
            }
            Err(error) => state.fail(error.to_failure()),
        }
    }

    /// Ends this execution and starts a new one of the same instance with `input` and an empty
    /// history: how an eternal orchestration (a monitor, a loop) keeps its history bounded.
    /// Events raised but not yet received are dropped (see
    /// [`continue_as_new_preserving_events`](Self::continue_as_new_preserving_events)).
    ///
    /// The returned future never completes; nothing after its `.await` runs:
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # use std::time::Duration;
    /// #[orchestrator]
    /// async fn monitor(ctx: OrchestrationContext, checks: u64) -> Result<(), duractor::Error> {
    ///     ctx.sleep(Duration::from_secs(60)).await;
    ///     return ctx.continue_as_new(checks + 1).await;
    /// }
    /// ```
    pub fn continue_as_new<I: Serialize, T>(&self, input: I) -> ContinueAsNew<T> {
        self.request_continue(&input, false)
    }

    /// Like [`continue_as_new`](Self::continue_as_new), but events raised and not yet received
    /// are delivered to the new execution, in the order they were raised.
    pub fn continue_as_new_preserving_events<I: Serialize, T>(&self, input: I) -> ContinueAsNew<T> {
        self.request_continue(&input, true)
    }

    fn request_continue<I: Serialize, T>(
        &self,
        input: &I,
        preserve_events: bool,
    ) -> ContinueAsNew<T> {
        let what = "the input of continue_as_new";
        let encoded = Payload::encode(input).map_err(|e| Error::invalid_payload(what, e));
        let mut state = self.state();
        match encoded.and_then(|payload| {
            state
                .limits()
                .check_payload(what, &payload)
                .map(|()| payload)
        }) {
            Ok(input) => state.continue_as_new(input, preserve_events),
            Err(error) => state.fail(error.to_failure()),
        }
        ContinueAsNew::new()
    }

    /// Whether to take the new code path of a change named `patch`.
    ///
    /// It returns `false` only when replaying a point that this instance already passed
    /// *without* the patch (history has no patch marker there): the instance keeps the code
    /// path it took and replays without nondeterminism. Everywhere else it returns `true` and
    /// records a marker, so later replays agree. An old instance that reaches the patched point
    /// only after the new code is deployed takes the new path; to keep old instances on old
    /// code throughout, branch on [`version`](Self::version) instead.
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # #[activity]
    /// # async fn send_email(_ctx: ActivityContext, to: String) -> Result<(), duractor::Error> { Ok(()) }
    /// # #[activity]
    /// # async fn send_sms(_ctx: ActivityContext, to: String) -> Result<(), duractor::Error> { Ok(()) }
    /// #[orchestrator]
    /// async fn notify(ctx: OrchestrationContext, to: String) -> Result<(), duractor::Error> {
    ///     if ctx.is_patched("sms-instead-of-email") {
    ///         ctx.call_activity(SendSms, to).await
    ///     } else {
    ///         ctx.call_activity(SendEmail, to).await
    ///     }
    /// }
    /// ```
    pub fn is_patched(&self, patch: &str) -> bool {
        self.state().patched(patch)
    }

    /// A durable timer that fires after `duration` of orchestration time. It survives
    /// restarts: the wake-up is stored, not held in memory.
    ///
    /// A duration that ends after [`latest_timer_time`](crate::clock::latest_timer_time) (the year 9999) fails the
    /// orchestration with an error saying so; to wait without a time limit, wait for an event.
    pub fn sleep(&self, duration: Duration) -> Timer {
        match checked_after(self.now(), duration) {
            Some(fire_at) => self.timer_at(fire_at),
            None => self.fail_timer(format!(
                "ctx.sleep({duration:?}) would fire after {}, the latest time a durable timer \
                 can have; use a shorter duration (to wait with no time limit, wait for an event)",
                crate::clock::latest_timer_time()
            )),
        }
    }

    /// A durable timer that fires at `fire_at` (at once if that is in the past). A time after
    /// [`latest_timer_time`](crate::clock::latest_timer_time) fails the orchestration with an error saying so.
    pub fn timer_at(&self, fire_at: DateTime<Utc>) -> Timer {
        if fire_at > crate::clock::latest_timer_time() {
            return self.fail_timer(format!(
                "ctx.timer_at({fire_at}) is after {}, the latest time a durable timer can have",
                crate::clock::latest_timer_time()
            ));
        }
        let seq = self
            .state()
            .schedule(|seq| Action::CreateTimer { seq, fire_at });
        Timer::new(self.state.clone(), seq)
    }

    /// A timer that cannot exist: the execution fails with `message` after this poll, and the
    /// timer never fires (the code after it never runs).
    fn fail_timer(&self, message: String) -> Timer {
        let mut failure = Error::InvalidArgument(message).to_failure();
        failure.non_retriable = true;
        self.state().fail(failure);
        Timer::never(self.state.clone())
    }

    /// Waits for the external event `name` (raised with `Client::raise_event`) and
    /// deserializes its data as `T`.
    ///
    /// Events raised before anyone waits are buffered and delivered in the order they were
    /// raised, one per waiter.
    pub fn wait_for_event<T: DeserializeOwned>(&self, name: &str) -> EventWait<T> {
        EventWait::new(self.state.clone(), name)
    }

    /// Waits for the external event `name` for at most `timeout` of orchestration time:
    /// `Ok(Some(data))` if it arrived first, `Ok(None)` if the timeout fired first.
    ///
    /// A timeout that ends after [`latest_timer_time`](crate::clock::latest_timer_time) (the year 9999) resolves to
    /// `Err(Error::InvalidArgument)` at once, without waiting.
    pub fn wait_for_event_timeout<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> EventWaitTimeout<T> {
        if checked_after(self.now(), timeout).is_none() {
            return EventWaitTimeout::failed(Error::InvalidArgument(format!(
                "the timeout of ctx.wait_for_event_timeout(\"{name}\", {timeout:?}) would end after \
                 {}, the latest time a durable timer can have; use a shorter timeout, or \
                 ctx.wait_for_event to wait with no time limit",
                crate::clock::latest_timer_time()
            )));
        }
        let timer = self.sleep(timeout);
        EventWaitTimeout::new(self.wait_for_event(name), timer)
    }

    /// Waits for all futures (fan-in) and returns their outputs in the order given.
    pub fn join_all<F: DurableFuture>(&self, futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
        JoinAll::new(futures)
    }

    /// Waits for both futures and returns both outputs.
    pub fn join<A: DurableFuture, B: DurableFuture>(&self, a: A, b: B) -> Join<A, B> {
        Join::new(a, b)
    }

    /// Waits for the first of two futures: the one whose completion history recorded first
    /// wins, on every replay. The loser is dropped (a losing timer never keeps the instance
    /// from completing).
    pub fn select<A: DurableFuture, B: DurableFuture>(&self, a: A, b: B) -> Select<A, B> {
        Select::new(a, b)
    }

    /// Waits for the first of several futures and returns its index and output; like
    /// [`select`](Self::select) for any number of futures of one type.
    pub fn when_any<F: DurableFuture>(&self, futures: impl IntoIterator<Item = F>) -> WhenAny<F> {
        WhenAny::new(futures)
    }
}

/// A deterministic random number generator, seeded from the instance id
/// ([`OrchestrationContext::rng`]). It is a SplitMix64 stream shared by all handles of one
/// instance, so the numbers depend only on the order in which the code asks for them.
pub struct OrchestrationRng {
    state: StateHandle,
}

impl OrchestrationRng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state.borrow().next_random()
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A float uniformly distributed in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A number uniformly distributed in `range` (`low..high`, `high > low`).
    ///
    /// # Panics
    /// If the range is empty.
    pub fn gen_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        assert!(
            range.start < range.end,
            "gen_range called with an empty range"
        );
        let span = range.end - range.start;
        // Lemire's multiply-shift; the tiny bias is irrelevant for orchestration decisions.
        range.start + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// `true` with probability `p`.
    pub fn gen_bool(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// The future of an entity call from an orchestration.
pub type EntityCall<T> = Call<T>;

impl ProxyMode for CallFromOrchestration {
    type Sender = OrchestrationContext;
    type Output<T: DeserializeOwned + 'static> = EntityCall<T>;

    fn send<T: DeserializeOwned + 'static>(
        target: &ProxyTarget<Self>,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) -> EntityCall<T> {
        target.sender.entity_call(&target.entity, operation, input)
    }
}

impl ProxyMode for SignalFromOrchestration {
    type Sender = OrchestrationContext;
    type Output<T: DeserializeOwned + 'static> = ();

    fn send<T: DeserializeOwned + 'static>(
        target: &ProxyTarget<Self>,
        operation: &'static str,
        input: Result<Payload, Error>,
    ) {
        target
            .sender
            .entity_signal(&target.entity, operation, input, target.at);
    }
}

/// The error of a call whose schedule-to-close timeout ended it between attempts, carrying
/// the last attempt's failure.
fn schedule_to_close_error(name: &str, timeouts: ActivityTimeouts, last: Error) -> Error {
    let timeout = timeouts.schedule_to_close.unwrap_or_default();
    let last = match last {
        Error::ActivityFailed { failure, .. } => failure,
        other => other.to_failure(),
    };
    let mut failure = Failure::new(
        SCHEDULE_TO_CLOSE_TIMEOUT,
        format!(
            "activity `{name}` did not complete within its schedule-to-close timeout of \
             {timeout:?}; the last attempt failed: {last}"
        ),
    )
    .with_cause(last);
    failure.non_retriable = true;
    Error::ActivityFailed {
        name: name.to_owned(),
        failure,
    }
}
