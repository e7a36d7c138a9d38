//! The writer loop both backends run: take the ops waiting, [`commit`] them in one
//! transaction through the backend's [`BatchExecutor`], retrying what may pass and settling
//! commits whose answer was lost (the commit fences, numbered by [`Attempts`]), then answer
//! every op and tell the store's listeners.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use duractor::Error;
use duractor::store::{InstanceStatus, StoreEvents};
use tokio::sync::mpsc;

use super::guarded;
use super::ops::Op;
use super::plan::Effects;
use crate::error::StoreError;

/// Why an attempt at a batch failed, and whether its commit may have happened anyway.
pub(crate) struct AttemptError {
    pub(crate) error: sqlx::Error,
    /// Set when the error came while the commit was on its way (the `COMMIT`, or a statement
    /// that commits on its own): the attempt's number and the notifications it would send
    /// (the ops hold the outcomes it prepared). The answer may have been lost after the
    /// database committed.
    pub(crate) in_commit: Option<(i64, Effects)>,
}

impl From<sqlx::Error> for AttemptError {
    /// An error before the commit: the database rolls the transaction back.
    fn from(error: sqlx::Error) -> Self {
        AttemptError {
            error,
            in_commit: None,
        }
    }
}

/// One backend's way of running a batch of ops in one transaction.
///
/// **Commit fences.** Every transaction a writer runs records its attempt number in the
/// writer's row of the `writers` table (`writer`, `batch`), in its first statement. When an
/// attempt fails while its commit is on its way, the commit may have happened with the answer
/// lost (a connection cut after the server ran `COMMIT`): [`committed`](Self::committed)
/// reads the row — waiting for any transaction that still holds it — and the batch is either
/// answered as committed or run again, never both and never neither.
#[async_trait::async_trait]
pub(crate) trait BatchExecutor: Send + 'static {
    /// A name for logs and errors ("SQLite", "PostgreSQL").
    const DATABASE: &'static str;

    /// How long the writer loop keeps its thread looking for the next op before it parks
    /// (a parked thread is woken by the kernel when an op comes). The spin holds the
    /// thread's runtime: its other tasks run when the writer waits, and at least every
    /// [`RUNTIME_TURN`]. Zero for a runtime whose other work cannot wait that long
    /// (PostgreSQL's: the listener, the sockets of reads).
    const IDLE_SPIN: Duration = Duration::ZERO;

    /// Whether claims that come with a batch small enough for the one-statement path
    /// ([`guarded::assume`]) are committed apart from it, after it: for a backend whose
    /// claims are statements of their own anyway (PostgreSQL's claim-only batches), where a
    /// claim in the batch would make its turns take the ordinary path of several round trips.
    const CLAIMS_APART: bool = false;

    /// How long the writer waits for an op before it does its upkeep ([`idle`](Self::idle)),
    /// and again after each upkeep while none comes; `None`: no upkeep.
    const IDLE_UPKEEP_EVERY: Option<Duration> = None;

    /// Upkeep while no op comes (keeping a connection, and what is prepared on it, alive).
    async fn idle(&mut self) {}

    /// One attempt at the batch inside one transaction, committed when it returns `Ok`:
    /// prepares every op's outcome in its [`Reply`](super::ops::Reply) and returns the
    /// notifications to send.
    async fn execute(&mut self, ops: &mut [Op]) -> Result<Effects, AttemptError>;

    /// The rows of `instance_ids`, which the batch just committed finished and someone in
    /// this process waits for, read to be handed to their waiters
    /// ([`StoreEvents::notify_finished_with`]), who then need not read them: for a backend
    /// whose read here costs less than each waiter's own (SQLite: on the writer's connection,
    /// no pool, no thread hop). None by default; a read that fails hands none over.
    async fn read_finished(&mut self, _instance_ids: &[String]) -> Vec<InstanceStatus> {
        Vec::new()
    }

    /// Ends a failed attempt (rolls back whatever is open).
    async fn abort(&mut self);

    /// Whether attempt `attempt` committed, once no transaction can still be deciding it.
    async fn committed(&mut self, attempt: i64) -> Result<bool, sqlx::Error>;

    /// Whether `error`, met while a commit was on its way, leaves its outcome unknown (the
    /// connection failed) rather than saying it failed (the database answered).
    fn outcome_unknown(error: &sqlx::Error) -> bool;

    /// Whether running the batch again later may succeed (the driver's classification).
    fn is_transient(error: &sqlx::Error) -> bool;
}

