//! Procedural macros of duractor. Use them through the `duractor` crate
//! (`duractor::activity`, `duractor::orchestrator`), which documents them.
//!
//! Each macro goes parse → model → validate → expand, one module each: [`ast`] turns the
//! annotated item into a small model and checks the signature (every problem is reported at
//! its token, all at once), [`durable`] rewrites orchestrator bodies so every `.await` must be
//! on a durable future, and [`expand`] generates the typed handle and its registration. The
//! generated code calls only `::duractor::…` paths.

extern crate proc_macro;

mod ast;
mod attr;
mod durable;
mod entity;
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

/// Declares an entity: on the state type (a struct or enum deriving `Default`, `Serialize`
/// and `Deserialize`; `#[entity(name = "..")]` to rename) and on its `impl` block, whose
/// methods with a `self` receiver are the operations. See `duractor::entity`.
#[proc_macro_attribute]
pub fn entity(args: TokenStream, item: TokenStream) -> TokenStream {
    entity::expand(args.into(), item.into()).into()
}
