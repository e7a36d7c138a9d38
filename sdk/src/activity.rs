//! Activities: the functions that do the work (I/O allowed), run at least once per call.
//! [`ActivityContext`] is what an activity receives; [`SharedState`] holds the values the
//! runtime shares with every activity; `ActivityBody` is how generated code runs one.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::error::{Error, Failure};
use crate::handles::{Activity, LocalBoxFuture, decode_input, encode_output};
use crate::limits::Limits;
use crate::panics::lock;
use crate::payload::Payload;

/// How an activity's function runs: implemented by `#[activity]` beside [`Activity`].
#[doc(hidden)]
pub trait ActivityBody: Activity {
    /// Runs the function.
    fn __invoke(
        ctx: ActivityContext,
        input: Self::Input,
    ) -> LocalBoxFuture<'static, Result<Self::Output, Failure>>;
}

/// The context of an activity execution.
///
/// Activities may do anything (I/O, clocks, randomness): they run at least once per call, so
/// make their side effects idempotent, for instance with [`idempotency_key`](Self::idempotency_key).
///
/// A long activity reports progress with [`heartbeat`](Self::heartbeat) (a retry or a
/// redelivery after a crash resumes from [`heartbeat_details`](Self::heartbeat_details)) and
/// stops when told to: [`cancelled`](Self::cancelled) resolves, and
/// [`is_cancelled`](Self::is_cancelled) turns true, when the orchestration cancels the call
/// (a `select` it lost), ends or is terminated, and when the attempt times out.
///
/// ```
/// # use duractor::prelude::*;
/// #[activity]
/// async fn export(ctx: ActivityContext, rows: u64) -> Result<u64, duractor::Error> {
///     let mut done: u64 = ctx.heartbeat_details()?.unwrap_or(0); // resume where the last attempt was
///     while done < rows {
///         tokio::select! {
///             _ = ctx.cancelled() => return Err(duractor::Error::msg("export stopped")),
///             _ = tokio::task::yield_now() => {} // one batch of real work here
///         }
///         done += 1;
///         ctx.heartbeat(&done)?;
///     }
///     Ok(done)
/// }
/// ```
#[derive(Clone)]
pub struct ActivityContext {
    info: Arc<ActivityInfo>,
}

struct ActivityInfo {
    instance_id: String,
    name: String,
    seq: u64,
    attempt: u32,
    shared: SharedState,
    control: Arc<AttemptControl>,
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("instance_id", &self.info.instance_id)
            .field("name", &self.info.name)
            .field("seq", &self.info.seq)
            .field("attempt", &self.info.attempt)
            .field("cancelled", &self.info.control.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    pub(crate) fn new(
        instance_id: String,
        name: String,
        seq: u64,
        attempt: u32,
        shared: SharedState,
        control: Arc<AttemptControl>,
    ) -> Self {
        ActivityContext {
            info: Arc::new(ActivityInfo {
                instance_id,
                name,
                seq,
                attempt,
                shared,
                control,
            }),
        }
    }

    /// A context for calling an activity function directly, e.g. in a unit test. Cancel it
    /// through [`cancellation`](Self::cancellation) to test how the activity stops.
    pub fn for_test(instance_id: &str) -> Self {
        Self::new(
            instance_id.to_owned(),
            "test".to_owned(),
            0,
            1,
            SharedState::default(),
            Arc::new(AttemptControl::new(
                None,
                Limits::default(),
                Clock::system(),
            )),
        )
    }

    /// The instance id of the orchestration that called this activity.
    pub fn instance_id(&self) -> &str {
        &self.info.instance_id
    }

    /// The activity's registered name.
    pub fn activity_name(&self) -> &str {
        &self.info.name
    }

    /// A key that is the same for every execution of this one call (instance id and call
    /// number): pass it to external systems to make retried side effects idempotent.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.info.instance_id, self.info.seq)
    }

