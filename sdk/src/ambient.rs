//! Globals an orchestrator must not read: the type-level half of orchestrator rule 1 (no
//! ambient state). Reached only through `__private`; not public API.
//!
//! A static with interior mutability (an atomic, a `Mutex`, a `OnceLock`, …) or a
//! `thread_local!` key is shared by every instance in the process, so what an orchestrator
//! reads from it depends on what other instances and earlier runs did. The lint of
//! `#[orchestrator]` and `#[orchestration_helper]` sees only tokens, not the type of a global,
//! so for every path in the body that names a global by Rust's naming convention (`COUNTER`,
//! `crate::state::CACHE`) the macro adds a check that is type-checked but never runs:
//!
//! ```ignore
//! let _ = || {
//!     use ::duractor::__private::{ViaInteriorMutable as _, ViaPlain as _};
//!     ::duractor::__private::NotAmbientState::__check(
//!         (&&::duractor::__private::AmbientProbe(&COUNTER)).__verdict(),
//!     );
//! };
//! ```
//!
//! Autoref specialization picks the verdict: [`ViaInteriorMutable`], implemented on
//! `&AmbientProbe<T>` when `T` is [`InteriorMutable`], is found first and yields a `T`;
//! otherwise [`ViaPlain`], on `AmbientProbe<T>`, yields [`Deterministic`]. Only
//! `Deterministic` implements [`NotAmbientState`], so the check fails, with rule 1's message
//! and the global's type, exactly for globals whose type is marked [`InteriorMutable`].
//!
//! The marked types are the interior-mutable types of `std` and `tokio::sync`, the keys of
//! `thread_local!` and `tokio::task_local!`, and references, boxes, `Arc`s, arrays and slices
//! of them; a `LazyLock<T>` only when `T` is marked (a lazily built lookup table is fine).
//! A user type that wraps an atomic is not recognized: this crate cannot name it.

/// A type whose value can change behind a shared reference, so a global of this type is
/// state shared by every instance in the process.
pub trait InteriorMutable {}

/// Wraps a reference to a global for the check (see the module docs).
pub struct AmbientProbe<'a, T: ?Sized>(pub &'a T);

/// The verdict for a global whose type is not [`InteriorMutable`].
pub struct Deterministic;

/// Implemented only by [`Deterministic`]: the check fails for any other verdict.
#[diagnostic::on_unimplemented(
    message = "orchestrator rule 1 (no ambient state): this global (`{Self}`) can change, and every instance in the process (or, for a `thread_local!`, on the thread) shares it: its value depends on what other instances and earlier runs did, not on this instance's history",
    label = "a global with interior mutability",
    note = "keep state in local variables of the orchestrator, or pass it in the input; read a value that the rest of the program sets in an activity (`ctx.call_activity(..)`), whose result is recorded in history; keep state that instances share in an entity"
)]
pub trait NotAmbientState {
    /// Compiles only for [`Deterministic`].
    fn __check(self);
}

// `do_not_recommend`: the error should not suggest building a `Deterministic`.
#[diagnostic::do_not_recommend]
impl NotAmbientState for Deterministic {
    fn __check(self) {}
}

/// The verdict for a global of an [`InteriorMutable`] type: the type itself.
pub trait ViaInteriorMutable {
    /// The global's type.
    type Verdict;
    /// Never called: the check is only type-checked.
    fn __verdict(&self) -> Self::Verdict;
}

impl<T: InteriorMutable> ViaInteriorMutable for &AmbientProbe<'_, T> {
    type Verdict = T;
    fn __verdict(&self) -> T {
        unreachable!("the ambient-state check is type-checked, never run")
    }
}

/// The verdict for any other global: [`Deterministic`].
pub trait ViaPlain {
    /// Never called: the check is only type-checked.
    fn __verdict(&self) -> Deterministic;
}

impl<T: ?Sized> ViaPlain for AmbientProbe<'_, T> {
    fn __verdict(&self) -> Deterministic {
        Deterministic
    }
}

/// Marks types that have no generic parameters, each under its `cfg` if it has one.
macro_rules! interior_mutable {
    ($($(#[$cfg:meta])* $ty:ty;)*) => {
        $( $(#[$cfg])* impl InteriorMutable for $ty {} )*
    };
}

interior_mutable! {
    std::sync::Condvar;
    std::sync::Once;
    tokio::sync::Notify;
    tokio::sync::Semaphore;
    #[cfg(target_has_atomic = "8")] std::sync::atomic::AtomicBool;
    #[cfg(target_has_atomic = "8")] std::sync::atomic::AtomicI8;
    #[cfg(target_has_atomic = "8")] std::sync::atomic::AtomicU8;
    #[cfg(target_has_atomic = "16")] std::sync::atomic::AtomicI16;
    #[cfg(target_has_atomic = "16")] std::sync::atomic::AtomicU16;
    #[cfg(target_has_atomic = "32")] std::sync::atomic::AtomicI32;
    #[cfg(target_has_atomic = "32")] std::sync::atomic::AtomicU32;
    #[cfg(target_has_atomic = "64")] std::sync::atomic::AtomicI64;
    #[cfg(target_has_atomic = "64")] std::sync::atomic::AtomicU64;
    #[cfg(target_has_atomic = "ptr")] std::sync::atomic::AtomicIsize;
    #[cfg(target_has_atomic = "ptr")] std::sync::atomic::AtomicUsize;
}

#[cfg(target_has_atomic = "ptr")]
impl<T> InteriorMutable for std::sync::atomic::AtomicPtr<T> {}
impl<T: ?Sized> InteriorMutable for std::cell::Cell<T> {}
impl<T: ?Sized> InteriorMutable for std::cell::RefCell<T> {}
impl<T: ?Sized> InteriorMutable for std::cell::UnsafeCell<T> {}
impl<T> InteriorMutable for std::cell::OnceCell<T> {}
impl<T: ?Sized> InteriorMutable for std::sync::Mutex<T> {}
impl<T: ?Sized> InteriorMutable for std::sync::RwLock<T> {}
impl<T> InteriorMutable for std::sync::OnceLock<T> {}
impl<T: InteriorMutable, F> InteriorMutable for std::sync::LazyLock<T, F> {}
impl<T: 'static> InteriorMutable for std::thread::LocalKey<T> {}
impl<T: ?Sized> InteriorMutable for tokio::sync::Mutex<T> {}
impl<T: ?Sized> InteriorMutable for tokio::sync::RwLock<T> {}
impl<T> InteriorMutable for tokio::sync::OnceCell<T> {}
impl<T: 'static> InteriorMutable for tokio::task::LocalKey<T> {}

// What holds or points to such a value.
impl<T: InteriorMutable + ?Sized> InteriorMutable for &T {}
impl<T: InteriorMutable + ?Sized> InteriorMutable for Box<T> {}
impl<T: InteriorMutable + ?Sized> InteriorMutable for std::sync::Arc<T> {}
impl<T: InteriorMutable, const N: usize> InteriorMutable for [T; N] {}
impl<T: InteriorMutable> InteriorMutable for [T] {}
