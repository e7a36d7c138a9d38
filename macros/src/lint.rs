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

use std::collections::{HashMap, HashSet};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::visit::{self, Visit};
use syn::{
    Arm, Block, Expr, ExprCall, ExprClosure, ExprForLoop, ExprIf, ExprLoop, ExprMethodCall,
    ExprPath, ExprWhile, FnArg, GenericArgument, Item, ItemUse, Lifetime, Local, Macro, Pat, Path,
    PathArguments, QSelf, RangeLimits, Signature, StaticMutability, Stmt, Type, UseTree,
};

use crate::ast::Errors;
use crate::attr;
use crate::macro_args::{self, ArgBody};

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

// ---------------------------------------------------------------------------------------------
// `use` declarations inside the body
// ---------------------------------------------------------------------------------------------

/// The names `use` declarations inside a body bring into scope: `Clock` → `std::time::Instant`.
/// Scopes are not tracked: a `use` anywhere in the body (nested items included) applies to all
/// of it.
#[derive(Default, Debug)]
pub struct Aliases {
    names: HashMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
}

impl Aliases {
    /// The `use` declarations in `block`, its nested blocks and its nested items (those the
    /// lint checks: not the items another duractor macro expands).
    pub fn collect(block: &Block) -> Aliases {
        struct Collector(Aliases);
        impl<'ast> Visit<'ast> for Collector {
            fn visit_item(&mut self, item: &'ast Item) {
                match item {
                    Item::Use(ItemUse { tree, .. }) => self.0.add(Vec::new(), tree),
                    _ if attr::has_item_macro(attr::item_attrs(item)) => {}
                    _ => visit::visit_item(self, item),
                }
            }
            fn visit_macro(&mut self, mac: &'ast Macro) {
                for arg in macro_args::parse(mac.tokens.clone()) {
                    if let ArgBody::Expr(expr) = &arg.body {
                        self.visit_expr(expr);
                    }
                }
            }
        }
        let mut collector = Collector(Aliases::default());
        collector.visit_block(block);
        collector.0
    }

    fn add(&mut self, prefix: Vec<String>, tree: &UseTree) {
        let with = |name: String| {
            let mut path = prefix.clone();
            path.push(name);
            path
        };
        match tree {
            UseTree::Path(p) => self.add(with(unraw(&p.ident)), &p.tree),
            UseTree::Name(n) if n.ident == "self" => {
                if let Some(last) = prefix.last() {
                    self.names.insert(last.clone(), prefix.clone());
                }
            }
            UseTree::Name(n) => {
                self.names.insert(unraw(&n.ident), with(unraw(&n.ident)));
            }
            UseTree::Rename(r) if r.rename == "_" => {}
            UseTree::Rename(r) if r.ident == "self" => {
                self.names.insert(unraw(&r.rename), prefix.clone());
            }
            UseTree::Rename(r) => {
                self.names.insert(unraw(&r.rename), with(unraw(&r.ident)));
            }
            UseTree::Glob(_) => self.globs.push(prefix),
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.add(prefix.clone(), tree);
                }
            }
        }
    }

    /// The full paths `segments` may stand for: through an alias declared in the body, or
    /// as written, or under a glob import. Empty for the user's own paths (`crate::`, …).
    fn resolve(&self, segments: &[String], absolute: bool) -> Vec<Vec<String>> {
        let mut path = segments.to_vec();
        if !absolute {
            // Aliases may build on each other (`use std::time; use time::Instant as I;`).
            for _ in 0..4 {
                match path.first().and_then(|first| self.names.get(first)) {
                    Some(target) if target.as_slice() != &path[..1] => {
                        let mut resolved = target.clone();
                        resolved.extend(path[1..].iter().cloned());
                        path = resolved;
                    }
                    _ => break,
                }
            }
        }
        if path
            .first()
            .is_some_and(|first| matches!(first.as_str(), "crate" | "self" | "super" | "Self"))
        {
            return Vec::new();
        }
        let mut candidates = vec![path.clone()];
        if !absolute && path.as_slice() == segments {
            for glob in &self.globs {
                let mut full = glob.clone();
                full.extend(path.iter().cloned());
                candidates.push(full);
            }
        }
        candidates
    }
}

fn unraw(ident: &syn::Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/// What a flagged path does; each has its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clock,
    Random,
    NewId,
    HashSeed,
    Env,
    Process,
    Fs,
    Net,
    Stdin,
    Thread,
    BlockingSleep,
    RuntimeTimer,
    RuntimeTimeout,
    RuntimeInterval,
    Spawn,
    BlockOn,
    Runtime,
    JoinFn,
    SelectFn,
    SelectMacro,
    JoinMacro,
    ThreadLocal,
}

/// What may follow a rule's path.
#[derive(Debug, Clone, Copy)]
enum Tail {
    /// Nothing: the path is exactly the rule's.
    Exact,
    /// Anything or nothing (`OsRng`, `OsRng::default`).
    Prefix,
    /// At least one more segment (`std::fs::read`).
    Any,
    /// At least one more segment, the first of which is not one of these.
    AnyExcept(&'static [&'static str]),
}

/// A nondeterministic API: its full path, and from which segment on a shorter path may
/// start (`anchor`): for `std::time::Instant::now` with anchor 2, `Instant::now`,
/// `time::Instant::now` and the full path match.
struct Rule {
    path: &'static [&'static str],
    anchor: usize,
    tail: Tail,
    kind: Kind,
}

const fn rule(path: &'static [&'static str], anchor: usize, tail: Tail, kind: Kind) -> Rule {
    Rule {
        path,
        anchor,
        tail,
        kind,
    }
}

use Kind::*;
use Tail::*;

