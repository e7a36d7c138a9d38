//! Durable futures: the only futures an orchestrator may await.
//!
//! Every future the [`OrchestrationContext`] returns implements
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

use serde::de::DeserializeOwned;

use crate::context::OrchestrationContext;
use crate::entity::EntityId;
use crate::error::Error;
use crate::replay::Completion;

mod sealed {
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
}

/// Either of two outputs: what [`Select`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future won.
    Left(A),
    /// The second future won.
    Right(B),
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
    ctx: OrchestrationContext,
    seq: Option<u64>,
    target: Target,
    early_error: Option<Error>,
    _output: PhantomData<fn() -> T>,
}

/// The future of [`OrchestrationContext::call_activity`].
pub type ActivityCall<T> = Call<T>;

/// The future of [`OrchestrationContext::call_sub_orchestrator`].
pub type SubOrchestrationCall<T> = Call<T>;

impl<T> Call<T> {
    pub(crate) fn new(ctx: OrchestrationContext, seq: u64, target: Target) -> Self {
        Call {
            ctx,
            seq: Some(seq),
            target,
            early_error: None,
            _output: PhantomData,
        }
    }

    pub(crate) fn failed(ctx: OrchestrationContext, target: Target, error: Error) -> Self {
        Call {
            ctx,
            seq: None,
            target,
            early_error: Some(error),
            _output: PhantomData,
        }
    }
}

impl<T> Unpin for Call<T> {}

impl<T: DeserializeOwned> Future for Call<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.early_error.take() {
            return Poll::Ready(Err(error));
        }
        let Some(seq) = self.seq else {
            return Poll::Pending;
        };
        let completion = self.ctx.state().take_result(seq);
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

impl<T> Drop for Call<T> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.ctx.state().forget_result(seq);
        }
    }
}

impl<T> sealed::Sealed for Call<T> {}
impl<T: DeserializeOwned> DurableFuture for Call<T> {
    fn __ready_at(&self) -> Option<u64> {
        if self.early_error.is_some() {
            return Some(0);
        }
        self.seq
            .and_then(|seq| self.ctx.state().result_ready_at(seq))
    }
}

/// The future of [`OrchestrationContext::lock`]: resolves once every entity is locked for
/// this orchestration, to the [`CriticalSection`] guard.
#[must_use = "a lock request does nothing useful unless awaited"]
pub struct LockRequest {
    ctx: OrchestrationContext,
    seq: Option<u64>,
    entities: Vec<EntityId>,
    early_error: Option<Error>,
}

impl LockRequest {
    pub(crate) fn new(ctx: OrchestrationContext, seq: u64, entities: Vec<EntityId>) -> Self {
        LockRequest {
            ctx,
            seq: Some(seq),
            entities,
            early_error: None,
        }
    }

