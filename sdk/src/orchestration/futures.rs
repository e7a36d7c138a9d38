//! Durable futures: the only futures an orchestrator may await.
//!
//! Every future the [`OrchestrationContext`](crate::OrchestrationContext) returns implements
//! the sealed [`DurableFuture`] trait, and so do the combinators here ([`JoinAll`], [`Select`],
//! …) and the futures of `#[orchestration_helper]` functions. `#[orchestrator]` makes every
//! `.await` in its body require `DurableFuture`, so awaiting anything else (an HTTP request,
//! `tokio::time::sleep`) is a compile error that names the durable replacement.
//!
//! Durable futures complete only when the executor applies a history event, and they report
//! the history position at which they became ready ([`DurableFuture`]'s hidden `ready_at`),
//! which is how [`Select`] and [`WhenAny`] pick the completion history recorded first.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::state::{Completion, StateHandle};
use crate::error::{Error, Failure};
use crate::id::EntityId;
use crate::timeouts::SCHEDULE_TO_CLOSE_TIMEOUT;

pub(crate) mod sealed {
    /// Only duractor's own futures are durable.
    pub trait Sealed {}
}

/// A future whose completion is recorded in history, so awaiting it is deterministic.
///
/// Implemented only by duractor's own futures; it cannot be implemented outside this crate.
#[diagnostic::on_unimplemented(
    message = "orchestrators may only await durable operations, and `{Self}` is not one",
    label = "not a durable operation: its result is not recorded in the instance's history",
    note = "an orchestrator is replayed from its history after every restart, and only durable operations are answered from that history: any other future would run again on every replay and could end differently, and its wake-ups are ignored, since an orchestrator runs only when its history grows",
    note = "do I/O and other work in an activity and await `ctx.call_activity(Handle, input)`; wait with `ctx.sleep(duration)` or `ctx.timer_at(time)`; receive data with `ctx.wait_for_event(name)`; combine with `ctx.join_all(..)`, `ctx.join(a, b)`, `ctx.select(a, b)` or `ctx.when_any(..)`; move shared steps into an `async fn` marked `#[orchestration_helper]`"
)]
pub trait DurableFuture: Future + Unpin + sealed::Sealed {
    /// The history position at which this future became ready, if it is ready and knows it.
    #[doc(hidden)]
    fn __ready_at(&self) -> Option<u64>;

    /// Cancels the durable calls this future waits for that are still open (a `select` or
    /// `when_any` does it to its losers): recorded in history, carried out by the turn.
    #[doc(hidden)]
    fn __cancel(&mut self, reason: &str) {
        let _ = reason;
    }
}

/// What a [`Call`] calls, for its error messages.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Activity(&'static str),
    SubOrchestration {
        name: &'static str,
        instance_id: String,
    },
    Entity {
        entity: EntityId,
        operation: &'static str,
    },
}

/// The future of a durable call: an activity ([`ActivityCall`]) or a sub-orchestration
/// ([`SubOrchestrationCall`]). Resolves to the callee's output, or to
/// [`Error::ActivityFailed`] / [`Error::SubOrchestrationFailed`].
#[must_use = "a durable call does nothing useful unless its result is awaited"]
pub struct Call<T> {
    state: StateHandle,
    seq: Option<u64>,
    target: Target,
    early_error: Option<Error>,
    /// An activity call's schedule-to-close deadline as a durable timer, which ends the call
    /// if it fires first (for calls without a retry loop, which arms its own).
    deadline: Option<Deadline>,
    _output: PhantomData<fn() -> T>,
}

/// A call's schedule-to-close deadline: the timer and the timeout it came from.
pub(crate) struct Deadline {
    timer: Timer,
    timeout: Duration,
}

/// Why an attempt in flight is cancelled when its call's schedule-to-close deadline passes.
pub(crate) const SCHEDULE_TO_CLOSE_CANCEL: &str = "its call's schedule-to-close deadline passed";

/// Why a deadline timer is cancelled when its call ends first.
pub(crate) const ENDED_IN_TIME: &str = "the call ended before its schedule-to-close deadline";

/// The failure of activity `name`'s call whose schedule-to-close deadline (`timeout` after it
/// was first scheduled) passed while attempt `number` was still waiting for a worker or
/// running.
pub(crate) fn deadline_passed(name: &str, timeout: Duration, number: u32) -> Error {
    let mut failure = Failure::new(
        SCHEDULE_TO_CLOSE_TIMEOUT,
        format!(
            "activity `{name}` did not complete within its schedule-to-close timeout of \
             {timeout:?}: attempt {number} was still waiting for a worker or running, and was \
             cancelled"
        ),
    );
    failure.non_retriable = true;
    Error::ActivityFailed {
        name: name.to_owned(),
        failure,
    }
}