/// Functions, types and values an orchestrator must not use.
const PATH_RULES: &[Rule] = &[
    // Rule 1: clocks.
    rule(&["std", "time", "SystemTime", "now"], 2, Exact, Clock),
    rule(&["std", "time", "Instant", "now"], 2, Exact, Clock),
    rule(&["tokio", "time", "Instant", "now"], 2, Exact, Clock),
    rule(&["chrono", "Utc", "now"], 1, Exact, Clock),
    rule(&["chrono", "Utc", "today"], 1, Exact, Clock),
    rule(&["chrono", "offset", "Utc", "now"], 2, Exact, Clock),
    rule(&["chrono", "Local", "now"], 1, Exact, Clock),
    rule(&["chrono", "Local", "today"], 1, Exact, Clock),
    rule(&["chrono", "offset", "Local", "now"], 2, Exact, Clock),
    rule(&["time", "OffsetDateTime", "now_utc"], 1, Exact, Clock),
    rule(&["time", "OffsetDateTime", "now_local"], 1, Exact, Clock),
    rule(&["time", "UtcDateTime", "now"], 1, Exact, Clock),
    rule(&["time", "Instant", "now"], 1, Exact, Clock),
    rule(&["jiff", "Timestamp", "now"], 1, Exact, Clock),
    rule(&["jiff", "Zoned", "now"], 1, Exact, Clock),
    // Rule 1: randomness and ids.
    rule(&["rand", "random"], 0, Exact, Random),
    rule(&["rand", "random_range"], 0, Exact, Random),
    rule(&["rand", "random_bool"], 0, Exact, Random),
    rule(&["rand", "random_ratio"], 0, Exact, Random),
    rule(&["rand", "random_iter"], 0, Exact, Random),
    rule(&["rand", "fill"], 0, Exact, Random),
    rule(&["rand", "thread_rng"], 1, Exact, Random),
    rule(&["rand", "rng"], 1, Exact, Random),
    rule(&["rand", "rngs", "OsRng"], 2, Prefix, Random),
    rule(&["rand", "rngs", "SysRng"], 2, Prefix, Random),
    rule(&["rand", "rngs", "ThreadRng"], 2, Prefix, Random),
    rule(&["rand_core", "OsRng"], 1, Prefix, Random),
    rule(&["getrandom", "getrandom"], 1, Exact, Random),
    rule(&["getrandom", "fill"], 0, Exact, Random),
    rule(&["getrandom", "fill_uninit"], 0, Exact, Random),
    rule(&["getrandom", "u32"], 0, Exact, Random),
    rule(&["getrandom", "u64"], 0, Exact, Random),
    rule(&["fastrand"], 0, Any, Random),
    rule(&["std", "hash", "RandomState", "new"], 2, Exact, HashSeed),
    rule(
        &["std", "collections", "hash_map", "RandomState", "new"],
        3,
        Exact,
        HashSeed,
    ),
    rule(&["uuid", "Uuid", "new_v4"], 1, Exact, NewId),
    rule(&["uuid", "Uuid", "new_v7"], 1, Exact, NewId),
    rule(&["uuid", "Uuid", "now_v1"], 1, Exact, NewId),
    rule(&["uuid", "Uuid", "now_v6"], 1, Exact, NewId),
    rule(&["uuid", "Uuid", "now_v7"], 1, Exact, NewId),
    rule(&["ulid", "Ulid", "new"], 1, Exact, NewId),
    // Rule 1: ambient state.
    rule(&["std", "env"], 1, AnyExcept(&["consts"]), Env),
    rule(&["jiff", "tz", "TimeZone", "system"], 2, Exact, Env),
    rule(&["std", "process"], 1, Any, Process),
    rule(&["tokio", "process"], 1, Any, Process),
    // Rule 2: I/O.
    rule(&["std", "fs"], 1, Any, Fs),
    rule(&["tokio", "fs"], 1, Any, Fs),
    rule(&["std", "io", "stdin"], 1, Exact, Stdin),
    rule(&["tokio", "io", "stdin"], 1, Exact, Stdin),
    rule(&["std", "net", "TcpStream"], 2, Any, Net),
    rule(&["std", "net", "TcpListener"], 2, Any, Net),
    rule(&["std", "net", "UdpSocket"], 2, Any, Net),
    rule(&["tokio", "net"], 1, Any, Net),
    rule(&["tokio", "net", "TcpStream"], 2, Any, Net),
    rule(&["tokio", "net", "TcpListener"], 2, Any, Net),
    rule(&["tokio", "net", "UdpSocket"], 2, Any, Net),
    rule(&["tokio", "net", "UnixStream"], 2, Any, Net),
    rule(&["tokio", "net", "UnixListener"], 2, Any, Net),
    // Rule 2: threads and custom scheduling.
    rule(&["std", "thread", "spawn"], 1, Exact, Thread),
    rule(&["std", "thread", "scope"], 1, Exact, Thread),
    rule(&["std", "thread", "Builder"], 1, Any, Thread),
    rule(&["std", "thread", "yield_now"], 1, Exact, Thread),
    rule(&["std", "thread", "sleep"], 1, Exact, BlockingSleep),
    rule(&["std", "thread", "sleep_ms"], 1, Exact, BlockingSleep),
    rule(&["std", "thread", "sleep_until"], 1, Exact, BlockingSleep),
    rule(&["std", "thread", "park"], 1, Exact, BlockingSleep),
    rule(&["std", "thread", "park_timeout"], 1, Exact, BlockingSleep),
    rule(&["rayon", "spawn"], 0, Exact, Thread),
    rule(&["rayon", "spawn_fifo"], 0, Exact, Thread),
    rule(&["rayon", "scope"], 0, Exact, Thread),
    rule(&["rayon", "join"], 0, Exact, Thread),
    rule(&["tokio", "spawn"], 0, Exact, Spawn),
    rule(&["tokio", "task", "spawn"], 1, Exact, Spawn),
    rule(&["tokio", "task", "spawn_local"], 2, Exact, Spawn),
    rule(&["tokio", "task", "spawn_blocking"], 2, Exact, Spawn),
    rule(&["tokio", "task", "block_in_place"], 2, Exact, Spawn),
    rule(&["tokio", "task", "yield_now"], 1, Exact, Spawn),
    rule(&["tokio", "task", "JoinSet"], 2, Any, Spawn),
    rule(&["tokio", "task", "LocalSet"], 2, Any, Spawn),
    rule(&["tokio", "runtime"], 1, Any, Runtime),
    rule(&["tokio", "time", "sleep"], 1, Exact, RuntimeTimer),
    rule(&["tokio", "time", "sleep_until"], 1, Exact, RuntimeTimer),
    rule(&["tokio", "time", "timeout"], 1, Exact, RuntimeTimeout),
    rule(&["tokio", "time", "timeout_at"], 1, Exact, RuntimeTimeout),
    rule(&["tokio", "time", "interval"], 1, Exact, RuntimeInterval),
    rule(&["tokio", "time", "interval_at"], 1, Exact, RuntimeInterval),
    rule(&["futures", "executor", "block_on"], 2, Exact, BlockOn),
    rule(&["futures_executor", "block_on"], 1, Exact, BlockOn),
    rule(&["futures", "future", "join_all"], 2, Exact, JoinFn),
    rule(&["futures", "future", "try_join_all"], 2, Exact, JoinFn),
    rule(&["futures", "future", "join"], 1, Exact, JoinFn),
    rule(&["futures", "future", "try_join"], 1, Exact, JoinFn),
    rule(&["futures", "future", "join3"], 1, Exact, JoinFn),
    rule(&["futures", "future", "join4"], 1, Exact, JoinFn),
    rule(&["futures", "future", "select"], 1, Exact, SelectFn),
    rule(&["futures", "future", "select_all"], 2, Exact, SelectFn),
    rule(&["futures", "future", "select_ok"], 2, Exact, SelectFn),
    rule(
        &["futures", "stream", "FuturesUnordered"],
        2,
        Prefix,
        SelectFn,
    ),
    rule(&["futures_util", "future", "join_all"], 0, Exact, JoinFn),
    rule(
        &["futures_util", "future", "try_join_all"],
        0,
        Exact,
        JoinFn,
    ),
    rule(&["futures_util", "future", "join"], 0, Exact, JoinFn),
    rule(&["futures_util", "future", "try_join"], 0, Exact, JoinFn),
    rule(&["futures_util", "future", "select"], 0, Exact, SelectFn),
    rule(
        &["futures_util", "future", "select_all"],
        0,
        Exact,
        SelectFn,
    ),
    rule(
        &["futures_util", "stream", "FuturesUnordered"],
        0,
        Prefix,
        SelectFn,
    ),
];

/// `SeedableRng` constructors that seed from the operating system, on any generator type.
const RANDOM_CONSTRUCTORS: &[&str] = &["from_entropy", "from_os_rng", "try_from_os_rng"];

