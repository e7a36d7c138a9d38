//! Orchestrations: the engine that runs orchestrator code durably, with no store and no
//! actors — a pure function of history in, decisions out.
//!
//! * `state` — one execution's state: durable calls and their results, event waiters, the
//!   deterministic counters, the critical section and its rules.
//! * `actions` — `Action`s: the durable calls the code made, matched against the decisions
//!   history recorded.
//! * `futures` — the durable futures orchestrators await ([`DurableFuture`]), each holding the
//!   state it reads.
//! * `combinators` — join and select over durable futures.
//! * `context` — [`OrchestrationContext`], the facade orchestrator code calls.
//! * `executor` — `Executor`: replays history into the code and runs turns.
//!
//! [`check_history`] replays a recorded history against the current code, e.g. in a test
//! before deploying a new version of an orchestrator.

mod actions;
mod combinators;
mod context;
mod entry;
mod executor;
mod futures;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use actions::{Action, CancelTarget};
pub use combinators::{Either, EventWaitTimeout, Join, JoinAll, Select, WhenAny};
pub use context::EntityCall;
#[doc(hidden)]
pub use context::OrchestratorBody;
pub use context::{OrchestrationContext, OrchestrationRng};
pub use entry::OrchestratorEntry;
pub use executor::check_history;
pub(crate) use executor::check_history_and_waits;
pub(crate) use executor::{Executor, Outcome, TurnOutput};
#[doc(hidden)]
pub use futures::__durable;
pub use futures::{
    ActivityCall, Call, ContinueAsNew, CriticalSection, Durable, DurableFuture, EventWait,
    LockRequest, SubOrchestrationCall, Timer,
};