/// The future of [`OrchestrationContext::call_activity`](crate::OrchestrationContext::call_activity).
pub type ActivityCall<T> = Call<T>;

/// The future of [`OrchestrationContext::call_sub_orchestrator`](crate::OrchestrationContext::call_sub_orchestrator).
pub type SubOrchestrationCall<T> = Call<T>;

impl<T> Call<T> {
    pub(crate) fn new(state: StateHandle, seq: u64, target: Target) -> Self {
        Call {
            state,
            seq: Some(seq),
            target,
            early_error: None,
            deadline: None,
            _output: PhantomData,
        }
    }

    /// Ends the call at `timer` (its schedule-to-close deadline, `timeout` after it was
    /// scheduled) unless it completes first.
    pub(crate) fn with_deadline(mut self, timer: Timer, timeout: Duration) -> Self {
        self.deadline = Some(Deadline { timer, timeout });
        self
    }

    /// The call's sequence number, until it completes or is cancelled.
    pub(crate) fn seq(&self) -> Option<u64> {
        self.seq
    }

    pub(crate) fn failed(state: StateHandle, target: Target, error: Error) -> Self {
        Call {
            state,
            seq: None,
            target,
            early_error: Some(error),
            deadline: None,
            _output: PhantomData,
        }
    }
}

impl<T> Unpin for Call<T> {}

impl<T: DeserializeOwned> Future for Call<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(mut deadline) = this.deadline.take() else {
            return this.poll_result();
        };
        match this.poll_before(&mut deadline.timer, SCHEDULE_TO_CLOSE_CANCEL, cx) {
            Poll::Pending => {
                this.deadline = Some(deadline);
                Poll::Pending
            }
            Poll::Ready(Some(result)) => {
                deadline.timer.cancel_because(ENDED_IN_TIME);
                Poll::Ready(result)
            }
            Poll::Ready(None) => {
                let name = match &this.target {
                    Target::Activity(name) => *name,
                    _ => "",
                };
                Poll::Ready(Err(deadline_passed(name, deadline.timeout, 1)))
            }
        }
    }
}

impl<T: DeserializeOwned> Call<T> {
    /// Polls the call against `deadline`: its result, or `None` when the deadline fires
    /// first, which cancels the call (`reason` is recorded). When history has both, the one
    /// it recorded first wins, so replays agree.
    pub(crate) fn poll_before(
        &mut self,
        deadline: &mut Timer,
        reason: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, Error>>> {
        let timer_first = match (self.own_ready_at(), deadline.__ready_at()) {
            (Some(call_at), Some(timer_at)) => timer_at < call_at,
            (None, Some(_)) => true,
            _ => false,
        };
        if !timer_first && let Poll::Ready(result) = self.poll_result() {
            return Poll::Ready(Some(result));
        }
        if Pin::new(&mut *deadline).poll(cx).is_ready() {
            self.cancel_open(reason);
            return Poll::Ready(None);
        }
        self.poll_result().map(Some)
    }

    /// Where in history the call's own result is, if it has arrived.
    fn own_ready_at(&self) -> Option<u64> {
        if self.early_error.is_some() {
            return Some(0);
        }
        self.seq
            .and_then(|seq| self.state.borrow().result_ready_at(seq))
    }

    /// The call's own result, deadline aside.
    fn poll_result(&mut self) -> Poll<Result<T, Error>> {
        if let Some(error) = self.early_error.take() {
            return Poll::Ready(Err(error));
        }
        let Some(seq) = self.seq else {
            return Poll::Pending;
        };
        let completion = self.state.borrow().take_result(seq);
        let result = match completion {
            Some(
                Completion::Activity(result)
                | Completion::SubOrchestration(result)
                | Completion::Entity(result),
            ) => result,
            Some(Completion::Timer | Completion::Lock) | None => return Poll::Pending,
        };
        self.seq = None;
        Poll::Ready(match (&self.target, result) {
            (Target::Activity(name), Ok(output)) => {
                output.decode_as(format_args!("output of activity `{name}`"))
            }
            (Target::Activity(name), Err(failure)) => Err(Error::ActivityFailed {
                name: (*name).to_owned(),
                failure,
            }),
            (Target::SubOrchestration { name, .. }, Ok(output)) => {
                output.decode_as(format_args!("output of sub-orchestrator `{name}`"))
            }
            (Target::SubOrchestration { name, instance_id }, Err(failure)) => {
                Err(Error::SubOrchestrationFailed {
                    name: (*name).to_owned(),
                    instance_id: instance_id.clone(),
                    failure,
                })
            }
            (Target::Entity { entity, operation }, Ok(output)) => output.decode_as(format_args!(
                "output of entity operation `{entity}.{operation}`"
            )),
            (Target::Entity { entity, operation }, Err(failure)) => {
                Err(Error::EntityOperationFailed {
                    entity: Box::new(entity.clone()),
                    operation: (*operation).to_owned(),
                    failure,
                })
            }
        })
    }
}

impl<T> Call<T> {
    /// Cancels the call: the orchestration no longer needs its result. A running activity is
    /// told to stop (its `ActivityContext::cancelled()` fires; whatever it returns is
    /// ignored) and its work item is dropped; a sub-orchestration is terminated; an entity
    /// call's operation still runs, its result ignored. Recorded in history (`CallCancelled`),
    /// so replays cancel at the same point. A call that already completed is left alone.
    ///
    /// ```
    /// # use duractor::prelude::*;
    /// # use std::time::Duration;
    /// # #[activity]
    /// # async fn export(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> { Ok(()) }
    /// #[orchestrator]
    /// async fn export_unless_stopped(ctx: OrchestrationContext, _: ()) -> Result<bool, duractor::Error> {
    ///     let export = ctx.call_activity(Export, ());
    ///     let stop = ctx.wait_for_event::<()>("stop");
    ///     match ctx.select(export, stop).await {
    ///         Either::Left(done) => done.map(|()| true),
    ///         // The export lost: `select` has cancelled it already.
    ///         Either::Right(_) => Ok(false),
    ///     }
    /// }
    /// ```
    pub fn cancel(mut self) {
        self.cancel_with_deadline("cancelled by the orchestrator");
    }