/// Macros an orchestrator must not call.
const MACRO_RULES: &[Rule] = &[
    rule(&["tokio", "select"], 1, Exact, SelectMacro),
    rule(&["futures", "select"], 1, Exact, SelectMacro),
    rule(&["futures", "select_biased"], 1, Exact, SelectMacro),
    rule(&["futures_util", "select"], 0, Exact, SelectMacro),
    rule(&["futures_util", "select_biased"], 0, Exact, SelectMacro),
    rule(&["tokio", "join"], 1, Exact, JoinMacro),
    rule(&["tokio", "try_join"], 1, Exact, JoinMacro),
    rule(&["futures", "join"], 1, Exact, JoinMacro),
    rule(&["futures", "try_join"], 1, Exact, JoinMacro),
    rule(&["futures_util", "join"], 0, Exact, JoinMacro),
    rule(&["futures_util", "try_join"], 0, Exact, JoinMacro),
    rule(&["std", "thread_local"], 1, Exact, ThreadLocal),
    rule(&["tokio", "task_local"], 1, Exact, ThreadLocal),
];

impl Rule {
    fn matches(&self, segments: &[String]) -> bool {
        (0..=self.anchor.min(self.path.len() - 1)).any(|start| {
            let pattern = &self.path[start..];
            if segments.len() < pattern.len() || !pattern.iter().zip(segments).all(|(p, s)| p == s)
            {
                return false;
            }
            let rest = &segments[pattern.len()..];
            match self.tail {
                Exact => rest.is_empty(),
                Prefix => true,
                Any => !rest.is_empty(),
                AnyExcept(except) => rest
                    .first()
                    .is_some_and(|next| !except.contains(&next.as_str())),
            }
        })
    }
}

/// Whether a path is used as an expression or names a macro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Path,
    Macro,
}

/// The rule a path breaks, if any.
fn classify(usage: Use, segments: &[String]) -> Option<Kind> {
    let rules = match usage {
        Use::Path => PATH_RULES,
        Use::Macro => MACRO_RULES,
    };
    if let Some(rule) = rules.iter().find(|rule| rule.matches(segments)) {
        return Some(rule.kind);
    }
    if usage == Use::Path
        && segments.len() >= 2
        && segments
            .last()
            .is_some_and(|last| RANDOM_CONSTRUCTORS.contains(&last.as_str()))
    {
        return Some(Random);
    }
    None
}

const RULE_CLOCKS: &str = "orchestrator rule 1 (no clocks)";
const RULE_RANDOM: &str = "orchestrator rule 1 (no randomness)";
const RULE_AMBIENT: &str = "orchestrator rule 1 (no ambient state)";
const RULE_IO: &str = "orchestrator rule 2 (no I/O)";
const RULE_SCHEDULING: &str = "orchestrator rule 2 (no custom scheduling)";
const RULE_LOOPS: &str = "orchestrator rule 3 (no infinite loops)";

const FIX_ACTIVITY: &str = "do I/O in an activity and await `ctx.call_activity(Handle, input)`: its result is recorded in history and not repeated on replay";
const FIX_PARALLEL: &str = "call activities instead and run them in parallel with `ctx.join_all(futures)` or `ctx.join(a, b)`";
const WHY_REDONE: &str =
    "a replay does it again and can get another result than the run that wrote the history";

/// The message for a path (or macro) of kind `kind`, shown as `shown`.
fn path_message(kind: Kind, shown: &str) -> String {
    match kind {
        Clock => format!(
            "{RULE_CLOCKS}: {shown} reads the system clock: a replay reads another time than the run that wrote the history, so it can take another path; use `ctx.now()`, the time of the current turn as recorded in history (subtract two `ctx.now()` values to measure a duration)"
        ),
        Random => format!(
            "{RULE_RANDOM}: {shown} draws random numbers: a replay draws other numbers than the run that wrote the history, so it can take another path; use `ctx.rng()`, a generator seeded from the instance id that yields the same numbers on every replay"
        ),
        NewId => format!(
            "{RULE_RANDOM}: {shown} makes a new random or time-based id: a replay makes another id than the run that wrote the history; use `ctx.new_uuid()`, which yields the same UUIDs in the same order on every replay"
        ),
        HashSeed => format!(
            "{RULE_RANDOM}: {shown} draws a random hash seed, so the iteration order of the map differs on replay; use a `BTreeMap`/`BTreeSet` (sorted) or an `IndexMap`/`IndexSet` (insertion order)"
        ),
        Env => format!(
            "{RULE_AMBIENT}: {shown} reads the process environment: the process that replays the history can see other values than the one that wrote it; read it in an activity (`ctx.call_activity(..)`), whose result is recorded in history, or pass it in the orchestration's input"
        ),
        Process => format!(
            "{RULE_AMBIENT}: {shown} uses the worker process (its id, its children or its exit), which differs between the process that wrote the history and the one that replays it, and a replay would do it again; do it in an activity (`ctx.call_activity(..)`), and end an orchestration by returning from it"
        ),
        Fs => format!("{RULE_IO}: {shown} does file-system I/O: {WHY_REDONE}; {FIX_ACTIVITY}"),
        Net => format!("{RULE_IO}: {shown} does network I/O: {WHY_REDONE}; {FIX_ACTIVITY}"),
        Stdin => format!("{RULE_IO}: {shown} reads standard input: {WHY_REDONE}; {FIX_ACTIVITY}"),
        Thread => format!(
            "{RULE_SCHEDULING}: {shown} runs code on other threads: that work is not recorded in history and interleaves differently on every replay; {FIX_PARALLEL}"
        ),
        BlockingSleep => format!(
            "{RULE_SCHEDULING}: {shown} blocks the worker thread: the wait is not recorded in history, so it starts over after a restart, and it stalls every instance on this worker; wait with the durable timer `ctx.sleep(duration).await`"
        ),
        RuntimeTimer => format!(
            "{RULE_SCHEDULING}: {shown} is a timer of the async runtime: it is not recorded in history, so the wait starts over after a restart; wait with the durable timer `ctx.sleep(duration).await` or `ctx.timer_at(time).await`"
        ),
        RuntimeTimeout => format!(
            "{RULE_SCHEDULING}: {shown} uses a timer of the async runtime: it is not recorded in history, so a replay can time out differently; race the work against a durable timer with `ctx.select(work, ctx.sleep(duration)).await`"
        ),
        RuntimeInterval => format!(
            "{RULE_SCHEDULING}: {shown} ticks on a timer of the async runtime, which is not recorded in history; wait with the durable timer `ctx.sleep(period).await` in each iteration"
        ),
        Spawn => format!(
            "{RULE_SCHEDULING}: {shown} runs a task outside the orchestration: its work is not recorded in history and finishes in another order on replay; {FIX_PARALLEL}"
        ),
        BlockOn => format!(
            "{RULE_SCHEDULING}: {shown} blocks the worker thread on a future: neither the wait nor its result is recorded in history; await durable operations (`ctx.call_activity(..)`, `ctx.sleep(..)`) directly"
        ),
        Runtime => format!(
            "{RULE_SCHEDULING}: {shown} uses the async runtime directly: work scheduled on it is not recorded in history; {FIX_PARALLEL}"
        ),
        JoinFn | JoinMacro => format!(
            "{RULE_SCHEDULING}: {shown} combines futures outside the orchestration: the combined future is not durable, so its progress is not recorded in history; use `ctx.join_all(futures)` or `ctx.join(a, b)`, which an orchestrator can await"
        ),
        SelectFn | SelectMacro => format!(
            "{RULE_SCHEDULING}: {shown} picks the winner by polling order, not by history: a replay can pick another winner than the run that wrote the history; use `ctx.select(a, b)` or `ctx.when_any(futures)`: the completion recorded first in history wins on every replay"
        ),
        ThreadLocal => format!(
            "{RULE_AMBIENT}: {shown} declares state shared by every instance that runs on the thread: its value depends on what other instances and earlier runs did, not on this instance's history; keep state in local variables of the orchestrator, or pass it in the input"
        ),
    }
}

