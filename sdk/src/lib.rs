//! # duractor
//!
//! Durable orchestrations, activities and entities for Rust: workflows written as ordinary
//! `async fn`s, made durable by event sourcing into SQL.
//!
//! ```no_run
//! use duractor::prelude::*;
//! use std::time::Duration;
//!
//! #[activity]
//! async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, duractor::Error> {
//!     Ok(format!("Hello {city}!"))
//! }
//!
//! #[orchestrator]
//! async fn hello_cities(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, duractor::Error> {
//!     let mut out = Vec::new();
//!     for city in ["Tokyo", "Seattle", "London"] {
//!         out.push(ctx.call_activity(SayHello, city.to_string()).await?);
//!     }
//!     Ok(out)
//! }
//!
//! // `store` is e.g. `duractor_sqlx::SqliteStore::open("hello.db").await?`.
//! async fn run(store: impl duractor::Store) -> Result<(), duractor::Error> {
//!     let runtime = Runtime::builder(store).start().await?;
//!     let client = runtime.client();
//!     let id = client.start(HelloCities, ()).await?;
//!     let status = client.wait_for_completion(&id, Duration::from_secs(10)).await?;
//!     println!("{:?}", status.output::<Vec<String>>()?);
//!     runtime.shutdown().await
//! }
//! ```
//!
//! The modules come in layers, each written only in terms of the ones before it:
//! the vocabulary ([`id`], [`error`], [`payload`], [`history`], [`limits`], [`retry`],
//! [`timeouts`], [`clock`]) → [`store`] (the storage contract) → the user functions and their contexts
//! ([`activity`](mod@activity), [`entity`](mod@entity), [`orchestration`], whose executor replays history into an
//! orchestrator) → [`registry`] (what a worker can run) → [`client`] → [`runtime`] (the actors
//! that schedule turns and run activities) → [`http`] and [`cli`], the two faces of the app
//! that [`main`] generates. `docs/architecture.md` gives each module's job.
//!
//! # The generated main
//!
//! ```no_run
//! use duractor::prelude::*;
//!
//! #[activity]
//! async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, duractor::Error> {
//!     Ok(format!("Hello {city}!"))
//! }
//!
//! #[duractor::main] // CLI + workers + HTTP API on ./<program>.db
//! async fn main() {}
//! ```
//!
//! The app depends on `duractor` and `duractor-sqlx` (the generated code opens the store with
//! `duractor_sqlx::open`; `#[duractor::main(store = my::open)]` names another function).
//! `myapp serve` runs the workers and the HTTP API, `myapp run NAME` runs one orchestration,
//! and the other commands are clients: see [`cli`] and [`http`].
#![warn(missing_docs)]

// The macros expand to `::duractor::…` paths; this makes them work inside this crate too (its
// unit tests use them).
extern crate self as duractor;

// The modules in layers, lowest first: each imports only from the layers below it (and from
// its own layer's modules), which `tests/tests/architecture.rs` checks; `docs/architecture.md`
// gives each module's job.
//
// vocabulary — the words everything else is written in
mod ambient;
pub mod clock;
pub mod error;
pub mod flow;
pub mod history;
pub mod id;
pub mod limits;
mod panics;
pub mod payload;
pub mod retry;
pub mod timeouts;
// the storage contract
pub mod store;
// typed handles of functions
mod handles;
// the three kinds of user functions and their contexts
pub mod activity;
pub mod entity;
pub mod orchestration;
pub mod schedule;
// what a worker can run
pub mod registry;
// talking to the store from anywhere
pub mod client;
// the workers
pub mod runtime;
// the generated main's faces
pub mod cli;
pub mod http;
#[cfg(feature = "testing")]
pub mod testing;

pub use activity::{ActivityContext, CancelReason, CancellationToken, SharedState};
/// The time crate duractor's public API uses (`DateTime<Utc>`), re-exported.
pub use chrono;
pub use cli::App;
pub use client::{Client, IfExists, InstanceStatus, Start};
/// A test on the test kit: `#[duractor::test] async fn name(t: TestRuntime) { .. }` is a
/// `#[test]` whose body gets a fresh [`testing::TestRuntime`] (virtual clock, in-memory
/// store, every function of the test binary registered).
///
/// ```
/// use std::time::Duration;
/// use duractor::prelude::*;
/// use duractor::testing::TestRuntime;
///
/// #[orchestrator]
/// async fn renewal(ctx: OrchestrationContext, days: u64) -> Result<u64, duractor::Error> {
///     ctx.sleep(Duration::from_secs(days * 86_400)).await;
///     Ok(days)
/// }
///
/// #[duractor::test]
/// async fn renews_after_a_year(t: TestRuntime) {
///     let id = t.start(Renewal, 365).await;
///     assert_eq!(t.output(Renewal, &id).await, 365);
///     assert_eq!(t.timers(&id).await, [Duration::from_secs(365 * 86_400)]);
/// }
/// # fn main() {}
/// ```
#[cfg(feature = "testing")]
pub use duractor_macros::test;
pub use duractor_macros::{activity, entity, main, orchestrator};
pub use entity::{Entity, EntityContext, EntityId};
pub use orchestration::{
    CriticalSection, DurableFuture, Either, OrchestrationContext, OrchestrationRng,
};

