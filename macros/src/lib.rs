//! Procedural macros of duractor. Use them through the `duractor` crate
//! (`duractor::activity`, `duractor::orchestrator`, `duractor::orchestration_helper`,
//! `duractor::entity`, `duractor::main`, `duractor::allow_nondeterminism`), which documents
//! them.
//!
//! Each macro goes parse → model → validate → expand, reports every problem at its token, all
//! at once, and on error still emits the user's item (and what other code refers to), so that
//! no follow-on error hides the real ones. The modules:
//!
//! - `attr`: the arguments of every attribute, one parser, with the keys each one accepts;
//! - `ast`: the model of an `#[activity]`, `#[orchestrator]` or `#[orchestration_helper]`
//!   function, and its signature checks;
//! - `lint`: the orchestrator rules, checked on orchestrator and helper bodies (its module doc
//!   says what it sees and what it cannot), skipping the statements under the escape hatch,
//!   whose attribute `allow` reads; `macro_args` reads the arguments of macro calls in a body
//!   (`format!`, `info!`) as expressions, for the lint and the rewriting;
//! - `globals` adds to those bodies the type-level check of the globals they read, and
//!   `durable` rewrites them so that every `.await` must be on a durable future;
//! - `expand`: the typed handle, its trait impl and its registration, or a helper's durable
//!   future;
//! - `entity`: `#[entity]`, with its own model, checks and expansion;
//! - `entry`: `#[duractor::main]`.
//!
//! The generated code calls only `::duractor::…` paths, except the default store opener of
//! `#[duractor::main]`, `::duractor_sqlx::open`.
#![warn(missing_docs)]

extern crate proc_macro;

mod allow;
mod ast;
mod attr;
mod durable;
mod entity;
mod entry;
mod expand;
mod globals;
mod lint;
mod macro_args;
mod test_fn;

use proc_macro::TokenStream;

use crate::ast::Kind;

/// Turns `async fn name(ctx: ActivityContext, input: I) -> Result<O, E>` into an activity
/// with a typed handle (`Name`). See `duractor::activity`.
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::function(Kind::Activity, args.into(), item.into()).into()
}

/// Turns `async fn name(ctx: OrchestrationContext, input: I) -> Result<O, E>` into an
/// orchestrator with a typed handle (`Name`), after checking its body against the orchestrator
/// rules: no clocks, randomness or ambient state, no I/O or custom scheduling, no infinite
/// loops, no `HashMap` iteration, and every `.await` on a durable future. Each violation is a
/// compile error that names the `ctx` replacement; see `docs/orchestrator-rules.md`.
#[proc_macro_attribute]
pub fn orchestrator(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::function(Kind::Orchestrator, args.into(), item.into()).into()
}

/// Declares an entity: on the state type (a struct or enum deriving `Default`, `Serialize`
/// and `Deserialize`; `#[entity(name = "..")]` to rename) and on its `impl` block, whose
/// methods with a `self` receiver are the operations. See `duractor::entity`.
#[proc_macro_attribute]
pub fn entity(args: TokenStream, item: TokenStream) -> TokenStream {
    entity::expand(args.into(), item.into()).into()
}

/// Makes an `async fn` usable from orchestrators: checks its body against the orchestrator
/// rules and returns a durable future. See `duractor::orchestration_helper`.
#[proc_macro_attribute]
pub fn orchestration_helper(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::helper(args.into(), item.into()).into()
}

/// The escape hatch for one statement of an orchestrator or helper; `#[orchestrator]` and
/// `#[orchestration_helper]` consume it. Reaching this macro means it was put somewhere else.
/// See `duractor::allow_nondeterminism`.
#[proc_macro_attribute]
pub fn allow_nondeterminism(_args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stray_allow(item.into()).into()
}

/// A test on the test kit: `async fn name(t: TestRuntime) { .. }` becomes a `#[test]` that
/// runs the body with a fresh `duractor::testing::TestRuntime` (needs duractor's `testing`
/// feature). Other attributes (`#[should_panic]`, `#[ignore]`) are kept.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_fn::test(args.into(), item.into()).into()
}

/// Makes `async fn main` the entry point of a duractor app: a command line (`serve`, `run`,
/// `start`, `status`, `history`, `list`, `raise`, `terminate`, `suspend`, `resume`, `rewind`,
/// `purge`, `functions`, `signal`, `entity`, `entities`, `replay`), the workers and the HTTP
/// management API, on a store chosen by `--database-url` / `DURACTOR_DATABASE_URL` (default: a
/// SQLite file named after the program in the working directory). Every `#[activity]` and `#[orchestrator]` of the program is
/// registered.
///
/// ```ignore
/// use duractor::prelude::*;
///
/// #[activity]
/// async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, duractor::Error> {
///     Ok(format!("Hello {city}!"))
/// }
///
/// #[duractor::main]
/// async fn main() {}
/// ```
///
/// The body runs after the command line is parsed and before the command; with a parameter
/// it gets the app's setup (`&mut duractor::App`) to share clients with activities, adjust the
/// runtime builder or choose a tracing subscriber. It may return `()` or `Result<(), E>`
/// (an error is printed and the program exits with code 1):
///
/// ```ignore
/// struct Mailer;
///
/// #[duractor::main]
/// async fn main(app: &mut duractor::App) -> Result<(), duractor::Error> {
///     if app.runs_worker() {
///         app.with_shared(Mailer);
///     }
///     Ok(())
/// }
/// ```
///
/// The generated code opens the store with `::duractor_sqlx::open`, so the app depends on
/// both `duractor` and `duractor-sqlx`; `#[duractor::main(store = path::to::open)]` uses
/// another `async fn(&str) -> Result<Arc<dyn duractor::Store>, duractor::Error>`.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::main(args.into(), item.into()).into()
}