fn static_mut_message() -> String {
    format!(
        "{RULE_AMBIENT}: `static mut` declares state shared by every instance in the process: its value depends on what other instances and earlier runs did, not on this instance's history; keep state in local variables of the orchestrator, or pass it in the input"
    )
}

fn unsafe_message() -> String {
    format!(
        "{RULE_AMBIENT}: `unsafe` code reaches what the compiler cannot check, such as a `static mut` or memory behind a raw pointer, which every instance in the process can share: what it reads depends on what other instances and earlier runs did, not on this instance's history; keep state in local variables of the orchestrator or pass it in the input, read shared values in an activity (`ctx.call_activity(..)`), and keep state that instances share in an entity (if this code touches no shared state, say why with `#[duractor::allow_nondeterminism(reason = \"..\")]` on its statement)"
    )
}

fn loop_message(what: &str, has_try: bool) -> String {
    let try_note = if has_try {
        " (`?` does not count: a loop that ends only on an error runs forever when all goes well)"
    } else {
        ""
    };
    format!(
        "{RULE_LOOPS}: {what} has no `break` or `return`{try_note}, so it never ends: every iteration adds to the instance's history, which grows without bound and is replayed from the start on every turn; end the turn and start a new execution with `ctx.continue_as_new(input)`, or give the loop a `break`"
    )
}

fn hash_message(kind: HashKind, name: &str) -> String {
    let (ty, fix) = match kind {
        HashKind::Map => (
            "HashMap",
            "a `BTreeMap` (sorted) or an `IndexMap` (insertion order)",
        ),
        HashKind::Set => (
            "HashSet",
            "a `BTreeSet` (sorted) or an `IndexSet` (insertion order)",
        ),
    };
    format!(
        "{RULE_RANDOM}: iterating the `{ty}` `{name}` visits its entries in an order that is random per process (its hasher is seeded randomly): a replay can make its durable calls in another order than the run that wrote the history; use {fix} instead"
    )
}

// ---------------------------------------------------------------------------------------------
// HashMap / HashSet bindings
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashKind {
    Map,
    Set,
}

/// Methods that iterate a map or set.
const ITERATING_METHODS: &[&str] = &[
    "iter",
    "iter_mut",
    "keys",
    "values",
    "values_mut",
    "into_iter",
    "into_keys",
    "into_values",
    "drain",
];

/// Iterator methods whose result does not depend on the order (`map.keys().count()`).
const ORDER_FREE_METHODS: &[&str] = &["count", "min", "max", "any", "all"];

/// Constructors of `HashMap`/`HashSet` with the default (randomly seeded) hasher.
const HASH_CONSTRUCTORS: &[&str] = &["new", "with_capacity", "from", "from_iter", "default"];

/// `(kind, type arguments with the default hasher)` for a type name.
fn hash_type_name(name: &str) -> Option<(HashKind, usize)> {
    match name {
        "HashMap" | "AHashMap" => Some((HashKind::Map, 2)),
        "HashSet" | "AHashSet" => Some((HashKind::Set, 1)),
        _ => None,
    }
}

/// Modules a hash type of the standard library (or a drop-in replacement) is named from.
const HASH_MODULES: &[&str] = &["collections", "hash_map", "hash_set", "hashbrown", "ahash"];

// ---------------------------------------------------------------------------------------------
// The visitor
// ---------------------------------------------------------------------------------------------

struct Linter<'a> {
    aliases: &'a Aliases,
    errors: Errors,
    /// Bindings in scope that are visibly a `HashMap` or `HashSet`.
    hashes: HashMap<String, HashKind>,
    /// Names bound in the body (parameters, `let`s, closure parameters, patterns): a call of
    /// a local closure named `rng` is not a call of `rand::rng`.
    locals: HashSet<String>,
}

impl<'a> Linter<'a> {
    fn new(aliases: &'a Aliases) -> Self {
        Linter {
            aliases,
            errors: Errors::default(),
            hashes: HashMap::new(),
            locals: HashSet::new(),
        }
    }

    /// Lints a function: its parameters (a `HashMap` input is tracked) and its body.
    fn lint_fn(&mut self, sig: &Signature, block: &Block) {
        for input in &sig.inputs {
            if let FnArg::Typed(typed) = input {
                self.forget(&typed.pat);
                if let Pat::Ident(pat) = &*typed.pat
                    && let Some(kind) = self.hash_type(&typed.ty)
                {
                    self.hashes.insert(pat.ident.to_string(), kind);
                }
            }
        }
        self.visit_block(block);
    }

    /// Lints a function declared inside the body (a nested `fn`, or a method of a nested
    /// `impl` or `trait`) like the body: what it does runs when the body calls it. It sees
    /// none of the body's local variables.
    fn lint_nested_fn(&mut self, sig: &Signature, block: &Block) {
        if let Some(unsafety) = &sig.unsafety {
            self.errors.spanned(unsafety, unsafe_message());
        }
        let saved = (
            std::mem::take(&mut self.hashes),
            std::mem::take(&mut self.locals),
        );
        self.lint_fn(sig, block);
        (self.hashes, self.locals) = saved;
    }

