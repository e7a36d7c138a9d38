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
//! The modules follow the flow of an orchestration: [`history`] (the events) → [`replay`]
//! (the executor that feeds history into the orchestrator) → [`runtime`] (the actors that
//! schedule turns and run activities) → [`store`] (the storage contract) → [`client`] →
//! [`http`] and [`cli`], the two faces of the app that [`main`] generates.
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

mod ambient;
pub mod cli;
pub mod client;
pub mod clock;
pub mod context;
pub mod durable;
pub mod entity;
pub mod error;
pub mod history;
pub mod http;
pub mod id;
mod panics;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod runtime;
pub mod store;

/// The time crate duractor's public API uses (`DateTime<Utc>`), re-exported.
pub use chrono;
pub use cli::App;
pub use client::{Client, InstanceStatus, Start};
pub use context::{ActivityContext, OrchestrationContext, OrchestrationRng, SharedState};
pub use durable::{CriticalSection, DurableFuture, Either};
pub use duractor_macros::{activity, entity, main, orchestrator};
pub use entity::{Entity, EntityContext, EntityId};

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
pub use history::{Event, ParentInstance, Payload};
pub use registry::{Activity, Orchestrator, Registry};
pub use replay::Limits;
pub use retry::RetryPolicy;
pub use runtime::{MetricsSnapshot, Runtime, RuntimeBuilder};
pub use store::{RuntimeStatus, Store};

/// The names most programs need: `use duractor::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Activity, ActivityContext, Client, DurableFuture, Either, Entity, EntityContext, EntityId,
        Error, OrchestrationContext, Orchestrator, RetryPolicy, Runtime, RuntimeStatus, activity,
        entity, orchestration_helper, orchestrator,
    };
    pub use serde::{Deserialize, Serialize};
}

/// What the macros expand to. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::ambient::{
        AmbientProbe, Deterministic, InteriorMutable, NotAmbientState, ViaInteriorMutable, ViaPlain,
    };
    pub use crate::durable::{__durable, Durable};
    pub use crate::entity::{
        __check_input, __decode_input, __encode_output, __unknown_operation, EntityEntry,
        EntityType, OperationInfo, ProxyMode, ProxyTarget,
    };
    pub use crate::registry::{ActivityEntry, LocalBoxFuture, OrchestratorEntry, Registration};
    pub use inventory;
    use std::fmt::Display;
    use std::process::ExitCode;
    use std::sync::Arc;

    /// Lets an `#[orchestration_helper]`'s `impl Future` capture a lifetime of its parameters
    /// without requiring the future to outlive it (needed in edition 2021, harmless in 2024).
    pub trait Captures<'a> {}
    impl<T: ?Sized> Captures<'_> for T {}

    use crate::cli::App;
    use crate::error::{Error, Failure};
    use crate::store::Store;

    /// Opens the store a database URL names.
    pub type OpenStoreFn = fn(String) -> LocalBoxFuture<'static, Result<Arc<dyn Store>, Error>>;

    /// The body of the user's `main`, boxed.
    pub type SetupFn = for<'a> fn(&'a mut App) -> LocalBoxFuture<'a, Result<(), String>>;

    /// The generated `fn main`: parses the command line, runs the body of the user's `main`
    /// (its setup), opens the store with `open`, runs the command.
    pub fn run_main(bin_name: Option<&'static str>, open: OpenStoreFn, setup: SetupFn) -> ExitCode {
        crate::cli::run_main(bin_name, open, setup)
    }

    /// What the body of `#[duractor::main] async fn main` may return.
    #[diagnostic::on_unimplemented(
        message = "`#[duractor::main]` functions return `()` or `Result<(), E>` where `E: Display`, found `{Self}`",
        label = "return `()` or a `Result<(), E>`",
        note = "an error returned by `main` is printed and the program exits with code 1"
    )]
    pub trait MainOutput {
        fn into_main_result(self) -> Result<(), String>;
    }

    impl MainOutput for () {
        fn into_main_result(self) -> Result<(), String> {
            Ok(())
        }
    }

    impl<E: Display> MainOutput for Result<(), E> {
        fn into_main_result(self) -> Result<(), String> {
            self.map_err(|e| format!("{e:#}"))
        }
    }

    /// Names the `Ok` type of a function's `Result` return type, whatever alias spells it.
    #[diagnostic::on_unimplemented(
        message = "duractor functions must return `Result<T, E>`, found `{Self}`",
        label = "the return type must be a `Result`",
        note = "write the signature as `async fn name(ctx: .., input: I) -> Result<O, E>`; `duractor::Error` works as `E`"
    )]
    pub trait ResultParts {
        type Ok;
        type Err;
        fn into_result(self) -> Result<Self::Ok, Self::Err>;
    }

    impl<T, E> ResultParts for Result<T, E> {
        type Ok = T;
        type Err = E;
        fn into_result(self) -> Result<T, E> {
            self
        }
    }

    /// Wrapper for autoref specialization: a `duractor::Error` keeps its structure, other
    /// errors become an application failure carrying their message (and source chain).
    pub struct ErrorWrap<E>(pub E);

    pub trait ViaDuractorError {
        fn __into_failure(&self) -> Failure;
    }
    impl ViaDuractorError for &&ErrorWrap<Error> {
        fn __into_failure(&self) -> Failure {
            self.0.to_failure()
        }
    }

    pub trait ViaStdError {
        fn __into_failure(&self) -> Failure;
    }
    impl<E: std::error::Error> ViaStdError for &ErrorWrap<E> {
        fn __into_failure(&self) -> Failure {
            let mut message = self.0.to_string();
            let mut source = self.0.source();
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Failure::application(message)
        }
    }

    pub trait ViaDisplay {
        fn __into_failure(&self) -> Failure;
    }
    impl<E: Display> ViaDisplay for ErrorWrap<E> {
        fn __into_failure(&self) -> Failure {
            Failure::application(format!("{:#}", self.0))
        }
    }
}
