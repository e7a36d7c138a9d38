//! The orchestrator rules, checked on the tokens of an `#[orchestrator]` or
//! `#[orchestration_helper]` body before it is expanded.
//!
//! An orchestrator is replayed from its history after every restart, so everything it does
//! must come out the same on every run. The lint walks the whole body — nested blocks,
//! closures, `async` blocks, match arms, the arguments of macro calls (see
//! [`crate::macro_args`]), and the items declared in the body (nested `fn`s, the methods of
//! nested `impl`s and `trait`s, nested `mod`s, the initializers of `static`s), which run when
//! the body uses them — and reports every offence at once, each at the offending tokens, each
//! naming the rule, why it breaks replay and the `ctx` replacement:
//!
//! 1. **No clocks, randomness or ambient state**: paths such as `SystemTime::now`,
//!    `Instant::now`, `Utc::now`, `rand::random`, `thread_rng`, `Uuid::new_v4`,
//!    `std::env::var`, `std::process::*`; `static mut` / `thread_local!` declared in the body;
//!    and `unsafe` blocks and `unsafe fn`s, the only way to read a `static mut` declared
//!    anywhere (or memory behind a raw pointer). Whether a global declared outside the body
//!    has interior mutability (an atomic, a `Mutex`, a `thread_local!` key) is a question of
//!    types: [`crate::globals`] adds a check the compiler answers.
//! 2. **No I/O or custom scheduling**: `std::fs`, `tokio::fs`, sockets of `std::net` and
//!    `tokio::net`, `std::thread::{spawn, sleep}`, `tokio::spawn`, `spawn_blocking`,
//!    `tokio::time::sleep`, `select!`/`join!` macros and the `futures` combinators. Awaiting
//!    anything that is not durable is also rejected, by the type system (see [`crate::durable`]).
//! 3. **No infinite loops**: a `loop` (or `while true`, or `for` over an endless range `n..`)
//!    with no `break` or `return` that leaves it. A `break` inside a nested loop or closure
//!    does not count for the outer loop, and neither does `?`: a loop that ends only on an
//!    error runs forever when everything goes well, and its history grows without bound.
//! 4. **Rust's own trap**: iterating a `HashMap`/`HashSet` (`for _ in map`, `.iter()`,
//!    `.keys()`, `.values()`, `.into_iter()`, `.drain()`, …), whose order is random per process,
//!    when the binding is visibly one in the body: a parameter or `let` with such a type, or a
//!    `let` initialized with `HashMap::new()`, `HashSet::from(..)`, `collect::<HashMap<..>>()`.
//!
//! # How paths are matched
//!
//! A path is flagged when it *is* a known nondeterministic API or *ends like one* from a
//! known module on: `Instant::now`, `time::Instant::now` and `::std::time::Instant::now` are
//! all flagged, `clock::Instant::now` and `crate::clock::Instant::now` are not, because their
//! leading segments name another module. `use … as …` (and `use …::*`) declared inside the
//! body are resolved first, so `use std::time::Instant as Clock; Clock::now()` is flagged
//! and `use crate::clock::Instant; Instant::now()` is not. Bare one-segment paths are flagged
//! only when they are distinctive and called (`thread_rng()`, `rng()`, `spawn_blocking(..)`)
//! or capitalized (`OsRng`), never as lowercase values (a local variable named `rng` is
//! fine). Method calls are never matched by name (`ctx.now()`, `my_clock.now()` are fine):
//! the lint does not know their types.
//!
//! # What a token-level lint cannot see
//!
//! The lint runs inside the macro, before name resolution and type checking, so it sees only
//! the tokens of the annotated function:
//! - calls hidden in functions declared outside the body (a plain `fn` that calls
//!   `Utc::now()`), and in methods (`instant.elapsed()`, `addr.to_socket_addrs()`); items
//!   declared inside the body are linted, except those another duractor macro expands
//!   (`#[activity]`, `#[orchestration_helper]`, …);
//! - the type of a global: that `COUNTER` is an `AtomicU32` is checked by the compiler instead
//!   (see [`crate::globals`]), for the types of `std` and `tokio` it knows;
//! - `use` declarations and aliases outside the body: `use std::thread::sleep;` at the top of
//!   the file makes a bare `sleep(d)` invisible (the path-ending rule still catches
//!   `Instant::now` and `thread::sleep`), and a user type named `Instant` with a `now`
//!   function is flagged when called as `Instant::now()` (call it by its module path);
//! - types inferred from elsewhere: a `HashMap` in a struct field, returned by a function or
//!   received from an activity is not known to be one; `Vec::from_iter(map)` or `{:?}` of a map
//!   iterates it without a visible iteration method;
//! - macros whose arguments are not expressions (their tokens are scanned for paths only),
//!   and what any macro expands to;
//! - libraries not on the list (a blocking HTTP client, a database driver): their futures are
//!   rejected when awaited, by the type rule, but their blocking calls are not.
//!
//! What it cannot see, replay still catches when it changes the sequence of durable calls:
//! the NonDeterminism error (`duractor::Error::NonDeterminism`) fails the instance.
//!
//! # Where things are
//!
//! - [`walk`]: the syntax-tree visitor: which nodes are linted (nested items, macro
//!   arguments), the escape hatch, and the local names in scope;
//! - [`rules`]: the table of banned paths and macros (rules 1 and 2) and their messages;
//! - [`aliases`]: the `use` declarations of the body, and paths as written;
//! - [`loops`]: rule 3, loops without a way out;
//! - [`hashes`]: rule 4, which bindings are visibly a `HashMap`/`HashSet` and their iteration.

mod aliases;
mod hashes;
mod loops;
mod rules;
#[cfg(test)]
mod tests;
mod walk;

use syn::visit::Visit;
use syn::{Block, Expr, Signature};

pub use self::aliases::Aliases;
use self::walk::Linter;

/// Lints a function: its parameters (for `HashMap` inputs) and its body. Returns every
/// offence, combined.
pub fn check(sig: &Signature, block: &Block) -> syn::Result<()> {
    let aliases = Aliases::collect(block);
    let mut linter = Linter::new(&aliases);
    linter.lint_fn(sig, block);
    linter.errors.finish()
}

/// `true` if the lint reports anything in `expr`. The `.await` rewriting uses it so an
/// awaited expression the lint already rejected is not reported a second time by the type rule.
pub fn offends(expr: &Expr, aliases: &Aliases) -> bool {
    let mut linter = Linter::new(aliases);
    linter.visit_expr(expr);
    linter.errors.finish().is_err()
}
