//! Panics in user code that duractor catches (an activity, an entity operation, an
//! orchestrator) are reported once, through `tracing`, with their message and location —
//! not printed again by the default panic hook (with a backtrace under `RUST_BACKTRACE`) on
//! every attempt of a retried activity.
//!
//! [`install_hook`] wraps the process's panic hook once: while a thread runs user code under
//! [`caught`], a panic there only records where it happened ([`take_location`]); any other
//! panic goes to the previous hook as before. A hook the program sets later replaces this
//! one, as it should.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// How many [`caught`] scopes this thread is in.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last caught panic on this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Wraps the panic hook (once per process) so that caught panics in user code are quiet.
pub(crate) fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                LOCATION.with(|last| *last.borrow_mut() = location);
                return;
            }
            previous(info);
        }));
    });
}

/// Runs `f` (user code whose panics the caller catches) with the hook quiet on this thread.
pub(crate) fn caught<R>(f: impl FnOnce() -> R) -> R {
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            CATCHING.with(|n| n.set(n.get().saturating_sub(1)));
        }
    }
    CATCHING.with(|n| n.set(n.get() + 1));
    let _scope = Scope;
    f()
}

/// Where the last panic caught on this thread happened (`file:line:column`), taken.
pub(crate) fn take_location() -> Option<String> {
    LOCATION.with(|last| last.borrow_mut().take())
}

/// A future polled under [`caught`]: for async user code (activities).
pub(crate) struct Caught<F>(pub(crate) F);

impl<F: Future + Unpin> Future for Caught<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        caught(|| Pin::new(&mut self.0).poll(cx))
    }
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// Locks a mutex whose data stays whole even if a holder panicked (every holder in this
/// crate leaves it so): a poisoned lock is taken as it is rather than spreading the panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_panics_record_their_location() {
        install_hook();
        let result = std::panic::catch_unwind(|| caught(|| panic!("boom")));
        assert!(result.is_err());
        let location = take_location().unwrap_or_default();
        assert!(location.starts_with("sdk/src/panics.rs:"), "{location}");
        assert_eq!(CATCHING.with(Cell::get), 0);
        assert_eq!(take_location(), None);
    }
}