    /// Which attempt this is, starting at 1: the retry policy's attempt number (the third
    /// try of `call_activity_with_retry` is 3), plus one for each delivery after a crash.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// A shared value registered on the runtime with `RuntimeBuilder::with_shared`
    /// (an HTTP client, a connection pool, configuration).
    pub fn shared<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.info.shared.get::<T>()
    }

    /// Records progress: `details` (any serde value: a cursor, a count) are what a retry of
    /// this call, or a redelivery after this worker crashes, reads back with
    /// [`heartbeat_details`](Self::heartbeat_details). It also proves the attempt is alive
    /// for its heartbeat timeout. Cheap to call often: the worker stores the latest details a
    /// few times a second, not once per call.
    ///
    /// Fails with [`Error::InvalidPayload`] when `details` cannot be serialized, and with
    /// [`Error::LimitExceeded`] when they are larger than the payload limit
    /// (`Limits::max_payload_bytes`); the last accepted details are kept.
    pub fn heartbeat<T: Serialize + ?Sized>(&self, details: &T) -> Result<(), Error> {
        let what = format!("the heartbeat details of activity `{}`", self.info.name);
        let payload = Payload::encode(details).map_err(|e| Error::invalid_payload(&what, e))?;
        self.info.control.limits.check_payload(&what, &payload)?;
        self.info.control.beat(payload);
        Ok(())
    }

    /// The details of the last heartbeat of this call: this attempt's latest, or else those
    /// the attempt before it left (a retry after a timeout or failure, a redelivery after a
    /// crash). `Ok(None)` when there are none; an error when they do not decode as `T`.
    pub fn heartbeat_details<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let what = format!("the heartbeat details of activity `{}`", self.info.name);
        self.info
            .control
            .details()
            .map(|details| details.decode_as(format_args!("{what}")))
            .transpose()
    }

    /// Whether the attempt was told to stop: the orchestration cancelled the call, ended or
    /// was terminated, or the attempt timed out. What the activity returns after that is
    /// ignored; stop soon (the worker drops the attempt after its grace period).
    pub fn is_cancelled(&self) -> bool {
        self.info.control.is_cancelled()
    }

    /// Resolves when the attempt is told to stop (see [`is_cancelled`](Self::is_cancelled));
    /// use it in `tokio::select!` beside the work.
    pub async fn cancelled(&self) {
        self.info.control.cancelled().await;
    }

    /// Why the attempt was told to stop, once it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.info.control.reason()
    }

    /// A token for the attempt's cancellation, to hand to code that does not take the
    /// context (a spawned task, a client library's loop).
    pub fn cancellation(&self) -> CancellationToken {
        CancellationToken {
            control: self.info.control.clone(),
        }
    }
}

/// Why an activity attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The orchestration no longer needs the result: it cancelled the call (a `select` it
    /// lost, `call.cancel()`), ended, or was terminated; or another worker took the attempt
    /// over after this one lost its lease.
    Cancelled,
    /// The attempt ran longer than its start-to-close timeout.
    StartToCloseTimeout,
    /// The attempt went longer than its heartbeat timeout without a heartbeat.
    HeartbeatTimeout,
    /// The call's schedule-to-close timeout ended it.
    ScheduleToCloseTimeout,
}

impl CancelReason {
    /// The failure kind history records for an attempt stopped for this reason.
    pub fn failure_kind(self) -> &'static str {
        match self {
            CancelReason::Cancelled => crate::timeouts::CANCELLED,
            CancelReason::StartToCloseTimeout => crate::timeouts::START_TO_CLOSE_TIMEOUT,
            CancelReason::HeartbeatTimeout => crate::timeouts::HEARTBEAT_TIMEOUT,
            CancelReason::ScheduleToCloseTimeout => crate::timeouts::SCHEDULE_TO_CLOSE_TIMEOUT,
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelReason::Cancelled => "the call was cancelled",
            CancelReason::StartToCloseTimeout => "the start-to-close timeout elapsed",
            CancelReason::HeartbeatTimeout => "the heartbeat timeout elapsed",
            CancelReason::ScheduleToCloseTimeout => "the schedule-to-close timeout elapsed",
        })
    }
}