/// Runs the writer loop until every sender is dropped: takes the ops waiting (up to
/// `max_batch`), commits them together, replies, and tells `events`.
pub(crate) async fn run_writer<B: BatchExecutor>(
    mut executor: B,
    mut rx: mpsc::UnboundedReceiver<Op>,
    events: Arc<StoreEvents>,
    max_batch: usize,
) {
    let mut batch = Vec::new();
    let mut turn_given = std::time::Instant::now();
    loop {
        let next = match B::IDLE_UPKEEP_EVERY {
            Some(every) => {
                match tokio::time::timeout(every, next_op(&mut rx, B::IDLE_SPIN)).await {
                    Ok(next) => next,
                    Err(_) => {
                        executor.idle().await;
                        continue;
                    }
                }
            }
            None => next_op(&mut rx, B::IDLE_SPIN).await,
        };
        let Some(op) = next else {
            break;
        };
        batch.push(op);
        while batch.len() < max_batch.max(1) {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        while let Some(rest) = split_before_recreate(&mut batch) {
            commit_and_reply(&mut executor, std::mem::take(&mut batch), &events).await;
            batch = rest;
        }
        if B::CLAIMS_APART
            && let Some(claims) = claims_apart(&mut batch)
        {
            commit_and_reply(&mut executor, std::mem::take(&mut batch), &events).await;
            batch = claims;
        }
        commit_and_reply(&mut executor, std::mem::take(&mut batch), &events).await;
        // A writer whose ops and answers keep coming within its spins never waits, and its
        // runtime's other tasks (SQLite's WAL checkpointer) would never run.
        if !B::IDLE_SPIN.is_zero() && turn_given.elapsed() >= RUNTIME_TURN {
            tokio::task::yield_now().await;
            turn_given = std::time::Instant::now();
        }
    }
}

/// Commits `batch` ([`commit`]), reads the finished instances someone waits for if the
/// backend reads them cheaply ([`BatchExecutor::read_finished`]), and answers every op.
async fn commit_and_reply<B: BatchExecutor>(
    executor: &mut B,
    mut batch: Vec<Op>,
    events: &StoreEvents,
) {
    let mut result = commit(executor, &mut batch).await;
    if let Ok(effects) = &mut result {
        let read: HashSet<&str> = effects
            .statuses
            .iter()
            .map(|status| status.instance_id.as_str())
            .collect();
        let unread: Vec<String> = effects
            .finished
            .iter()
            .filter(|id| !read.contains(id.as_str()) && events.is_watched(id))
            .cloned()
            .collect();
        if !unread.is_empty() {
            effects
                .statuses
                .extend(executor.read_finished(&unread).await);
        }
    }
    reply(batch, result, events);
}

/// Splits `batch` before its first op that creates an instance (a start, a turn creating its
/// own instance or sub-orchestrations) a turn earlier in the batch committed to, and returns
/// that op and the rest; `None` if there is none. Such a create replaces the run the turn
/// finished, and both backends write a batch's new instances before its turns' writes: in
/// one transaction the old run's last turn would land on the new run's row (its status,
/// output and history) — so the old run's batch commits first.
pub(super) fn split_before_recreate(batch: &mut Vec<Op>) -> Option<Vec<Op>> {
    let creates = |op: &Op| match op {
        Op::Create { .. } => true,
        Op::Turn { turn, .. } => turn.create.is_some() || !turn.new_instances.is_empty(),
        _ => false,
    };
    // Most batches create nothing: they are not looked through.
    if batch.len() < 2 || !batch.iter().any(creates) {
        return None;
    }
    let at = {
        let mut turned: HashSet<&str> = HashSet::new();
        batch.iter().position(|op| {
            let recreates = match op {
                Op::Create { instance, .. } => turned.contains(instance.instance_id.as_str()),
                Op::Turn { turn, .. } => turn
                    .create
                    .iter()
                    .chain(&turn.new_instances)
                    .any(|new| turned.contains(new.instance_id.as_str())),
                _ => false,
            };
            if let Op::Turn { turn, .. } = op {
                turned.insert(turn.instance_id.as_str());
            }
            recreates
        })?
    };
    Some(batch.split_off(at))
}

/// Takes the claims (and admissions, [`Op::commits_apart`]) out of `batch` when the rest of
/// it qualifies for the one-statement path ([`guarded::assume`]) with them out and not with
/// them in; `None` otherwise (`batch` then has them last, where the ordinary path runs them
/// anyway). They change nothing another op reads, so they may commit apart.
pub(super) fn claims_apart(batch: &mut Vec<Op>) -> Option<Vec<Op>> {
    if batch.iter().all(Op::commits_apart) || !batch.iter().any(Op::commits_apart) {
        return None;
    }
    let (claims, rest): (Vec<Op>, Vec<Op>) = std::mem::take(batch)
        .into_iter()
        .partition(Op::commits_apart);
    if guarded::assume(&rest).is_none() {
        *batch = rest;
        batch.extend(claims);
        return None;
    }
    *batch = rest;
    Some(claims)
}

/// How often a spinning writer lets its runtime run its other tasks.
const RUNTIME_TURN: Duration = Duration::from_millis(5);

/// The next op: looked for on this thread ([`spin_until`]) for up to `spin`, then waited for.
async fn next_op(rx: &mut mpsc::UnboundedReceiver<Op>, spin: Duration) -> Option<Op> {
    let found = spin_until(spin, || match rx.try_recv() {
        Ok(op) => Some(Some(op)),
        Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
        Err(mpsc::error::TryRecvError::Empty) => None,
    });
    match found {
        Some(op) => op,
        None => rx.recv().await,
    }
}

/// Calls `attempt` until it gives a value or `budget` has passed, yielding the CPU to other
/// threads between calls (this thread's runtime does not run meanwhile): how a writer waits
/// for what is moments away without parking its thread.
pub(super) fn spin_until<T>(budget: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(found) = attempt() {
            return Some(found);
        }
        if started.elapsed() >= budget {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Commits a batch, retrying transient failures (a busy database, a dropped connection). A
/// failure while the commit was on its way is settled first: if the attempt committed, that
/// is the result; only if it did not is the batch run again.
pub(crate) async fn commit<B: BatchExecutor>(
    executor: &mut B,
    ops: &mut [Op],
) -> Result<Effects, Error> {
    let mut failures = 0u32;
    loop {
        let AttemptError { error, in_commit } = match executor.execute(ops).await {
            Ok(effects) => return Ok(effects),
            Err(failed) => failed,
        };
        executor.abort().await;
        if let Some((attempt, effects)) = in_commit
            && B::outcome_unknown(&error)
        {
            tracing::warn!(%error, attempt, database = B::DATABASE, "the answer to a commit was lost; finding out whether it happened");
            if settle(executor, attempt).await {
                tracing::info!(
                    attempt,
                    database = B::DATABASE,
                    "the commit whose answer was lost had happened"
                );
                return Ok(effects);
            }
            tracing::info!(
                attempt,
                database = B::DATABASE,
                "the commit whose answer was lost had not happened; running the batch again"
            );
        }
        let transient = B::is_transient(&error);
        if transient && failures < 10 {
            failures += 1;
            let delay = Duration::from_millis(5u64 << failures.min(8));
            tracing::debug!(%error, failures, database = B::DATABASE, "retrying a write batch");
            tokio::time::sleep(delay).await;
            continue;
        }
        tracing::warn!(%error, ops = ops.len(), database = B::DATABASE, "a write batch failed");
        let context = format!("committing to {}", B::DATABASE);
        return Err(StoreError::new(context, transient, error).into());
    }
}

/// Whether `attempt` committed, asking until the database answers: its callers must not be
/// told anything else, so they wait (the database is down meanwhile anyway).
pub(crate) async fn settle<B: BatchExecutor>(executor: &mut B, attempt: i64) -> bool {
    let mut failures = 0u32;
    loop {
        match executor.committed(attempt).await {
            Ok(committed) => return committed,
            Err(error) => {
                failures += 1;
                let delay =
                    Duration::from_millis(10u64 << failures.min(9)).min(Duration::from_secs(5));
                if failures.is_power_of_two() {
                    tracing::warn!(%error, attempt, failures, database = B::DATABASE, "cannot find out whether a commit happened yet; asking again");
                }
                executor.abort().await;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Answers every op of a batch.
fn reply(ops: Vec<Op>, result: Result<Effects, Error>, events: &StoreEvents) {
    match result {
        Ok(effects) => {
            for op in ops {
                op.answer(None);
            }
            if effects.work {
                events.notify_work();
            }
            let statuses: HashMap<&str, &InstanceStatus> = effects
                .statuses
                .iter()
                .map(|status| (status.instance_id.as_str(), status))
                .collect();
            for instance_id in &effects.finished {
                match statuses.get(instance_id.as_str()) {
                    Some(status) => events.notify_finished_with(status),
                    None => events.notify_finished(instance_id),
                }
            }
        }
        Err(error) => {
            for op in ops {
                op.answer(Some(&error));
            }
        }
    }
}

/// Numbers attempts of one writer: distinct from other writers' (a random start), so a
/// number also marks the rows a claim took.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// The writer's id in the `writers` table.
    pub(crate) writer: String,
    next: i64,
}

impl Attempts {
    pub(crate) fn new() -> Self {
        let random = uuid::Uuid::new_v4().as_u64_pair().0;
        Attempts {
            writer: uuid::Uuid::new_v4().simple().to_string(),
            // Positive, with room for 2^40 attempts.
            next: i64::try_from(random >> 24).unwrap_or(1).max(1),
        }
    }

    /// The next attempt's number.
    pub(crate) fn next(&mut self) -> i64 {
        self.next += 1;
        self.next
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use duractor::store::PurgeQuery;
    use tokio::sync::oneshot;

    use super::*;
    use crate::batch::ops::Reply;

    /// What one attempt does.
    enum Step {
        Commits,
        /// Fails before its commit was sent.
        FailsBefore(fn() -> sqlx::Error),
        /// Fails while its commit was on its way.
        FailsInCommit(fn() -> sqlx::Error),
    }

    /// An executor whose attempts fail as scripted, and whose commits the test decides. Each
    /// attempt answers the batch's op (a purge) with its own number.
    struct Scripted {
        attempts: VecDeque<Step>,
        /// Whether the attempt whose answer was lost had committed.
        committed: bool,
        executed: u32,
        asked: u32,
    }

    fn lost() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    #[async_trait::async_trait]
    impl BatchExecutor for Scripted {
        const DATABASE: &'static str = "scripted";

        async fn execute(&mut self, ops: &mut [Op]) -> Result<Effects, AttemptError> {
            self.executed += 1;
            for op in ops.iter_mut() {
                if let Op::Purge { reply, .. } = op {
                    reply.set(Ok(u64::from(self.executed)));
                }
            }
            let attempt = i64::from(self.executed);
            let (error, in_commit) = match self.attempts.pop_front() {
                Some(Step::Commits) | None => return Ok(Effects::default()),
                Some(Step::FailsBefore(error)) => (error, false),
                Some(Step::FailsInCommit(error)) => (error, true),
            };
            Err(AttemptError {
                error: error(),
                in_commit: in_commit.then(|| (attempt, Effects::default())),
            })
        }

        async fn abort(&mut self) {}

        async fn committed(&mut self, _: i64) -> Result<bool, sqlx::Error> {
            self.asked += 1;
            Ok(self.committed)
        }

        fn outcome_unknown(error: &sqlx::Error) -> bool {
            matches!(error, sqlx::Error::Io(_))
        }

        fn is_transient(error: &sqlx::Error) -> bool {
            matches!(error, sqlx::Error::Io(_))
        }
    }

    /// Commits a batch of one op and returns the number of the attempt whose outcome it was
    /// answered with.
    async fn marker(executor: &mut Scripted) -> u64 {
        let (caller, answer) = oneshot::channel();
        let mut ops = [Op::Purge {
            query: PurgeQuery::default(),
            reply: Reply::new(caller),
        }];
        if let Err(error) = commit(executor, &mut ops).await {
            panic!("{error}");
        }
        let [op] = ops;
        op.answer(None);
        match answer.await {
            Ok(Ok(n)) => n,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// Commits at once, and spins for the next op like SQLite's writer.
    struct Eager;

    #[async_trait::async_trait]
    impl BatchExecutor for Eager {
        const DATABASE: &'static str = "eager";
        const IDLE_SPIN: Duration = Duration::from_micros(200);

        async fn execute(&mut self, _: &mut [Op]) -> Result<Effects, AttemptError> {
            Ok(Effects::default())
        }

        async fn abort(&mut self) {}

        async fn committed(&mut self, _: i64) -> Result<bool, sqlx::Error> {
            Ok(true)
        }

        fn outcome_unknown(_: &sqlx::Error) -> bool {
            false
        }

        fn is_transient(_: &sqlx::Error) -> bool {
            false
        }
    }

    /// Ops that keep coming within the writer's spin must not keep the other tasks of its
    /// runtime (SQLite's WAL checkpointer) from running.
    #[test]
    fn a_spinning_writer_lets_its_runtime_run_other_tasks() {
        let (tx, rx) = mpsc::unbounded_channel();
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = ticks.clone();
        let writer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                run_writer(Eager, rx, Arc::new(StoreEvents::default()), 10).await;
            });
        });
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(300) {
            let (caller, _answer) = oneshot::channel();
            let op = Op::Purge {
                query: PurgeQuery::default(),
                reply: Reply::new(caller),
            };
            tx.send(op).unwrap();
            std::thread::sleep(Duration::from_micros(20));
        }
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed);
        drop(tx);
        writer.join().unwrap();
        assert!(during >= 10, "the other task ran {during} times in 300 ms");
    }

    /// Counts its upkeeps and its batches.
    #[derive(Default)]
    struct Kept {
        upkeeps: Arc<std::sync::atomic::AtomicU32>,
        batches: Arc<std::sync::atomic::AtomicU32>,
    }

    #[async_trait::async_trait]
    impl BatchExecutor for Kept {
        const DATABASE: &'static str = "kept";
        const IDLE_UPKEEP_EVERY: Option<Duration> = Some(Duration::from_millis(20));

        async fn idle(&mut self) {
            self.upkeeps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }

        async fn execute(&mut self, ops: &mut [Op]) -> Result<Effects, AttemptError> {
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for op in ops.iter_mut() {
                if let Op::Purge { reply, .. } = op {
                    reply.set(Ok(7));
                }
            }
            Ok(Effects::default())
        }

        async fn abort(&mut self) {}

        async fn committed(&mut self, _: i64) -> Result<bool, sqlx::Error> {
            Ok(true)
        }

        fn outcome_unknown(_: &sqlx::Error) -> bool {
            false
        }

        fn is_transient(_: &sqlx::Error) -> bool {
            false
        }
    }

    /// A writer with nothing to do does its upkeep every `IDLE_UPKEEP_EVERY`, and an op that
    /// comes meanwhile is still committed and answered; the loop ends when the senders go.
    #[tokio::test]
    async fn an_idle_writer_does_its_upkeep_and_still_takes_ops() {
        let kept = Kept::default();
        let (upkeeps, batches) = (kept.upkeeps.clone(), kept.batches.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(run_writer(kept, rx, Arc::new(StoreEvents::default()), 10));
        tokio::time::sleep(Duration::from_millis(110)).await;
        let idle = upkeeps.load(std::sync::atomic::Ordering::Relaxed);
        assert!(idle >= 2, "{idle} upkeeps in 110 ms of idling");
        let (caller, answer) = oneshot::channel();
        tx.send(Op::Purge {
            query: PurgeQuery::default(),
            reply: Reply::new(caller),
        })
        .unwrap();
        let purged = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("the op was answered")
            .unwrap()
            .unwrap();
        assert_eq!(purged, 7);
        assert_eq!(batches.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer ended with its senders")
            .unwrap();
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_after_it_happened_is_answered_once() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(lost)]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        // The first attempt's outcome, not a second run.
        assert_eq!(marker(&mut executor).await, 1);
        assert_eq!((executor.executed, executor.asked), (1, 1));
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_before_it_happened_runs_again() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(lost), Step::Commits]),
            committed: false,
            executed: 0,
            asked: 0,
        };
        assert_eq!(marker(&mut executor).await, 2);
        assert_eq!((executor.executed, executor.asked), (2, 1));
    }

    #[tokio::test]
    async fn failures_before_the_commit_are_retried_without_asking() {
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsBefore(lost), Step::Commits]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        assert_eq!(marker(&mut executor).await, 2);
        assert_eq!((executor.executed, executor.asked), (2, 0));
    }

    #[tokio::test]
    async fn an_answered_failure_in_the_commit_is_not_settled() {
        // The database answered (here: a protocol error, not a lost connection): the commit
        // did not happen, and the error is not one that passes.
        let mut executor = Scripted {
            attempts: VecDeque::from([Step::FailsInCommit(|| sqlx::Error::Protocol("no".into()))]),
            committed: true,
            executed: 0,
            asked: 0,
        };
        assert!(commit(&mut executor, &mut []).await.is_err());
        assert_eq!((executor.executed, executor.asked), (1, 0));
    }
}