    fn cancel_open(&mut self, reason: &str) {
        if let Some(seq) = self.seq.take() {
            self.state.borrow().cancel_call(seq, reason);
        }
    }

    /// Cancels the call and its deadline timer, if it has one.
    fn cancel_with_deadline(&mut self, reason: &str) {
        self.cancel_open(reason);
        if let Some(mut deadline) = self.deadline.take() {
            deadline.timer.__cancel(reason);
        }
    }
}

impl<T> Drop for Call<T> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.state.borrow().forget_result(seq);
        }
    }
}

impl<T> sealed::Sealed for Call<T> {}
impl<T: DeserializeOwned> DurableFuture for Call<T> {
    fn __ready_at(&self) -> Option<u64> {
        let deadline = self.deadline.as_ref().and_then(|d| d.timer.__ready_at());
        match (self.own_ready_at(), deadline) {
            (Some(own), Some(deadline)) => Some(own.min(deadline)),
            (own, deadline) => own.or(deadline),
        }
    }

    fn __cancel(&mut self, reason: &str) {
        self.cancel_with_deadline(reason);
    }
}

/// The future of [`OrchestrationContext::lock`](crate::OrchestrationContext::lock): resolves once every entity is locked for
/// this orchestration, to the [`CriticalSection`] guard.
#[must_use = "a lock request does nothing useful unless awaited"]
pub struct LockRequest {
    state: StateHandle,
    seq: Option<u64>,
    entities: Vec<EntityId>,
    early_error: Option<Error>,
}

impl LockRequest {
    pub(crate) fn new(state: StateHandle, seq: u64, entities: Vec<EntityId>) -> Self {
        LockRequest {
            state,
            seq: Some(seq),
            entities,
            early_error: None,
        }
    }

    pub(crate) fn failed(state: StateHandle, error: Error) -> Self {
        LockRequest {
            state,
            seq: None,
            entities: Vec::new(),
            early_error: Some(error),
        }
    }
}

impl Future for LockRequest {
    type Output = Result<CriticalSection, Error>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.early_error.take() {
            return Poll::Ready(Err(error));
        }
        let Some(seq) = self.seq else {
            return Poll::Pending;
        };
        let granted = self.state.borrow().take_result(seq);
        match granted {
            Some(_) => {
                self.seq = None;
                Poll::Ready(Ok(CriticalSection {
                    state: self.state.clone(),
                    seq,
                    entities: std::mem::take(&mut self.entities),
                }))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for LockRequest {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.state.borrow().lock_abandoned(seq);
        }
    }
}

impl sealed::Sealed for LockRequest {}
impl DurableFuture for LockRequest {
    fn __ready_at(&self) -> Option<u64> {
        if self.early_error.is_some() {
            return Some(0);
        }
        self.seq
            .and_then(|seq| self.state.borrow().result_ready_at(seq))
    }
}

/// A critical section: entities locked for one orchestration. While it is held, only this
/// orchestration's operations reach them (others wait), so reading and writing several
/// entities is atomic from their point of view. Released by [`release`](Self::release), when
/// dropped, or when the orchestration ends.
#[must_use = "dropping the critical section releases the entities at once"]
pub struct CriticalSection {
    state: StateHandle,
    seq: u64,
    entities: Vec<EntityId>,
}

impl CriticalSection {
    /// The locked entities, in lock order.
    pub fn entities(&self) -> &[EntityId] {
        &self.entities
    }