    pub(crate) fn failed(ctx: OrchestrationContext, error: Error) -> Self {
        LockRequest {
            ctx,
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
        let granted = self.ctx.state().take_result(seq);
        match granted {
            Some(_) => {
                self.seq = None;
                Poll::Ready(Ok(CriticalSection {
                    ctx: self.ctx.clone(),
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
            let mut state = self.ctx.state();
            state.forget_result(seq);
            if let Some(section) = state.critical_section.as_mut()
                && section.seq == seq
            {
                section.abandoned = true;
            }
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
            .and_then(|seq| self.ctx.state().result_ready_at(seq))
    }
}

/// A critical section: entities locked for one orchestration. While it is held, only this
/// orchestration's operations reach them (others wait), so reading and writing several
/// entities is atomic from their point of view. Released by [`release`](Self::release), when
/// dropped, or when the orchestration ends.
#[must_use = "dropping the critical section releases the entities at once"]
pub struct CriticalSection {
    ctx: OrchestrationContext,
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
        let mut state = self.ctx.state();
        if state
            .critical_section
            .as_ref()
            .is_some_and(|section| section.seq == self.seq)
        {
            state.release_critical_section();
        }
    }
}

/// The future of [`OrchestrationContext::continue_as_new`]: it never completes, because the
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

/// A durable timer ([`OrchestrationContext::sleep`], [`OrchestrationContext::timer_at`]).
#[must_use = "a timer does nothing unless awaited"]
pub struct Timer {
    ctx: OrchestrationContext,
    seq: Option<u64>,
    /// A timer that was never created (its time could not be represented): the execution
    /// fails with the reason, and the timer never fires.
    never: bool,
}

impl Timer {
    pub(crate) fn new(ctx: OrchestrationContext, seq: u64) -> Self {
        Timer {
            ctx,
            seq: Some(seq),
            never: false,
        }
    }

    /// A timer that never fires (the context has already failed the execution).
    pub(crate) fn never(ctx: OrchestrationContext) -> Self {
        Timer {
            ctx,
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
        let completion = self.ctx.state().take_result(seq);
        match completion {
            Some(_) => {
                self.seq = None;
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.ctx.state().forget_result(seq);
        }
    }
}

impl sealed::Sealed for Timer {}
impl DurableFuture for Timer {
    fn __ready_at(&self) -> Option<u64> {
        self.seq
            .and_then(|seq| self.ctx.state().result_ready_at(seq))
    }
}

/// Waits for an external event ([`OrchestrationContext::wait_for_event`]).
#[must_use = "waiting for an event does nothing unless awaited"]
pub struct EventWait<T> {
    ctx: OrchestrationContext,
    name: String,
    waiter: Option<u64>,
    _data: PhantomData<fn() -> T>,
}

impl<T> EventWait<T> {
    pub(crate) fn new(ctx: OrchestrationContext, name: &str) -> Self {
        let waiter = ctx.state().add_waiter(name);
        EventWait {
            ctx,
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
        let data = self.ctx.state().take_event(waiter);
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
            self.ctx.state().remove_waiter(&self.name, waiter);
        }
    }
}

impl<T> sealed::Sealed for EventWait<T> {}
impl<T: DeserializeOwned> DurableFuture for EventWait<T> {
    fn __ready_at(&self) -> Option<u64> {
        self.waiter
            .and_then(|waiter| self.ctx.state().event_ready_at(waiter))
    }
}

/// Waits for an external event with a timeout
/// ([`OrchestrationContext::wait_for_event_timeout`]): `Ok(None)` when the timeout won.
#[must_use = "waiting for an event does nothing unless awaited"]
pub struct EventWaitTimeout<T> {
    inner: Select<EventWait<T>, Timer>,
    /// The call failed before it waited (a timeout too long to represent).
    early_error: Option<Error>,
}

impl<T> EventWaitTimeout<T> {
    pub(crate) fn new(event: EventWait<T>, timer: Timer) -> Self {
        EventWaitTimeout {
            inner: Select {
                a: Some(event),
                b: Some(timer),
            },
            early_error: None,
        }
    }

    /// A wait that resolves to `Err(error)` at once, without waiting.
    pub(crate) fn failed(error: Error) -> Self {
        EventWaitTimeout {
            inner: Select { a: None, b: None },
            early_error: Some(error),
        }
    }
}

impl<T: DeserializeOwned> Future for EventWaitTimeout<T> {
    type Output = Result<Option<T>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.early_error.take() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner)
            .poll(cx)
            .map(|winner| match winner {
                Either::Left(data) => data.map(Some),
                Either::Right(()) => Ok(None),
            })
    }
}

impl<T> sealed::Sealed for EventWaitTimeout<T> {}
impl<T: DeserializeOwned> DurableFuture for EventWaitTimeout<T> {
    fn __ready_at(&self) -> Option<u64> {
        if self.early_error.is_some() {
            return Some(0);
        }
        self.inner.__ready_at()
    }
}

/// A child of a combinator: pending, or done with its output kept until all are done.
enum Slot<F: Future> {
    Pending(F),
    Done(Option<F::Output>, Option<u64>),
}

/// Waits for all futures ([`OrchestrationContext::join_all`]): fan-in.
#[must_use = "join_all does nothing unless awaited"]
pub struct JoinAll<F: DurableFuture> {
    slots: Vec<Slot<F>>,
}

impl<F: DurableFuture> JoinAll<F> {
    pub(crate) fn new(futures: impl IntoIterator<Item = F>) -> Self {
        JoinAll {
            slots: futures.into_iter().map(Slot::Pending).collect(),
        }
    }
}

impl<F: DurableFuture> Unpin for JoinAll<F> {}

impl<F: DurableFuture> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut all_done = true;
        for slot in &mut self.slots {
            if let Slot::Pending(future) = slot {
                let ready_at = future.__ready_at();
                match Pin::new(&mut *future).poll(cx) {
                    Poll::Ready(output) => *slot = Slot::Done(Some(output), ready_at),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if !all_done {
            return Poll::Pending;
        }
        Poll::Ready(
            self.slots
                .iter_mut()
                .filter_map(|slot| match slot {
                    Slot::Done(output, _) => output.take(),
                    Slot::Pending(_) => None,
                })
                .collect(),
        )
    }
}

impl<F: DurableFuture> sealed::Sealed for JoinAll<F> {}
impl<F: DurableFuture> DurableFuture for JoinAll<F> {
    fn __ready_at(&self) -> Option<u64> {
        let mut latest = 0;
        for slot in &self.slots {
            let at = match slot {
                Slot::Pending(future) => future.__ready_at()?,
                Slot::Done(_, at) => (*at)?,
            };
            latest = latest.max(at);
        }
        Some(latest)
    }
}

/// Waits for two futures ([`OrchestrationContext::join`]).
#[must_use = "join does nothing unless awaited"]
pub struct Join<A: DurableFuture, B: DurableFuture> {
    a: Slot<A>,
    b: Slot<B>,
}

impl<A: DurableFuture, B: DurableFuture> Join<A, B> {
    pub(crate) fn new(a: A, b: B) -> Self {
        Join {
            a: Slot::Pending(a),
            b: Slot::Pending(b),
        }
    }
}

impl<A: DurableFuture, B: DurableFuture> Unpin for Join<A, B> {}

fn poll_slot<F: DurableFuture>(slot: &mut Slot<F>, cx: &mut Context<'_>) -> bool {
    if let Slot::Pending(future) = slot {
        let ready_at = future.__ready_at();
        match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => *slot = Slot::Done(Some(output), ready_at),
            Poll::Pending => return false,
        }
    }
    true
}

fn slot_ready_at<F: DurableFuture>(slot: &Slot<F>) -> Option<u64> {
    match slot {
        Slot::Pending(future) => future.__ready_at(),
        Slot::Done(_, at) => *at,
    }
}

impl<A: DurableFuture, B: DurableFuture> Future for Join<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let a_done = poll_slot(&mut this.a, cx);
        let b_done = poll_slot(&mut this.b, cx);
        if !(a_done && b_done) {
            return Poll::Pending;
        }
        let (Slot::Done(a, _), Slot::Done(b, _)) = (&mut this.a, &mut this.b) else {
            return Poll::Pending;
        };
        match (a.take(), b.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            _ => Poll::Pending,
        }
    }
}

impl<A: DurableFuture, B: DurableFuture> sealed::Sealed for Join<A, B> {}
impl<A: DurableFuture, B: DurableFuture> DurableFuture for Join<A, B> {
    fn __ready_at(&self) -> Option<u64> {
        Some(slot_ready_at(&self.a)?.max(slot_ready_at(&self.b)?))
    }
}

/// The first of two futures ([`OrchestrationContext::select`]).
#[must_use = "select does nothing unless awaited"]
pub struct Select<A, B> {
    a: Option<A>,
    b: Option<B>,
}

impl<A: DurableFuture, B: DurableFuture> Select<A, B> {
    pub(crate) fn new(a: A, b: B) -> Self {
        Select {
            a: Some(a),
            b: Some(b),
        }
    }
}

impl<A, B> Unpin for Select<A, B> {}

impl<A: DurableFuture, B: DurableFuture> Future for Select<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (Some(a), Some(b)) = (this.a.as_mut(), this.b.as_mut()) else {
            return Poll::Pending;
        };
        // If both know they are ready, the one history completed first wins; otherwise poll
        // in argument order (deterministic too, since polls follow history).
        let b_first = match (a.__ready_at(), b.__ready_at()) {
            (Some(at_a), Some(at_b)) => at_b < at_a,
            (None, Some(_)) => true,
            _ => false,
        };
        let winner = if b_first {
            poll_either_b_first(a, b, cx)
        } else {
            poll_either_a_first(a, b, cx)
        };
        if winner.is_ready() {
            // Drop both now: the loser's pending call is abandoned.
            this.a = None;
            this.b = None;
        }
        winner
    }
}

fn poll_either_a_first<A: DurableFuture, B: DurableFuture>(
    a: &mut A,
    b: &mut B,
    cx: &mut Context<'_>,
) -> Poll<Either<A::Output, B::Output>> {
    if let Poll::Ready(out) = Pin::new(a).poll(cx) {
        return Poll::Ready(Either::Left(out));
    }
    Pin::new(b).poll(cx).map(Either::Right)
}

fn poll_either_b_first<A: DurableFuture, B: DurableFuture>(
    a: &mut A,
    b: &mut B,
    cx: &mut Context<'_>,
) -> Poll<Either<A::Output, B::Output>> {
    if let Poll::Ready(out) = Pin::new(b).poll(cx) {
        return Poll::Ready(Either::Right(out));
    }
    Pin::new(a).poll(cx).map(Either::Left)
}

impl<A: DurableFuture, B: DurableFuture> sealed::Sealed for Select<A, B> {}
impl<A: DurableFuture, B: DurableFuture> DurableFuture for Select<A, B> {
    fn __ready_at(&self) -> Option<u64> {
        let a = self.a.as_ref().and_then(|a| a.__ready_at());
        let b = self.b.as_ref().and_then(|b| b.__ready_at());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The first of several futures ([`OrchestrationContext::when_any`]): its index and output.
#[must_use = "when_any does nothing unless awaited"]
pub struct WhenAny<F> {
    futures: Vec<F>,
}

impl<F: DurableFuture> WhenAny<F> {
    pub(crate) fn new(futures: impl IntoIterator<Item = F>) -> Self {
        WhenAny {
            futures: futures.into_iter().collect(),
        }
    }
}

impl<F> Unpin for WhenAny<F> {}

impl<F: DurableFuture> Future for WhenAny<F> {
    type Output = (usize, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future history completed first, if several know they are ready.
        let first_known = self
            .futures
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.__ready_at().map(|at| (at, i)))
            .min()
            .map(|(_, i)| i);
        let order = first_known
            .into_iter()
            .chain((0..self.futures.len()).filter(|i| Some(*i) != first_known));
        for i in order.collect::<Vec<_>>() {
            if let Poll::Ready(out) = Pin::new(&mut self.futures[i]).poll(cx) {
                self.futures.clear();
                return Poll::Ready((i, out));
            }
        }
        Poll::Pending
    }
}

impl<F: DurableFuture> sealed::Sealed for WhenAny<F> {}
impl<F: DurableFuture> DurableFuture for WhenAny<F> {
    fn __ready_at(&self) -> Option<u64> {
        self.futures.iter().filter_map(|f| f.__ready_at()).min()
    }
}

/// A durable future made of other durable operations: the future of an
/// `#[orchestration_helper]` function or of an `async` block inside an orchestrator, whose
/// every `.await` the macro has checked.
#[must_use = "futures do nothing unless awaited"]
pub struct Durable<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Durable<F> {
    #[doc(hidden)]
    pub fn __new(future: F) -> Self {
        Durable {
            inner: Box::pin(future),
        }
    }
}

impl<F: Future> Future for Durable<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<F> sealed::Sealed for Durable<F> {}
impl<F: Future> DurableFuture for Durable<F> {
    fn __ready_at(&self) -> Option<u64> {
        None
    }
}

/// Boxed durable futures are durable (for `Vec<Box<dyn …>>` fan-outs).
impl<F: DurableFuture + ?Sized> sealed::Sealed for Box<F> {}
impl<F: DurableFuture + ?Sized> DurableFuture for Box<F> {
    fn __ready_at(&self) -> Option<u64> {
        (**self).__ready_at()
    }
}

/// Identity function the orchestrator macro wraps every awaited expression in, so that the
/// compiler checks it is a [`DurableFuture`].
#[doc(hidden)]
#[inline(always)]
pub fn __durable<F: DurableFuture>(future: F) -> F {
    future
}
