//! Procedural macros of duractor. Use them through the `duractor` crate
//! (`duractor::activity`, `duractor::orchestrator`), which documents them.
//!
//! Each macro goes parse → model → validate → expand, one module each: [`ast`] turns the
//! annotated item into a small model and checks the signature (every problem is reported at
//! its token, all at once), [`durable`] rewrites orchestrator bodies so every `.await` must be
//! on a durable future, and [`expand`] generates the typed handle and its registration. The
//! generated code calls only `::duractor::…` paths. [`entry`] does the same for
//! `#[duractor::main]`.

extern crate proc_macro;

mod ast;
mod attr;
mod durable;
mod entry;
mod expand;

use proc_macro::TokenStream;

use crate::ast::Kind;

/// Turns `async fn name(ctx: ActivityContext, input: I) -> Result<O, E>` into an activity
/// with a typed handle (`Name`). See `duractor::activity`.
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::function(Kind::Activity, args.into(), item.into()).into()
}

/// Turns `async fn name(ctx: OrchestrationContext, input: I) -> Result<O, E>` into an
/// orchestrator with a typed handle (`Name`). See `duractor::orchestrator`.
#[proc_macro_attribute]
pub fn orchestrator(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::function(Kind::Orchestrator, args.into(), item.into()).into()
}

/// Makes `async fn main` the entry point of a duractor app: a command line (`serve`, `run`,
/// `start`, `status`, `history`, `list`, `raise`, `terminate`, `suspend`, `resume`, `rewind`,
/// `purge`, `functions`), the workers and the HTTP management API, on a store chosen by
/// `--database-url` / `DURACTOR_DATABASE_URL` (default: a SQLite file named after the program
/// in the working directory). Every `#[activity]` and `#[orchestrator]` of the program is
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
