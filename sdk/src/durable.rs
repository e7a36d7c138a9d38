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

use serde::de::DeserializeOwned;

use crate::context::OrchestrationContext;
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

/// The future of an activity call ([`OrchestrationContext::call_activity`]).
#[must_use = "an activity call does nothing useful unless its result is awaited"]
pub struct ActivityCall<T> {
    ctx: OrchestrationContext,
    seq: Option<u64>,
    name: &'static str,
    early_error: Option<Error>,
    _output: PhantomData<fn() -> T>,
}

impl<T> ActivityCall<T> {
    pub(crate) fn new(ctx: OrchestrationContext, seq: u64, name: &'static str) -> Self {
        ActivityCall {
            ctx,
            seq: Some(seq),
            name,
            early_error: None,
            _output: PhantomData,
        }
    }

    pub(crate) fn failed(ctx: OrchestrationContext, name: &'static str, error: Error) -> Self {
        ActivityCall {
            ctx,
            seq: None,
            name,
            early_error: Some(error),
            _output: PhantomData,
        }
    }
}

impl<T> Unpin for ActivityCall<T> {}

impl<T: DeserializeOwned> Future for ActivityCall<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(error) = self.early_error.take() {
            return Poll::Ready(Err(error));
        }
        let Some(seq) = self.seq else {
            return Poll::Pending;
        };
        let completion = self.ctx.state().take_result(seq);
        match completion {
            Some(Completion::Activity(Ok(output))) => {
                self.seq = None;
                Poll::Ready(output.decode_as(format_args!("output of activity `{}`", self.name)))
            }
            Some(Completion::Activity(Err(failure))) => {
                self.seq = None;
                Poll::Ready(Err(Error::ActivityFailed {
                    name: self.name.to_owned(),
                    failure,
                }))
            }
            Some(Completion::Timer) | None => Poll::Pending,
        }
    }
}

impl<T> Drop for ActivityCall<T> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.ctx.state().forget_result(seq);
        }
    }
}

impl<T> sealed::Sealed for ActivityCall<T> {}
impl<T: DeserializeOwned> DurableFuture for ActivityCall<T> {
    fn __ready_at(&self) -> Option<u64> {
        if self.early_error.is_some() {
            return Some(0);
        }
        self.seq
            .and_then(|seq| self.ctx.state().result_ready_at(seq))
    }
}

/// A durable timer ([`OrchestrationContext::sleep`], [`OrchestrationContext::timer_at`]).
#[must_use = "a timer does nothing unless awaited"]
pub struct Timer {
    ctx: OrchestrationContext,
    seq: Option<u64>,
}

impl Timer {
    pub(crate) fn new(ctx: OrchestrationContext, seq: u64) -> Self {
        Timer {
            ctx,
            seq: Some(seq),
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
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
}

impl<T> EventWaitTimeout<T> {
    pub(crate) fn new(event: EventWait<T>, timer: Timer) -> Self {
        EventWaitTimeout {
            inner: Select {
                a: Some(event),
                b: Some(timer),
            },
        }
    }
}

impl<T: DeserializeOwned> Future for EventWaitTimeout<T> {
    type Output = Result<Option<T>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
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