    /// Reports a `static mut` declared in the body.
    fn check_static(&mut self, static_token: &syn::Token![static], mutability: &StaticMutability) {
        if !matches!(mutability, StaticMutability::None) {
            self.errors
                .spanned(quote!(#static_token #mutability), static_mut_message());
        }
    }

    /// Reports `path` if it names a nondeterministic API. `call`: it is called (one-segment
    /// paths are matched only then, or when they are capitalized, like `OsRng`).
    fn check_path(
        &mut self,
        usage: Use,
        qself: Option<&QSelf>,
        path: &Path,
        call: bool,
        tokens: &dyn ToTokens,
    ) {
        let Some((written, absolute)) = written_path(qself, path) else {
            return;
        };
        if qself.is_none() && !absolute && written.len() == 1 && self.locals.contains(&written[0]) {
            return;
        }
        for candidate in self.aliases.resolve(&written, absolute) {
            if candidate.len() == 1
                && !call
                && !candidate[0].starts_with(|c: char| c.is_ascii_uppercase())
            {
                continue;
            }
            if let Some(kind) = classify(usage, &candidate) {
                let bang = if usage == Use::Macro { "!" } else { "" };
                let lead = if absolute { "::" } else { "" };
                let mut shown = format!("`{lead}{}{bang}`", written.join("::"));
                if candidate != written {
                    shown.push_str(&format!(" (`{}{bang}`)", candidate.join("::")));
                }
                self.errors.spanned(tokens, path_message(kind, &shown));
                return;
            }
        }
    }

    fn check_allow(&mut self, attr: &syn::Attribute) {
        if let Err(error) = attr::check_allow(attr) {
            self.errors.push(error);
        }
    }

    /// Checks every escape hatch in `attrs`; `true` if there is one (the node is then skipped).
    fn allowed(&mut self, attrs: &[syn::Attribute]) -> bool {
        let mut allowed = false;
        for attr in attrs.iter().filter(|a| attr::is_allow(a)) {
            self.check_allow(attr);
            allowed = true;
        }
        allowed
    }

    /// The kind of a type, if it is visibly a `HashMap`/`HashSet` with the default hasher.
    fn hash_type(&self, ty: &Type) -> Option<HashKind> {
        match ty {
            Type::Reference(r) => self.hash_type(&r.elem),
            Type::Paren(p) => self.hash_type(&p.elem),
            Type::Group(g) => self.hash_type(&g.elem),
            Type::Path(p) if p.qself.is_none() => self.hash_path(&p.path, true),
            _ => None,
        }
    }

    /// The kind of a path naming a hash type: `HashMap`, `std::collections::HashMap<K, V>`,
    /// an alias of one. `last`: the type is the path's last segment (else the one before,
    /// as in `HashMap::new`).
    fn hash_path(&self, path: &Path, last: bool) -> Option<HashKind> {
        let (written, absolute) = written_path(None, path)?;
        let type_at = if last {
            path.segments.len().checked_sub(1)?
        } else {
            path.segments.len().checked_sub(2)?
        };
        // A third (or second, for sets) type argument is a custom hasher: deterministic.
        let type_args = match &path.segments[type_at].arguments {
            PathArguments::AngleBracketed(args) => args
                .args
                .iter()
                .filter(|a| matches!(a, GenericArgument::Type(_)))
                .count(),
            _ => 0,
        };
        let ty_written = &written[..=type_at];
        self.aliases
            .resolve(ty_written, absolute)
            .into_iter()
            .find_map(|resolved| {
                let (kind, default_args) = hash_type_name(resolved.last()?)?;
                let module_ok = resolved.len() == 1
                    || HASH_MODULES.contains(&resolved[resolved.len() - 2].as_str());
                (module_ok && type_args <= default_args).then_some(kind)
            })
    }

    /// The kind of a `let` initializer, if it visibly makes a `HashMap`/`HashSet`.
    fn hash_init(&self, expr: &Expr) -> Option<HashKind> {
        match expr {
            Expr::Paren(e) => self.hash_init(&e.expr),
            Expr::Group(e) => self.hash_init(&e.expr),
            Expr::Reference(e) => self.hash_init(&e.expr),
            Expr::Path(p) if p.qself.is_none() => p
                .path
                .get_ident()
                .and_then(|id| self.hashes.get(&id.to_string()).copied()),
            Expr::Call(call) => match &*call.func {
                Expr::Path(p) if p.qself.is_none() => {
                    let constructor = p.path.segments.last()?.ident.to_string();
                    if !HASH_CONSTRUCTORS.contains(&constructor.as_str()) {
                        return None;
                    }
                    self.hash_path(&p.path, false)
                }
                _ => None,
            },
            Expr::MethodCall(m) if m.method == "collect" => {
                let turbofish = m.turbofish.as_ref()?;
                turbofish.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => self.hash_type(ty),
                    _ => None,
                })
            }
            Expr::MethodCall(m) if m.method == "clone" => {
                self.hash_binding(&m.receiver).map(|(_, k)| k)
            }
            Expr::Macro(m) => match m.mac.path.segments.last()?.ident.to_string().as_str() {
                "hashmap" => Some(HashKind::Map),
                "hashset" => Some(HashKind::Set),
                _ => None,
            },
            _ => None,
        }
    }

    /// `(name, kind)` if `expr` is (a reference to) a binding known to be a hash map or set.
    fn hash_binding(&self, expr: &Expr) -> Option<(String, HashKind)> {
        match expr {
            Expr::Paren(e) => self.hash_binding(&e.expr),
            Expr::Group(e) => self.hash_binding(&e.expr),
            Expr::Reference(e) => self.hash_binding(&e.expr),
            Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => self.hash_binding(&u.expr),
            Expr::Path(p) if p.qself.is_none() => {
                let name = p.path.get_ident()?.to_string();
                let kind = *self.hashes.get(&name)?;
                Some((name, kind))
            }
            _ => None,
        }
    }

    /// `(name, kind)` if the method call iterates a hash map or set.
    fn iterates_hash(&self, call: &ExprMethodCall) -> Option<(String, HashKind)> {
        if !ITERATING_METHODS.contains(&call.method.to_string().as_str()) {
            return None;
        }
        self.hash_binding(&call.receiver)
    }

    /// Records the bindings a `let` makes as locals; hash maps and sets are remembered as
    /// such, and every other name they shadow is forgotten as one.
    fn bind(&mut self, pat: &Pat, init: Option<&Expr>) {
        let (ident, ty) = match pat {
            Pat::Ident(p) if p.subpat.is_none() => (&p.ident, None),
            Pat::Type(t) => match &*t.pat {
                Pat::Ident(p) if p.subpat.is_none() => (&p.ident, Some(&*t.ty)),
                _ => {
                    self.forget(pat);
                    return;
                }
            },
            _ => {
                self.forget(pat);
                return;
            }
        };
        let kind = match ty {
            Some(ty) => self.hash_type(ty),
            None => init.and_then(|init| self.hash_init(init)),
        };
        self.forget(pat);
        if let Some(kind) = kind {
            self.hashes.insert(ident.to_string(), kind);
        }
    }