/// The cancellation of one activity attempt, cloneable and `Send`: see
/// [`ActivityContext::cancellation`].
#[derive(Clone)]
pub struct CancellationToken {
    control: Arc<AttemptControl>,
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("reason", &self.control.reason())
            .finish()
    }
}

impl CancellationToken {
    /// Whether the attempt was told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }

    /// Resolves when the attempt is told to stop.
    pub async fn cancelled(&self) {
        self.control.cancelled().await;
    }

    /// Why, once it was.
    pub fn reason(&self) -> Option<CancelReason> {
        self.control.reason()
    }

    /// Tells the attempt to stop (for tests of an activity called directly with
    /// [`ActivityContext::for_test`]; the runtime cancels attempts itself).
    pub fn cancel(&self, reason: CancelReason) {
        self.control.cancel(reason);
    }
}

/// What an activity attempt and its worker share: the cancellation, and the heartbeats the
/// worker stores.
pub(crate) struct AttemptControl {
    reason: Mutex<Option<CancelReason>>,
    cancelled: AtomicBool,
    notify: Notify,
    /// Details of the last heartbeat (or those the attempt started from), and whether the
    /// worker has stored them.
    details: Mutex<(Option<Payload>, bool)>,
    /// When the last heartbeat came (or the attempt started), on the store's clock.
    last_beat: Mutex<DateTime<Utc>>,
    limits: Limits,
    clock: Clock,
}

impl AttemptControl {
    pub(crate) fn new(details: Option<Payload>, limits: Limits, clock: Clock) -> Self {
        AttemptControl {
            reason: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            notify: Notify::new(),
            details: Mutex::new((details, true)),
            last_beat: Mutex::new(clock.now()),
            limits,
            clock,
        }
    }

    fn beat(&self, details: Payload) {
        *lock(&self.details) = (Some(details), false);
        *lock(&self.last_beat) = self.clock.now();
    }

    fn details(&self) -> Option<Payload> {
        lock(&self.details).0.clone()
    }

    /// Whether a heartbeat's details are waiting to be stored.
    pub(crate) fn has_unsaved(&self) -> bool {
        let details = lock(&self.details);
        !details.1 && details.0.is_some()
    }

    /// The details of a heartbeat not stored yet, marking them stored.
    pub(crate) fn take_unsaved(&self) -> Option<Payload> {
        let mut details = lock(&self.details);
        if details.1 {
            return None;
        }
        details.1 = true;
        details.0.clone()
    }

    /// Marks `details` unsaved again after storing them failed, unless a newer heartbeat
    /// replaced them meanwhile (the next sync stores them then).
    pub(crate) fn unsaved_again(&self, details: &Payload) {
        let mut current = lock(&self.details);
        if current.0.as_ref() == Some(details) {
            current.1 = false;
        }
    }

    /// The last heartbeat details (for the failure of the attempt, which a retry resumes from).
    pub(crate) fn last_details(&self) -> Option<Payload> {
        self.details()
    }

    /// When the last heartbeat came (or the attempt started).
    pub(crate) fn last_beat(&self) -> DateTime<Utc> {
        *lock(&self.last_beat)
    }