/// Makes an `async fn` part of an orchestration: its body follows the orchestrator rules
/// (checked by the same lint and the same durable-await rule as `#[orchestrator]`), and it
/// returns a durable future that orchestrators can await, join and select.
///
/// It goes on any `async fn`: free or a method, with any parameters (borrowed ones too) and
/// any return type, possibly generic. The function becomes
/// `fn name(..) -> Durable<impl Future<Output = T>>`. See `docs/orchestrator-rules.md`.
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
/// /// Charges, retrying with a durable back-off.
/// #[orchestration_helper]
/// async fn charge_with_retry(
///     ctx: &OrchestrationContext,
///     cents: u64,
///     attempts: u32,
/// ) -> Result<String, duractor::Error> {
///     for attempt in 1..attempts {
///         if let Ok(receipt) = ctx.call_activity(Charge, cents).await {
///             return Ok(receipt);
///         }
///         ctx.sleep(Duration::from_secs(u64::from(attempt))).await;
///     }
///     ctx.call_activity(Charge, cents).await
/// }
///
/// #[orchestrator]
/// async fn checkout(ctx: OrchestrationContext, carts: Vec<u64>) -> Result<Vec<String>, duractor::Error> {
///     let receipts = ctx
///         .join_all(carts.into_iter().map(|cents| charge_with_retry(&ctx, cents, 3)))
///         .await;
///     receipts.into_iter().collect()
/// }
/// ```
pub use duractor_macros::orchestration_helper;

/// The escape hatch for one statement of an orchestrator or helper:
/// `#[duractor::allow_nondeterminism(reason = "..")]` turns the orchestrator lint off for that
/// statement (a `let`, an expression statement or a match arm). The reason is required, so
/// every exception can be found and reviewed by searching for `allow_nondeterminism`.
///
/// It never turns off the durable-await rule: `.await`s in the statement must still be on
/// durable futures. `#[orchestrator]` and `#[orchestration_helper]` remove the attribute after
/// linting; anywhere else it is a compile error.
///
/// ```
/// use duractor::prelude::*;
///
/// #[activity]
/// async fn step(_ctx: ActivityContext, n: u32) -> Result<u32, duractor::Error> {
///     Ok(n + 1)
/// }
///
/// #[orchestrator]
/// async fn measured(ctx: OrchestrationContext, n: u32) -> Result<u32, duractor::Error> {
///     #[duractor::allow_nondeterminism(reason = "wall-clock time only feeds a log line")]
///     let started = std::time::Instant::now();
///     let out = ctx.call_activity(Step, n).await?;
///     if !ctx.is_replaying() {
///         #[duractor::allow_nondeterminism(reason = "log only")]
///         tracing::debug!(elapsed = ?started.elapsed(), "step done");
///     }
///     Ok(out)
/// }
/// ```
pub use duractor_macros::allow_nondeterminism;
pub use error::{Error, Failure, Result};
pub use flow::FlowControl;
pub use handles::{Activity, Orchestrator};
pub use history::{Event, ParentInstance, Payload};
pub use limits::Limits;
pub use registry::Registry;
pub use retry::RetryPolicy;
pub use runtime::{MetricsSnapshot, Runtime, RuntimeBuilder};
pub use store::{RuntimeStatus, Store};
pub use timeouts::{ActivityOptions, ActivityTimeouts};

/// The names most programs need: `use duractor::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Activity, ActivityContext, ActivityOptions, Client, DurableFuture, Either, Entity,
        EntityContext, EntityId, Error, OrchestrationContext, Orchestrator, RetryPolicy, Runtime,
        RuntimeStatus, activity, entity, orchestration_helper, orchestrator,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Where the contexts lived before the orchestration engine got its own module: these paths
/// keep working.
pub mod context {
    pub use crate::activity::{ActivityContext, SharedState};
    pub use crate::orchestration::{OrchestrationContext, OrchestrationRng};
}

/// The durable futures (now in [`orchestration`]), at their former
/// path.
pub mod durable {
    pub use crate::orchestration::{
        ActivityCall, Call, ContinueAsNew, CriticalSection, Durable, DurableFuture, Either,
        EntityCall, EventWait, EventWaitTimeout, Join, JoinAll, LockRequest, Select,
        SubOrchestrationCall, Timer, WhenAny,
    };
}

/// Replaying histories (now in [`orchestration`] and
/// [`limits`]), at its former path.
pub mod replay {
    pub use crate::limits::{Limits, MAX_PAYLOAD_DEPTH};
    pub use crate::orchestration::check_history;
}

/// What the macros expand to. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::activity::ActivityBody;
    pub use crate::ambient::{
        AmbientProbe, Deterministic, InteriorMutable, NotAmbientState, ViaInteriorMutable, ViaPlain,
    };
    pub use crate::cli::{MainOutput, OpenStoreFn, SetupFn, run_main};
    pub use crate::entity::{
        __check_input, __decode_input, __encode_output, __unknown_operation, EntityEntry,
        EntityType, OperationInfo, ProxyMode, ProxyTarget,
    };
    pub use crate::handles::{
        Captures, ErrorWrap, LocalBoxFuture, ResultParts, ViaDisplay, ViaDuractorError, ViaStdError,
    };
    pub use crate::orchestration::{__durable, Durable, OrchestratorBody};
    pub use crate::registry::{ActivityEntry, OrchestratorEntry, Registration};
    pub use inventory;
}