    /// Releases the entities.
    pub fn release(self) {}
}

impl std::fmt::Debug for CriticalSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriticalSection")
            .field("seq", &self.seq)
            .field("entities", &self.entities)
            .finish()
    }
}

impl Drop for CriticalSection {
    fn drop(&mut self) {
        self.state.borrow().guard_dropped(self.seq);
    }
}

/// The future of [`OrchestrationContext::continue_as_new`](crate::OrchestrationContext::continue_as_new): it never completes, because the
/// execution ends at this point and a new one starts. Its output type is whatever the
/// surrounding code needs, so `return ctx.continue_as_new(next).await;` type-checks.
#[must_use = "continue_as_new does nothing unless awaited"]
pub struct ContinueAsNew<T> {
    _output: PhantomData<fn() -> T>,
}

impl<T> ContinueAsNew<T> {
    pub(crate) fn new() -> Self {
        ContinueAsNew {
            _output: PhantomData,
        }
    }
}

impl<T> Unpin for ContinueAsNew<T> {}

impl<T> Future for ContinueAsNew<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        Poll::Pending
    }
}

impl<T> sealed::Sealed for ContinueAsNew<T> {}
impl<T> DurableFuture for ContinueAsNew<T> {
    fn __ready_at(&self) -> Option<u64> {
        None
    }
}

/// A durable timer ([`OrchestrationContext::sleep`](crate::OrchestrationContext::sleep), [`OrchestrationContext::timer_at`](crate::OrchestrationContext::timer_at)).
#[must_use = "a timer does nothing unless awaited"]
pub struct Timer {
    state: StateHandle,
    seq: Option<u64>,
    /// A timer that was never created (its time could not be represented): the execution
    /// fails with the reason, and the timer never fires.
    never: bool,
}

impl Timer {
    pub(crate) fn new(state: StateHandle, seq: u64) -> Self {
        Timer {
            state,
            seq: Some(seq),
            never: false,
        }
    }