    /// Records the names `pat` binds as locals, which are not hash maps (they shadow any hash
    /// map of the same name). Capitalized names (`None`, unit structs) are patterns, not locals.
    fn forget(&mut self, pat: &Pat) {
        struct Names<'n> {
            hashes: &'n mut HashMap<String, HashKind>,
            locals: &'n mut HashSet<String>,
        }
        impl<'ast> Visit<'ast> for Names<'_> {
            fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
                let name = p.ident.to_string();
                self.hashes.remove(&name);
                if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    self.locals.insert(name);
                }
                visit::visit_pat_ident(self, p);
            }
        }
        Names {
            hashes: &mut self.hashes,
            locals: &mut self.locals,
        }
        .visit_pat(pat);
    }

    /// Runs `f` with the names `pats` bind in scope, then restores the scope.
    fn scoped<'p>(&mut self, pats: impl IntoIterator<Item = &'p Pat>, f: impl FnOnce(&mut Self)) {
        let saved = (self.hashes.clone(), self.locals.clone());
        for pat in pats {
            self.forget(pat);
        }
        f(self);
        (self.hashes, self.locals) = saved;
    }

    fn check_loop_exits(
        &mut self,
        tokens: &dyn ToTokens,
        what: &str,
        body: &Block,
        label: Option<&Lifetime>,
    ) {
        let mut finder = ExitFinder {
            own: label.map(|l| l.ident.to_string()),
            depth: 0,
            nested_labels: Vec::new(),
            exits: false,
            has_try: false,
        };
        finder.visit_block(body);
        if !finder.exits {
            self.errors
                .spanned(tokens, loop_message(what, finder.has_try));
        }
    }

    /// Scans the tokens of a macro argument that is not an expression for paths and macros.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let punct = |i: usize, c: char| matches!(trees.get(i), Some(TokenTree::Punct(p)) if p.as_char() == c);
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(group) => {
                    self.scan_tokens(group.stream());
                    i += 1;
                }
                TokenTree::Ident(ident) if ident == "unsafe" => {
                    if matches!(trees.get(i + 1), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace)
                    {
                        self.errors.spanned(ident, unsafe_message());
                    }
                    i += 1;
                }
                TokenTree::Ident(_) => {
                    let after_dot = i > 0 && punct(i - 1, '.');
                    let lifetime = i > 0 && punct(i - 1, '\'');
                    let mut end = i + 1;
                    while matches!(trees.get(end), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                        && punct(end + 1, ':')
                        && matches!(trees.get(end + 2), Some(TokenTree::Ident(_)))
                    {
                        end += 3;
                    }
                    let start = if i >= 2
                        && punct(i - 1, ':')
                        && matches!(&trees[i - 2], TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                    {
                        i - 2
                    } else {
                        i
                    };
                    let path_tokens: TokenStream = trees[start..end].iter().cloned().collect();
                    if let (false, false, Ok(path)) = (
                        after_dot,
                        lifetime,
                        syn::parse2::<Path>(path_tokens.clone()),
                    ) {
                        if let (Some(TokenTree::Punct(bang)), Some(TokenTree::Group(group))) =
                            (trees.get(end), trees.get(end + 1))
                            && bang.as_char() == '!'
                        {
                            let mac = Macro {
                                path,
                                bang_token: syn::Token![!](bang.span()),
                                delimiter: match group.delimiter() {
                                    Delimiter::Brace => {
                                        syn::MacroDelimiter::Brace(Default::default())
                                    }
                                    Delimiter::Bracket => {
                                        syn::MacroDelimiter::Bracket(Default::default())
                                    }
                                    _ => syn::MacroDelimiter::Paren(Default::default()),
                                },
                                tokens: group.stream(),
                            };
                            self.lint_macro(&mac, &path_tokens);
                            i = end + 2;
                            continue;
                        }
                        let call = macro_args::is_paren_group(trees.get(end));
                        self.check_path(Use::Path, None, &path, call, &path_tokens);
                    }
                    i = end;
                }
                _ => i += 1,
            }
        }
    }

    /// Checks a macro call: the macro itself, then its arguments.
    fn lint_macro(&mut self, mac: &Macro, path_tokens: &dyn ToTokens) {
        let before = self.errors.len();
        let bang = &mac.bang_token;
        let shown = quote!(#path_tokens #bang);
        self.check_path(Use::Macro, None, &mac.path, true, &shown);
        if self.errors.len() > before {
            // Rejected as a whole: its arguments would only add follow-on errors.
            return;
        }
        for arg in macro_args::parse(mac.tokens.clone()) {
            match &arg.body {
                ArgBody::Expr(expr) => self.visit_expr(expr),
                ArgBody::Tokens(tokens) => self.scan_tokens(tokens.clone()),
            }
        }
    }
}

/// The segments of a path as written (generic arguments dropped) and whether it starts
/// with `::`. `<T>::f` counts as `T::f`, `<T as Trait>::f` as `Trait::f`.
fn written_path(qself: Option<&QSelf>, path: &Path) -> Option<(Vec<String>, bool)> {
    let mut segments = Vec::new();
    let mut absolute = path.leading_colon.is_some();
    if let Some(qself) = qself
        && qself.position == 0
    {
        let Type::Path(ty) = &*qself.ty else {
            return None;
        };
        if ty.qself.is_some() {
            return None;
        }
        absolute = ty.path.leading_colon.is_some();
        segments.extend(ty.path.segments.iter().map(|s| unraw(&s.ident)));
    }
    segments.extend(path.segments.iter().map(|s| unraw(&s.ident)));
    (!segments.is_empty()).then_some((segments, absolute))
}

/// `true` for `true`, `(true)`.
fn is_literal_true(expr: &Expr) -> bool {
    match expr {
        Expr::Lit(lit) => matches!(&lit.lit, syn::Lit::Bool(b) if b.value),
        Expr::Paren(p) => is_literal_true(&p.expr),
        Expr::Group(g) => is_literal_true(&g.expr),
        _ => false,
    }
}

/// `true` for an endless range `n..`, `(n..)`.
fn is_endless_range(expr: &Expr) -> bool {
    match expr {
        Expr::Range(r) => r.end.is_none() && matches!(r.limits, RangeLimits::HalfOpen(_)),
        Expr::Paren(p) => is_endless_range(&p.expr),
        Expr::Group(g) => is_endless_range(&g.expr),
        _ => false,
    }
}

