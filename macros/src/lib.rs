//! Procedural macros of duractor. Use them through the `duractor` crate
//! (`duractor::activity`, `duractor::orchestrator`, `duractor::orchestration_helper`,
//! `duractor::allow_nondeterminism`), which documents them.
//!
//! Each macro goes parse → model → lint → expand, one module each: [`ast`] turns the
//! annotated item into a small model and checks the signature (every problem is reported at
//! its token, all at once), [`attr`] parses the attributes, [`lint`] checks orchestrator and
//! helper bodies against the orchestrator rules (reading macro arguments with
//! [`macro_args`]), [`durable`] rewrites those bodies so every `.await` must be on a durable
//! future, and [`expand`] generates the typed handle and its registration, or a helper's
//! durable future. The generated code calls only `::duractor::…` paths.

extern crate proc_macro;

mod ast;
mod attr;
mod durable;
mod entity;
mod expand;
mod lint;
mod macro_args;

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