    /// Tells the attempt to stop; the first reason given stays.
    pub(crate) fn cancel(&self, reason: CancelReason) {
        let mut current = lock(&self.reason);
        if current.is_none() {
            *current = Some(reason);
            self.cancelled.store(true, Ordering::Release);
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        *lock(&self.reason)
    }

    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Values shared with every activity, by type.
#[derive(Clone, Default)]
pub struct SharedState {
    values: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl SharedState {
    /// Adds (or replaces) the value of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        Arc::make_mut(&mut self.values).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|value| value.clone().downcast::<T>().ok())
    }
}

type ErasedActivityFn =
    fn(ActivityContext, Payload) -> LocalBoxFuture<'static, Result<Payload, Failure>>;

/// A registered activity, type-erased: name, type names and how to run it on JSON.
#[derive(Clone, Copy)]
pub struct ActivityEntry {
    /// Registered name.
    pub name: &'static str,
    /// The Rust input type's name.
    pub input_type: fn() -> &'static str,
    /// The Rust output type's name.
    pub output_type: fn() -> &'static str,
    /// Its declared flow-control limits.
    pub flow: fn() -> Option<crate::flow::FlowControl>,
    pub(crate) invoke: ErasedActivityFn,
    pub(crate) check_input: fn(&Payload) -> Result<(), Error>,
}

impl ActivityEntry {
    /// The entry for a typed handle.
    pub const fn of<A: ActivityBody>() -> Self {
        ActivityEntry {
            name: A::NAME,
            input_type: std::any::type_name::<A::Input>,
            output_type: std::any::type_name::<A::Output>,
            flow: A::flow_control,
            invoke: invoke_activity::<A>,
            check_input: check_activity_input::<A>,
        }
    }
}

impl ActivityEntry {
    /// Checks that `input` deserializes into the activity's input type.
    pub fn check_input(&self, input: &Payload) -> Result<(), Error> {
        (self.check_input)(input)
    }
}

fn invoke_activity<A: ActivityBody>(
    ctx: ActivityContext,
    input: Payload,
) -> LocalBoxFuture<'static, Result<Payload, Failure>> {
    Box::pin(async move {
        let input: A::Input =
            decode_input(&input, format_args!("input for activity `{}`", A::NAME))?;
        let output = A::__invoke(ctx, input).await?;
        encode_output(&output, format_args!("output of activity `{}`", A::NAME))
    })
}

fn check_activity_input<A: Activity>(input: &Payload) -> Result<(), Error> {
    input
        .decode_as::<A::Input>(format_args!("input for activity `{}`", A::NAME))
        .map(drop)
}

impl fmt::Debug for ActivityEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityEntry")
            .field("name", &self.name)
            .field("input_type", &(self.input_type)())
            .field("output_type", &(self.output_type)())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_test_context_is_cancelled_through_its_token_and_keeps_heartbeats() {
        let ctx = ActivityContext::for_test("i-1");
        assert!(!ctx.is_cancelled());
        assert_eq!(ctx.heartbeat_details::<u64>().unwrap(), None);
        ctx.heartbeat(&7u64).unwrap();
        assert_eq!(ctx.heartbeat_details::<u64>().unwrap(), Some(7));
        let token = ctx.cancellation();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        token.cancel(CancelReason::HeartbeatTimeout);
        token.cancel(CancelReason::Cancelled);
        waiter.await.unwrap();
        ctx.cancelled().await;
        assert!(ctx.is_cancelled());
        assert_eq!(
            ctx.cancel_reason(),
            Some(CancelReason::HeartbeatTimeout),
            "the first reason stays"
        );
        let too_big = "x".repeat(Limits::default().max_payload_bytes + 1);
        let error = ctx.heartbeat(&too_big).unwrap_err().to_string();
        assert!(
            error.contains("the heartbeat details of activity `test`"),
            "{error}"
        );
        assert_eq!(
            ctx.heartbeat_details::<u64>().unwrap(),
            Some(7),
            "the last accepted stay"
        );
    }

    #[test]
    fn heartbeats_are_stored_once_and_again_after_a_failed_store() {
        let control = AttemptControl::new(None, Limits::default(), Clock::system());
        assert_eq!(control.take_unsaved(), None, "nothing to store yet");
        let seven = Payload::encode(&7).unwrap();
        control.beat(seven.clone());
        assert_eq!(control.take_unsaved(), Some(seven.clone()));
        assert_eq!(control.take_unsaved(), None, "stored once");
        // Storing failed: the next sync stores them again ...
        control.unsaved_again(&seven);
        assert_eq!(control.take_unsaved(), Some(seven.clone()));
        // ... unless a newer heartbeat came meanwhile, which is stored instead.
        let eight = Payload::encode(&8).unwrap();
        control.beat(eight.clone());
        assert_eq!(control.take_unsaved(), Some(eight));
        control.unsaved_again(&seven);
        assert_eq!(control.take_unsaved(), None);
    }
}