impl<'ast> Visit<'ast> for Linter<'_> {
    fn visit_block(&mut self, block: &'ast Block) {
        let saved = (self.hashes.clone(), self.locals.clone());
        visit::visit_block(self, block);
        (self.hashes, self.locals) = saved;
    }

    fn visit_stmt(&mut self, stmt: &'ast Stmt) {
        if self.allowed(attr::stmt_attrs(stmt)) {
            // The escape hatch: the statement is not linted (its `.await`s are still checked).
            if let Stmt::Local(local) = stmt {
                self.bind(&local.pat, local.init.as_ref().map(|i| &*i.expr));
            }
            return;
        }
        visit::visit_stmt(self, stmt);
    }

    fn visit_local(&mut self, local: &'ast Local) {
        if let Some(init) = &local.init {
            self.visit_expr(&init.expr);
            if let Some((_, diverge)) = &init.diverge {
                self.visit_expr(diverge);
            }
        }
        self.bind(&local.pat, local.init.as_ref().map(|i| &*i.expr));
    }

    fn visit_item(&mut self, item: &'ast Item) {
        // Nested items are linted like the body: the body calls them, so what they do runs in
        // the orchestration. Not those another duractor macro expands: orchestrators and
        // helpers lint themselves, and activities and entities may do I/O.
        if attr::has_item_macro(attr::item_attrs(item)) {
            return;
        }
        match item {
            Item::Static(s) => {
                self.check_static(&s.static_token, &s.mutability);
                self.visit_expr(&s.expr);
            }
            Item::Macro(m) if m.ident.is_none() => {
                let path = &m.mac.path;
                self.lint_macro(&m.mac, path);
            }
            // `macro_rules!`: its body is patterns and templates, not code.
            Item::Macro(_) => {}
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.lint_nested_fn(&item.sig, &item.block);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !attr::has_item_macro(&item.attrs) {
            self.lint_nested_fn(&item.sig, &item.block);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.lint_nested_fn(&item.sig, block);
        }
    }

    fn visit_foreign_item_static(&mut self, item: &'ast syn::ForeignItemStatic) {
        self.check_static(&item.static_token, &item.mutability);
    }

    fn visit_expr_unsafe(&mut self, expr: &'ast syn::ExprUnsafe) {
        self.errors.spanned(expr.unsafe_token, unsafe_message());
        visit::visit_expr_unsafe(self, expr);
    }

    fn visit_expr(&mut self, expr: &'ast Expr) {
        if self.allowed(attr::expr_attrs(expr)) {
            return;
        }
        visit::visit_expr(self, expr);
    }

    fn visit_arm(&mut self, arm: &'ast Arm) {
        if self.allowed(&arm.attrs) {
            return;
        }
        self.scoped([&arm.pat], |this| {
            if let Some((_, guard)) = &arm.guard {
                this.visit_expr(guard);
            }
            this.visit_expr(&arm.body);
        });
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        match &*call.func {
            Expr::Path(p) if p.attrs.is_empty() => {
                self.check_path(Use::Path, p.qself.as_ref(), &p.path, true, p);
            }
            func => self.visit_expr(func),
        }
        for arg in &call.args {
            self.visit_expr(arg);
        }
    }

    fn visit_expr_path(&mut self, path: &'ast ExprPath) {
        self.check_path(Use::Path, path.qself.as_ref(), &path.path, false, path);
    }

    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        // `map.keys().count()`: the order does not matter.
        if ORDER_FREE_METHODS.contains(&call.method.to_string().as_str())
            && let Expr::MethodCall(inner) = &*call.receiver
            && self.iterates_hash(inner).is_some()
        {
            self.visit_expr(&inner.receiver);
            for arg in inner.args.iter().chain(&call.args) {
                self.visit_expr(arg);
            }
            return;
        }
        if let Some((name, kind)) = self.iterates_hash(call) {
            self.errors.spanned(&call.method, hash_message(kind, &name));
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_for_loop(&mut self, for_loop: &'ast ExprForLoop) {
        if let Some((name, kind)) = self.hash_binding(&for_loop.expr) {
            self.errors
                .spanned(&for_loop.expr, hash_message(kind, &name));
        }
        if is_endless_range(&for_loop.expr) {
            let for_token = &for_loop.for_token;
            let range = &for_loop.expr;
            self.check_loop_exits(
                &quote!(#for_token #range),
                "this `for` loop over an endless range",
                &for_loop.body,
                for_loop.label.as_ref().map(|l| &l.name),
            );
        }
        self.visit_expr(&for_loop.expr);
        self.scoped([&*for_loop.pat], |this| this.visit_block(&for_loop.body));
    }

    fn visit_expr_loop(&mut self, expr: &'ast ExprLoop) {
        self.check_loop_exits(
            &expr.loop_token,
            "this `loop`",
            &expr.body,
            expr.label.as_ref().map(|l| &l.name),
        );
        visit::visit_expr_loop(self, expr);
    }

    fn visit_expr_while(&mut self, expr: &'ast ExprWhile) {
        if is_literal_true(&expr.cond) {
            let while_token = &expr.while_token;
            let cond = &expr.cond;
            self.check_loop_exits(
                &quote!(#while_token #cond),
                "this `while true` loop",
                &expr.body,
                expr.label.as_ref().map(|l| &l.name),
            );
        }
        self.visit_expr(&expr.cond);
        let bound = let_patterns(&expr.cond);
        self.scoped(bound, |this| this.visit_block(&expr.body));
    }

    fn visit_expr_if(&mut self, expr: &'ast ExprIf) {
        self.visit_expr(&expr.cond);
        let bound = let_patterns(&expr.cond);
        self.scoped(bound, |this| this.visit_block(&expr.then_branch));
        if let Some((_, else_branch)) = &expr.else_branch {
            self.visit_expr(else_branch);
        }
    }

    fn visit_expr_closure(&mut self, closure: &'ast ExprClosure) {
        self.scoped(closure.inputs.iter(), |this| this.visit_expr(&closure.body));
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.lint_macro(mac, &mac.path);
    }
}

/// The patterns of the `let`s in an `if`/`while` condition (`if let Some(x) = ..`).
fn let_patterns(cond: &Expr) -> Vec<&Pat> {
    match cond {
        Expr::Let(l) => vec![&*l.pat],
        Expr::Binary(b) => {
            let mut pats = let_patterns(&b.left);
            pats.extend(let_patterns(&b.right));
            pats
        }
        Expr::Paren(p) => let_patterns(&p.expr),
        _ => Vec::new(),
    }
}

/// Looks for a way out of a loop body: a `break` or `continue 'outer` that leaves it, or a
/// `return`. Nested closures, `async` blocks and items are not part of the loop's control flow.
struct ExitFinder {
    own: Option<String>,
    depth: usize,
    nested_labels: Vec<String>,
    exits: bool,
    has_try: bool,
}

impl ExitFinder {
    fn nested<F: FnOnce(&mut Self)>(&mut self, label: Option<&syn::Label>, loops: bool, f: F) {
        if let Some(label) = label {
            self.nested_labels.push(label.name.ident.to_string());
        }
        if loops {
            self.depth += 1;
        }
        f(self);
        if loops {
            self.depth -= 1;
        }
        if label.is_some() {
            self.nested_labels.pop();
        }
    }

    fn leaves(&self, label: &Lifetime) -> bool {
        !self.nested_labels.contains(&label.ident.to_string())
    }
}

impl<'ast> Visit<'ast> for ExitFinder {
    fn visit_expr_break(&mut self, expr: &'ast syn::ExprBreak) {
        match &expr.label {
            None if self.depth == 0 => self.exits = true,
            Some(label) if self.leaves(label) => self.exits = true,
            _ => {}
        }
        visit::visit_expr_break(self, expr);
    }

    fn visit_expr_continue(&mut self, expr: &'ast syn::ExprContinue) {
        if let Some(label) = &expr.label
            && self.leaves(label)
            && self.own.as_deref() != Some(label.ident.to_string().as_str())
        {
            self.exits = true;
        }
    }

    fn visit_expr_return(&mut self, _: &'ast syn::ExprReturn) {
        self.exits = true;
    }

    fn visit_expr_try(&mut self, expr: &'ast syn::ExprTry) {
        self.has_try = true;
        visit::visit_expr_try(self, expr);
    }

    fn visit_expr_loop(&mut self, expr: &'ast ExprLoop) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_loop(this, expr)
        });
    }

    fn visit_expr_while(&mut self, expr: &'ast ExprWhile) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_while(this, expr)
        });
    }

    fn visit_expr_for_loop(&mut self, expr: &'ast ExprForLoop) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_for_loop(this, expr)
        });
    }

    fn visit_expr_block(&mut self, expr: &'ast syn::ExprBlock) {
        self.nested(expr.label.as_ref(), false, |this| {
            visit::visit_expr_block(this, expr)
        });
    }

    fn visit_expr_closure(&mut self, _: &'ast ExprClosure) {}

    fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}

    fn visit_item(&mut self, _: &'ast Item) {}

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // `return`/`break` in a macro's arguments (or `?` in them) count as written.
        fn scan(tokens: TokenStream, finder: &mut ExitFinder) {
            for tree in tokens {
                match tree {
                    TokenTree::Ident(ident) if ident == "return" || ident == "break" => {
                        finder.exits = true;
                    }
                    TokenTree::Punct(p) if p.as_char() == '?' => finder.has_try = true,
                    TokenTree::Group(group) => scan(group.stream(), finder),
                    _ => {}
                }
            }
        }
        scan(mac.tokens.clone(), self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn errors(block: Block) -> Vec<String> {
        let sig: Signature =
            parse_quote!(async fn f(ctx: OrchestrationContext, input: ()) -> Result<(), Error>);
        match check(&sig, &block) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn count(block: Block) -> usize {
        errors(block).len()
    }

    fn segments(path: &str) -> Vec<String> {
        path.split("::").map(str::to_owned).collect()
    }

    #[test]
    fn rules_match_full_paths_and_their_endings() {
        let clock = |p: &str| classify(Use::Path, &segments(p));
        assert_eq!(clock("std::time::Instant::now"), Some(Clock));
        assert_eq!(clock("time::Instant::now"), Some(Clock));
        assert_eq!(clock("Instant::now"), Some(Clock));
        assert_eq!(clock("clock::Instant::now"), None);
        assert_eq!(clock("Instant::elapsed"), None);
        assert_eq!(clock("rand::random"), Some(Random));
        assert_eq!(clock("random"), None);
        assert_eq!(clock("thread_rng"), Some(Random));
        assert_eq!(clock("StdRng::from_entropy"), Some(Random));
        assert_eq!(clock("std::env::var"), Some(Env));
        assert_eq!(clock("env::var"), Some(Env));
        assert_eq!(clock("std::env::consts::OS"), None);
        assert_eq!(clock("fs::read_to_string"), Some(Fs));
        assert_eq!(clock("File::open"), None);
        assert_eq!(clock("tokio::fs::read"), Some(Fs));
        assert_eq!(clock("my::fs::read"), None);
        assert_eq!(clock("std::net::IpAddr::from"), None);
        assert_eq!(clock("TcpStream::connect"), Some(Net));
        assert_eq!(clock("spawn_blocking"), Some(Spawn));
        assert_eq!(clock("spawn"), None);
        assert_eq!(clock("OsRng"), Some(Random));
        assert_eq!(clock("Uuid::new_v4"), Some(NewId));
        assert_eq!(clock("Uuid::new_v5"), None);
        assert_eq!(classify(Use::Macro, &segments("select")), Some(SelectMacro));
        assert_eq!(
            classify(Use::Macro, &segments("tokio::join")),
            Some(JoinMacro)
        );
        assert_eq!(classify(Use::Macro, &segments("format")), None);
    }

    #[test]
    fn aliases_declared_in_the_body_are_resolved() {
        assert_eq!(
            count(parse_quote!({
                use std::time::Instant as Clock;
                Clock::now();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                use std::{env, time};
                env::var("A");
                time::SystemTime::now();
            })),
            2
        );
        assert_eq!(
            count(parse_quote!({
                use crate::clock::Instant;
                Instant::now();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                use std::thread::*;
                sleep(d);
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                use std::time;
                use time::Instant as I;
                I::now();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                ::std::time::SystemTime::now();
            })),
            1
        );
    }

    #[test]
    fn local_names_shadow_bare_functions() {
        assert_eq!(
            count(parse_quote!({
                rng();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                let rng = || 4;
                rng();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                {
                    let rng = || 4;
                }
                rng();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                xs.iter().map(|thread_rng| thread_rng());
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::new();
                let m = m.clone();
                m.iter();
            })),
            1
        );
    }

    #[test]
    fn method_calls_and_locals_are_not_paths() {
        assert_eq!(
            count(parse_quote!({
                ctx.now();
                clock.now();
                let rng = ctx.rng();
                rng;
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let f = Utc::now;
                f();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                x.unwrap_or_else(Utc::now);
            })),
            1
        );
    }

    #[test]
    fn loops_need_an_exit_of_their_own() {
        assert_eq!(
            count(parse_quote!({
                loop {
                    step();
                }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                loop {
                    if done() {
                        break;
                    }
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                loop {
                    return;
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                loop {
                    for x in xs {
                        break;
                    }
                }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                'outer: loop {
                    loop {
                        break 'outer;
                    }
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                loop {
                    let f = || {
                        return 1;
                    };
                }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                loop {
                    x?;
                }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                while true {
                    x();
                }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                while n > 0 {
                    n -= 1;
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                for i in 0.. {
                    if i > 3 {
                        break;
                    }
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                for i in 0.. {
                    f(i);
                }
            })),
            1
        );
        let message = &errors(parse_quote!({
            loop {
                x?;
            }
        }))[0];
        assert!(message.contains("`?` does not count"), "{message}");
    }

    #[test]
    fn hash_maps_are_tracked_through_bindings() {
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::new();
                for x in &m {}
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                let m: HashSet<u8> = x;
                m.iter();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::<u8, u8>::with_capacity(1);
                m.keys().count();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m: HashMap<u8, u8, Fx> = x;
                m.iter();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::new();
                m.get(&1);
                m.insert(1, 2);
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::new();
                let m: Vec<u8> = vec![];
                m.iter();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = HashMap::new();
                for m in vs {
                    m.iter();
                }
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = BTreeMap::new();
                m.iter();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                let m = xs.collect::<HashMap<_, _>>();
                m.values();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                {
                    let m = HashMap::new();
                }
                m.iter();
            })),
            0
        );
    }

    #[test]
    fn macro_arguments_are_linted() {
        assert_eq!(
            count(parse_quote!({
                println!("{:?}", Instant::now());
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                tracing::info!(at = ?Utc::now(), "x");
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                json!({ "at": Utc::now() });
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                tokio::select! { _ = a => {} }
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                format!("{}", ctx.now());
            })),
            0
        );
    }

    #[test]
    fn unsafe_is_rejected() {
        assert_eq!(
            count(parse_quote!({
                let runs = unsafe { RUNS };
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                println!("{}", unsafe { RUNS });
                my_dsl!(key => unsafe { RUNS });
            })),
            2
        );
        assert_eq!(
            count(parse_quote!({
                unsafe fn bump() {}
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                #[duractor::allow_nondeterminism(reason = "reads no shared state")]
                let text = unsafe { std::str::from_utf8_unchecked(bytes) };
                unsafe impl Send for Wrapper {}
            })),
            0
        );
    }

    #[test]
    fn nested_items_are_linted_like_the_body() {
        assert_eq!(
            count(parse_quote!({
                fn started() -> Instant {
                    Instant::now()
                }
                impl Sampler {
                    fn draw(&self) -> u8 {
                        rand::random()
                    }
                }
                trait Load {
                    fn load() -> Vec<u8> {
                        std::fs::read("x").unwrap()
                    }
                }
                mod inner {
                    fn roll() -> u8 {
                        thread_rng().next()
                    }
                }
                static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);
                extern "C" {
                    static mut ERRNO: i32;
                }
            })),
            6
        );
        assert_eq!(
            count(parse_quote!({
                #[activity]
                async fn read(_ctx: ActivityContext, path: String) -> Result<Vec<u8>, Error> {
                    Ok(std::fs::read(path)?)
                }
                #[duractor::orchestration_helper]
                async fn helper() {
                    Instant::now();
                }
                #[duractor::allow_nondeterminism(reason = "logs only")]
                fn started() -> Instant {
                    Instant::now()
                }
                macro_rules! now {
                    () => {
                        Instant::now()
                    };
                }
            })),
            0
        );
        // A nested function sees none of the body's locals: `rng()` there is `rand::rng`.
        assert_eq!(
            count(parse_quote!({
                let rng = || 4;
                fn roll() -> u8 {
                    rng()
                }
            })),
            1
        );
        // `use` in a nested function is resolved.
        assert_eq!(
            count(parse_quote!({
                fn nap() {
                    use std::thread::sleep;
                    sleep(d);
                }
            })),
            1
        );
    }

    #[test]
    fn the_escape_hatch_needs_a_reason() {
        assert_eq!(
            count(parse_quote!({
                #[duractor::allow_nondeterminism(reason = "logs only")]
                let t = Instant::now();
            })),
            0
        );
        assert_eq!(
            count(parse_quote!({
                #[allow_nondeterminism]
                let t = Instant::now();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                #[allow_nondeterminism(reason = " ")]
                x = Instant::now();
            })),
            1
        );
        assert_eq!(
            count(parse_quote!({
                #[allow_nondeterminism(reason = "ok")]
                x = Instant::now();
            })),
            0
        );
    }
}