    /// A timer that never fires (the context has already failed the execution).
    pub(crate) fn never(state: StateHandle) -> Self {
        Timer {
            state,
            seq: None,
            never: true,
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.never {
            return Poll::Pending;
        }
        let Some(seq) = self.seq else {
            return Poll::Ready(());
        };
        let completion = self.state.borrow().take_result(seq);
        match completion {
            Some(_) => {
                self.seq = None;
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

impl Timer {
    /// Cancels the timer: it will not fire for this orchestration. Recorded in history
    /// (`CallCancelled`), so replays cancel at the same point.
    pub fn cancel(self) {
        self.cancel_because("cancelled by the orchestrator");
    }

    /// Cancels the timer, recording `reason` (a timer that has fired is left alone).
    pub(crate) fn cancel_because(mut self, reason: &str) {
        self.__cancel(reason);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.state.borrow().forget_result(seq);
        }
    }
}

impl sealed::Sealed for Timer {}
impl DurableFuture for Timer {
    fn __ready_at(&self) -> Option<u64> {
        self.seq
            .and_then(|seq| self.state.borrow().result_ready_at(seq))
    }

    fn __cancel(&mut self, reason: &str) {
        if let Some(seq) = self.seq.take() {
            self.state.borrow().cancel_call(seq, reason);
        }
    }
}

/// Waits for an external event ([`OrchestrationContext::wait_for_event`](crate::OrchestrationContext::wait_for_event)).
#[must_use = "waiting for an event does nothing unless awaited"]
pub struct EventWait<T> {
    state: StateHandle,
    name: String,
    waiter: Option<u64>,
    _data: PhantomData<fn() -> T>,
}

impl<T> EventWait<T> {
    pub(crate) fn new(state: StateHandle, name: &str) -> Self {
        let waiter = state.borrow().add_waiter(name);
        EventWait {
            state,
            name: name.to_owned(),
            waiter: Some(waiter),
            _data: PhantomData,
        }
    }
}

impl<T> Unpin for EventWait<T> {}

impl<T: DeserializeOwned> Future for EventWait<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(waiter) = self.waiter else {
            return Poll::Pending;
        };
        let data = self.state.borrow().take_event(waiter);
        match data {
            Some(data) => {
                self.waiter = None;
                Poll::Ready(data.decode_as(format_args!("data of event `{}`", self.name)))
            }
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for EventWait<T> {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter {
            self.state.borrow().remove_waiter(&self.name, waiter);
        }
    }
}

impl<T> EventWait<T> {
    /// Stops waiting: the next event of this name is buffered for a later wait (or a received
    /// one that was not taken goes back to the buffer). Waiting is not a durable call (history
    /// records events as they arrive, not waits), so there is nothing to record: replays
    /// stop waiting at the same point by running the same code.
    pub fn cancel(mut self) {
        self.__cancel_wait();
    }

    fn __cancel_wait(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            self.state.borrow().remove_waiter(&self.name, waiter);
        }
    }
}

impl<T> sealed::Sealed for EventWait<T> {}
impl<T: DeserializeOwned> DurableFuture for EventWait<T> {
    fn __ready_at(&self) -> Option<u64> {
        self.waiter
            .and_then(|waiter| self.state.borrow().event_ready_at(waiter))
    }

    fn __cancel(&mut self, _reason: &str) {
        self.__cancel_wait();
    }
}

/// A durable future made of other durable operations: the future of an
/// `#[orchestration_helper]` function or of an `async` block inside an orchestrator, whose
/// every `.await` the macro has checked.
///
/// It is a cancellation scope: the durable calls its body makes belong to it, so cancelling it
/// (a `select` it loses, [`cancel`](Self::cancel)) cancels those still open — the attempt in
/// flight of a retry loop, the timer it waits on between attempts.
#[must_use = "futures do nothing unless awaited"]
pub struct Durable<F> {
    inner: Option<Pin<Box<F>>>,
    /// The scope id, from the first poll on. The state it lives in is the execution being
    /// polled ([`StateHandle::current`]): a `Durable` holds no handle, so it stays `Send`
    /// when its body is.
    scope: Option<u64>,
}

impl<F: Future> Durable<F> {
    #[doc(hidden)]
    pub fn __new(future: F) -> Self {
        Durable {
            inner: Some(Box::pin(future)),
            scope: None,
        }
    }

    /// Cancels the open durable calls the body made, and stops running it. Recorded in
    /// history (`CallCancelled` for each call), so replays cancel at the same point.
    pub fn cancel(mut self) {
        self.__cancel("cancelled by the orchestrator");
    }
}

impl<F> Unpin for Durable<F> {}

impl<F: Future> Future for Durable<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Pending;
        };
        let state = StateHandle::current();
        if let Some(state) = &state {
            let scope = *this.scope.get_or_insert_with(|| state.borrow().new_scope());
            state.borrow().enter_scope(scope);
        }
        let result = inner.as_mut().poll(cx);
        if let (Some(state), Some(scope)) = (&state, this.scope) {
            let mut state = state.borrow();
            state.exit_scope(scope);
            if result.is_ready() {
                state.drop_scope(scope);
            }
        }
        if result.is_ready() {
            this.inner = None;
            this.scope = None;
        }
        result
    }
}

impl<F> Drop for Durable<F> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take()
            && let Some(state) = StateHandle::current()
            && let Some(mut state) = state.try_borrow()
        {
            state.drop_scope(scope);
        }
    }
}

impl<F> sealed::Sealed for Durable<F> {}
impl<F: Future> DurableFuture for Durable<F> {
    fn __ready_at(&self) -> Option<u64> {
        None
    }

    fn __cancel(&mut self, reason: &str) {
        // Stop the body first (dropping it drops the futures of its calls), then cancel what
        // it left open.
        self.inner = None;
        if let Some(scope) = self.scope.take()
            && let Some(state) = StateHandle::current()
        {
            state.borrow().cancel_scope(scope, reason);
        }
    }
}

/// Boxed durable futures are durable (for `Vec<Box<dyn …>>` fan-outs).
impl<F: DurableFuture + ?Sized> sealed::Sealed for Box<F> {}
impl<F: DurableFuture + ?Sized> DurableFuture for Box<F> {
    fn __ready_at(&self) -> Option<u64> {
        (**self).__ready_at()
    }

    fn __cancel(&mut self, reason: &str) {
        (**self).__cancel(reason);
    }
}

/// Identity function the orchestrator macro wraps every awaited expression in, so that the
/// compiler checks it is a [`DurableFuture`].
#[doc(hidden)]
#[inline(always)]
pub fn __durable<F: DurableFuture>(future: F) -> F {
    future
}
