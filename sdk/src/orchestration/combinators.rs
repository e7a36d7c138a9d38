//! Combinators of durable futures: wait for all ([`JoinAll`], [`Join`]) or for the first
//! ([`Select`], [`WhenAny`]), where "first" is the completion history recorded first, on every
//! replay.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use super::futures::{DurableFuture, EventWait, Timer, sealed};
use crate::error::Error;

/// Why `select` and `when_any` cancel their losers, as history records it.
const LOST_SELECT: &str = "lost a select";

/// Either of two outputs: what [`Select`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future won.
    Left(A),
    /// The second future won.
    Right(B),
}

/// A child of a combinator: pending, or done with its output kept until all are done.
enum Slot<F: Future> {
    Pending(F),
    Done(Option<F::Output>, Option<u64>),
}

/// Waits for all futures ([`OrchestrationContext::join_all`](crate::OrchestrationContext::join_all)): fan-in.
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

    fn __cancel(&mut self, reason: &str) {
        for slot in &mut self.slots {
            if let Slot::Pending(future) = slot {
                future.__cancel(reason);
            }
        }
    }
}

/// Waits for two futures ([`OrchestrationContext::join`](crate::OrchestrationContext::join)).
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

    fn __cancel(&mut self, reason: &str) {
        if let Slot::Pending(a) = &mut self.a {
            a.__cancel(reason);
        }
        if let Slot::Pending(b) = &mut self.b {
            b.__cancel(reason);
        }
    }
}

/// The first of two futures ([`OrchestrationContext::select`](crate::OrchestrationContext::select)).
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
        match &winner {
            // The loser's open calls are cancelled (recorded in history), then both dropped.
            Poll::Ready(Either::Left(_)) => b.__cancel(LOST_SELECT),
            Poll::Ready(Either::Right(_)) => a.__cancel(LOST_SELECT),
            Poll::Pending => return Poll::Pending,
        }
        this.a = None;
        this.b = None;
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

    fn __cancel(&mut self, reason: &str) {
        if let Some(a) = self.a.as_mut() {
            a.__cancel(reason);
        }
        if let Some(b) = self.b.as_mut() {
            b.__cancel(reason);
        }
        self.a = None;
        self.b = None;
    }
}

/// The first of several futures ([`OrchestrationContext::when_any`](crate::OrchestrationContext::when_any)): its index and output.
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
                // The losers' open calls are cancelled (recorded in history), oldest first.
                for (j, loser) in self.futures.iter_mut().enumerate() {
                    if j != i {
                        loser.__cancel(LOST_SELECT);
                    }
                }
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

    fn __cancel(&mut self, reason: &str) {
        for future in &mut self.futures {
            future.__cancel(reason);
        }
        self.futures.clear();
    }
}

/// Waits for an external event with a timeout
/// ([`OrchestrationContext::wait_for_event_timeout`](crate::OrchestrationContext::wait_for_event_timeout)): `Ok(None)` when the timeout won.
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

    fn __cancel(&mut self, reason: &str) {
        self.inner.__cancel(reason);
    }
}
