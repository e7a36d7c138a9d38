//! The table of nondeterministic APIs an orchestrator must not use (rules 1 and 2: clocks,
//! randomness, ambient state, I/O, custom scheduling), how a path is matched against it, and
//! the message of each kind of offence.

/// What a flagged path does; each has its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum Use {
    Path,
    Macro,
}

/// The rule a path breaks, if any.
pub(super) fn classify(usage: Use, segments: &[String]) -> Option<Kind> {
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
pub(super) const RULE_RANDOM: &str = "orchestrator rule 1 (no randomness)";
const RULE_AMBIENT: &str = "orchestrator rule 1 (no ambient state)";
const RULE_IO: &str = "orchestrator rule 2 (no I/O)";
const RULE_SCHEDULING: &str = "orchestrator rule 2 (no custom scheduling)";
pub(super) const RULE_LOOPS: &str = "orchestrator rule 3 (no infinite loops)";

const FIX_ACTIVITY: &str = "do I/O in an activity and await `ctx.call_activity(Handle, input)`: its result is recorded in history and not repeated on replay";
const FIX_PARALLEL: &str = "call activities instead and run them in parallel with `ctx.join_all(futures)` or `ctx.join(a, b)`";
const WHY_REDONE: &str =
    "a replay does it again and can get another result than the run that wrote the history";

/// The message for a path (or macro) of kind `kind`, shown as `shown`.
pub(super) fn path_message(kind: Kind, shown: &str) -> String {
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

pub(super) fn static_mut_message() -> String {
    format!(
        "{RULE_AMBIENT}: `static mut` declares state shared by every instance in the process: its value depends on what other instances and earlier runs did, not on this instance's history; keep state in local variables of the orchestrator, or pass it in the input"
    )
}

pub(super) fn unsafe_message() -> String {
    format!(
        "{RULE_AMBIENT}: `unsafe` code reaches what the compiler cannot check, such as a `static mut` or memory behind a raw pointer, which every instance in the process can share: what it reads depends on what other instances and earlier runs did, not on this instance's history; keep state in local variables of the orchestrator or pass it in the input, read shared values in an activity (`ctx.call_activity(..)`), and keep state that instances share in an entity (if this code touches no shared state, say why with `#[duractor::allow_nondeterminism(reason = \"..\")]` on its statement)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
