//! The PostgreSQL writer: group commit for one worker process, sharing the database with
//! others.
//!
//! Each batch is one transaction on a pooled connection (a dropped connection is replaced on
//! the retry):
//!
//! 1. one read that locks the rows the batch touches (`SELECT … FOR UPDATE`, in id order so
//!    two workers never wait on each other in a cycle) and reserves queue ids from the
//!    sequences (`nextval`), so validation sees what no other worker can change meanwhile;
//! 2. validation in Rust (the shared [`Plan`]);
//! 3. the merged writes as one statement of data-modifying CTEs over JSON arrays
//!    (`jsonb_array_elements($n::jsonb)`), whose final `SELECT` also queues the `pg_notify`s
//!    for the work and finished instances the batch produced;
//! 4. claims (`FOR UPDATE SKIP LOCKED`, so competing workers take different instances and work
//!    items), a separate `pg_notify` only for batches without that statement (starts, cleanups),
//!    then `COMMIT`, which delivers the notifications to every listening worker.
//!
//! So a turn batch is `BEGIN`, the read, the write, its claims if any, and `COMMIT`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use duractor::flow::{self, FlowRule, FlowUsage};
use duractor::store::{
    Admission, ClaimedActivities, EntityCleanup, FLOW_HOLD_OWNER, HeldWork, MemoryCall,
    OrchestrationMessage, PurgeQuery,
};
use duractor::{Error, RuntimeStatus};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions as _, Postgres, Row, Transaction};

use super::store_error;
use crate::batch::guarded::{self, Guards};
use crate::batch::{
    AttemptError, Attempts, BatchExecutor, Effects, InstanceState, Op, Plan, State, ids_needed,
    touched,
};
use crate::common::{json, millis, now_ms};
use crate::rows;

pub(super) struct Writer {
    pub(super) pool: PgPool,
    /// Notification channels: work available, instance finished (its id), instance finished
    /// (its row, [`FINISHED_ROW_MAX`]).
    pub(super) work_channel: String,
    pub(super) finished_channel: String,
    pub(super) finished_rows_channel: String,
    /// This writer's fence row and attempt numbers.
    pub(super) attempts: Attempts,
    /// Queue ids taken from the sequences ahead of need, for guarded batches: their one
    /// statement cannot both take an id and return it to a caller whose answer may be lost
    /// (a claimed start's message id, a work item id). Lowest first.
    pub(super) message_ids: Vec<i64>,
    pub(super) item_ids: Vec<i64>,
    /// The connection guarded turns run on: one, planning each statement once, owned by the
    /// writer rather than pooled (a pool pings a connection when it is taken and again when
    /// it is given back: two round trips more per statement). `None` after a failure that
    /// may have broken it; the next guarded batch connects again.
    pub(super) guarded_conn: Option<GuardedConnection>,
    /// How to connect it.
    pub(super) guarded_options: PgConnectOptions,
    /// Failed connects in a row, and when the next try may be (batches meanwhile run the
    /// ordinary way, whose pool waits for the server).
    pub(super) guarded_failures: u32,
    pub(super) guarded_retry_at: Option<Instant>,
    /// The server process of a guarded connection whose answer was lost: ended before the
    /// fence row is asked whether its statement committed (a statement the server has not
    /// run yet, or that waits for a lock, could otherwise commit after the answer "no").
    pub(super) unsettled_backend: Option<Backend>,
    /// The statement of each guarded batch shape met so far.
    pub(super) guarded_sql: HashMap<GuardedShape, std::sync::Arc<str>>,
}

/// How many shapes of guarded statements a writer keeps besides the one with every part
/// (each is a statement prepared on the guarded connection); batches of further shapes run
/// as that one.
const MAX_GUARDED_SHAPES: usize = 64;

/// How many prepared statements the guarded connection keeps: every shape, the one with
/// every part, and the id reservation, with room to spare (sqlx closes the least recently
/// used statement beyond it, which would make a shape's statement be prepared again).
pub(super) const GUARDED_STATEMENTS: usize = MAX_GUARDED_SHAPES + 8;

/// The settings of the guarded connection. Its statements are planned once (a generic
/// plan): planning the guarded statement again for every turn cost as much as a third of
/// it. A generic plan is made without the lists' lengths, so the planner takes each
/// `jsonb_array_elements` for 100 rows, and on a table of a few thousand rows it preferred
/// scanning the whole table to 100 index lookups: every guarded turn then read every
/// instance (2.9 ms a turn against 0.3 ms at 10,000 instances, `pgbench -M prepared`). A
/// guarded batch has at most [`guarded::MAX_ROWS`] rows of a kind and reaches each row by
/// its key, so the connection plans without scans, hash joins or merge joins (test
/// `every_guarded_shape_finds_its_rows_through_an_index_in_a_large_store`).
pub(super) const GUARDED_SETTINGS: [(&str, &str); 4] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// The writer's own connection for guarded batches.
pub(super) struct GuardedConnection {
    conn: PgConnection,
    /// Its server process.
    backend: Backend,
    /// When it last ran a statement or answered a ping: one idle for longer than
    /// [`GUARDED_IDLE`] is pinged before use, and replaced if it does not answer (a firewall
    /// may have forgotten it). Replacing it would lose its planned statements.
    used_at: Instant,
}

/// A server process: its pid and start time in microseconds (a pid alone may be reused).
#[derive(Debug, Clone, Copy)]
pub(super) struct Backend {
    pid: i32,
    started_us: i64,
}

impl GuardedConnection {
    /// Connects with `options`, learning the server process.
    pub(super) async fn connect(options: &PgConnectOptions) -> Result<Self, sqlx::Error> {
        let mut conn = options.connect().await?;
        let (pid, started_us): (i32, i64) = sqlx::query_as(
            "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint \
             FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(GuardedConnection {
            conn,
            backend: Backend { pid, started_us },
            used_at: Instant::now(),
        })
    }

    /// Whether the connection answers a ping within [`GUARDED_PING_TIMEOUT`] (marking it
    /// used if so); one that does not is to be dropped.
    async fn answers_ping(&mut self) -> bool {
        let ping = sqlx::Connection::ping(&mut self.conn);
        let answered = matches!(
            tokio::time::timeout(GUARDED_PING_TIMEOUT, ping).await,
            Ok(Ok(()))
        );
        if answered {
            self.used_at = Instant::now();
        } else {
            tracing::debug!("the guarded connection did not answer a ping; connecting again");
        }
        answered
    }
}

/// How long connecting the guarded connection may take; after a failed try the next waits
/// twice as long as the last, from [`GUARDED_CONNECT_BACKOFF`] up to 30 s.
const GUARDED_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const GUARDED_CONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// A guarded connection idle for longer is pinged before use (and connected again if the
/// ping fails or takes longer than [`GUARDED_PING_TIMEOUT`]).
const GUARDED_IDLE: Duration = Duration::from_secs(30);
const GUARDED_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// While no batch comes, the writer pings a guarded connection idle this long (so it stays
/// fresh, and a broken one is found then, not in the next turn), and connects one a failure
/// dropped, planning its statements ahead.
const GUARDED_KEEPALIVE: Duration = Duration::from_secs(10);

/// Whether a guarded connection is still sound after `error`: the server answered, and not
/// with the end of the session (a terminated backend, a shutdown: SQLSTATE class 08, 57P).
fn connection_survives(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_none_or(|code| !code.starts_with("08") && !code.starts_with("57P")),
        _ => false,
    }
}

/// The SQLSTATE `duractor_refuse()` raises: a guard did not hold.
const REFUSED: &str = "DU001";

/// How many queue ids a writer takes from a sequence at a time for guarded batches. Ids
/// taken ahead are older than ones other writers take meanwhile; claims take the lowest ids
/// first, so a block's last ids may be claimed a little early, never late, and only against
/// other instances' work (an instance's own messages keep their order: a writer's ids rise).
const ID_BLOCK: usize = 64;

impl Writer {
    /// A batch of claims only: each claim is one statement, atomic on its own, so they run
    /// without `BEGIN`, the locking read and `COMMIT` (one round trip per claim instead of
    /// four or more), each committed without waiting for the WAL flush
    /// ([`ClaimCommit::Alone`]); a flow-limited claim is a transaction of its own
    /// ([`claim_in_transaction`]). Claims change no state another op of the batch reads and
    /// notify nobody.
    ///
    /// A claim whose answer is lost is not fenced (that would make every claim, even one that
    /// finds nothing, a write the server must flush): the rows it took are read back by the
    /// attempt number it marked them with, and whatever it took that cannot be read back yet
    /// (its transaction still deciding) is leased to this worker but held by nobody, so it is
    /// not renewed and is claimed again within a lease period.
    async fn claim_only(&mut self, ops: &mut [Op], now: i64) -> Result<Effects, AttemptError> {
        let started = Instant::now();
        for op in ops.iter_mut() {
            let attempt = self.attempts.next();
            let mut conn = match self.pool.acquire().await {
                Ok(conn) => conn,
                // No statement ran.
                Err(error) => {
                    failed_claim(op, error);
                    continue;
                }
            };
            let claimed = if flow_limited(op) {
                claim_in_transaction(&mut conn, op, attempt, now).await
            } else {
                claim(&mut conn, op, ClaimCommit::Alone, attempt, now).await
            };
            drop(conn);
            match claimed {
                Ok(()) => {}
                Err(error) if Self::outcome_unknown(&error) => {
                    tracing::warn!(%error, attempt, "the answer to a claim was lost; reading back what it took");
                    let read_back = match self.pool.acquire().await {
                        Ok(mut conn) => reclaimed(&mut conn, op, attempt).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = read_back {
                        failed_claim(op, error);
                    }
                }
                Err(error) => failed_claim(op, error),
            }
        }
        tracing::trace!(
            claims = ops.len(),
            batch_us = started.elapsed().as_micros() as u64,
            "claims sent"
        );
        Ok(Effects::default())
    }
}

impl Writer {
    /// Commits a batch of plain turns as one statement that also checks what their plan
    /// assumed ([`guarded`]), saving `BEGIN`, the locking read and `COMMIT`: `None` when the
    /// batch does not qualify or an assumption failed (nothing was written; the ordinary path
    /// then runs it and answers each op exactly).
    async fn guarded(&mut self, ops: &mut [Op], now: i64) -> Result<Option<Effects>, AttemptError> {
        let Some((mut state, guards)) = guarded::assume(ops) else {
            return Ok(None);
        };
        let Some(mut guarded) = self.guarded_connection().await else {
            return Ok(None);
        };
        let (messages, items) = ids_needed(ops);
        if let Err(error) = self
            .take_ids_ahead(&mut guarded.conn, messages, items)
            .await
        {
            if connection_survives(&error) {
                self.guarded_conn = Some(guarded);
            }
            return Err(error.into());
        }
        state.reserve(
            self.message_ids.drain(..messages).collect(),
            self.item_ids.drain(..items).collect(),
        );
        let mut plan = Plan::default();
        for op in ops.iter_mut() {
            plan.apply(op, &mut state, now);
        }
        if !plan.only_guarded_writes() {
            self.guarded_conn = Some(guarded);
            return Ok(None);
        }
        let attempt = self.attempts.next();
        let started = Instant::now();
        let shape = GuardedShape::of(&plan, &guards);
        let written =
            guarded_write(self, &mut guarded.conn, shape, &plan, &guards, attempt, now).await;
        tracing::trace!(
            batch_us = started.elapsed().as_micros() as u64,
            ok = written.is_ok(),
            shape = shape.0,
            "guarded batch sent"
        );
        guarded.used_at = Instant::now();
        // A connection the server answered on is sound; after any other failure it is
        // dropped, and its server process is ended before the outcome is settled.
        if written.as_ref().err().is_none_or(connection_survives) {
            self.guarded_conn = Some(guarded);
        } else {
            self.unsettled_backend = Some(guarded.backend);
        }
        match written {
            Ok(finished_rows) => {
                let mut effects = plan.effects;
                effects.statuses = finished_statuses(finished_rows);
                Ok(Some(effects))
            }
            // The server answered: the statement did not commit.
            Err(sqlx::Error::Database(error)) => {
                guarded::log_fallback(&error, error.code().as_deref() == Some(REFUSED));
                Ok(None)
            }
            Err(error) => Err(AttemptError {
                error,
                in_commit: Some((attempt, plan.effects)),
            }),
        }
    }
}

impl Writer {
    /// Prepares and plans on the guarded connection the statements of the [common
    /// shapes](GuardedShape::COMMON) and of every shape this writer has met, so no turn pays
    /// for that (the first run of a shape's statement on a connection took 2–5 ms, ten
    /// times a warm one): each runs once over empty lists inside a transaction that is
    /// rolled back, which writes nothing and sends no notice, while the prepared statement
    /// and its generic plan stay with the connection. A failure only leaves the rest to
    /// their first turns (and drops a connection it may have broken).
    pub(super) async fn warm(&mut self) {
        let Some(mut guarded) = self.guarded_conn.take() else {
            return;
        };
        let started = Instant::now();
        let mut shapes: Vec<GuardedShape> = GuardedShape::COMMON
            .into_iter()
            .map(GuardedShape)
            .chain(self.guarded_sql.keys().copied())
            .collect();
        shapes.sort_unstable_by_key(|shape| shape.0);
        shapes.dedup();
        let (plan, guards) = (Plan::default(), Guards::default());
        let warmed = async {
            let mut tx = sqlx::Connection::begin(&mut guarded.conn).await?;
            for shape in &shapes {
                statement(self, &mut tx, *shape, &plan, &guards, 0, now_ms()).await?;
            }
            tx.rollback().await
        }
        .await;
        match warmed {
            Ok(()) => tracing::debug!(
                shapes = shapes.len(),
                warm_us = started.elapsed().as_micros() as u64,
                "guarded statements planned ahead"
            ),
            Err(error) => {
                tracing::debug!(%error, "planning the guarded statements ahead failed; each is planned in its first turn");
                if !connection_survives(&error) {
                    return;
                }
            }
        }
        guarded.used_at = Instant::now();
        self.guarded_conn = Some(guarded);
    }

    /// The guarded connection, connected again if a failure dropped it or it sat idle;
    /// `None` while the server cannot be reached.
    async fn guarded_connection(&mut self) -> Option<GuardedConnection> {
        if let Some(mut guarded) = self.guarded_conn.take()
            && (guarded.used_at.elapsed() < GUARDED_IDLE || guarded.answers_ping().await)
        {
            return Some(guarded);
        }
        if self.guarded_retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let connect = GuardedConnection::connect(&self.guarded_options);
        match tokio::time::timeout(GUARDED_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(guarded)) => {
                self.guarded_failures = 0;
                self.guarded_retry_at = None;
                Some(guarded)
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "timed out".to_owned(),
                };
                let wait = GUARDED_CONNECT_BACKOFF
                    .saturating_mul(1 << self.guarded_failures.min(5))
                    .min(Duration::from_secs(30));
                self.guarded_failures += 1;
                tracing::debug!(%error, wait_ms = wait.as_millis() as u64, "cannot connect for guarded batches; running batches the ordinary way for now");
                self.guarded_retry_at = Some(Instant::now() + wait);
                None
            }
        }
    }

    /// Keeps the guarded connection while no batch comes: pings one idle for
    /// [`GUARDED_KEEPALIVE`], and connects one that a failure dropped (or that did not answer
    /// the ping), planning its statements ahead ([`Writer::warm`]) — now, rather than in the
    /// next turn.
    async fn keep_guarded(&mut self) {
        if let Some(guarded) = &mut self.guarded_conn {
            if guarded.used_at.elapsed() < GUARDED_KEEPALIVE || guarded.answers_ping().await {
                return;
            }
            self.guarded_conn = None;
        }
        if let Some(guarded) = self.guarded_connection().await {
            self.guarded_conn = Some(guarded);
            self.warm().await;
        }
    }

    /// Ends the server process of a guarded statement whose answer was lost and waits until
    /// it is gone: an error (the server out of reach) leaves it to the next try.
    async fn end_unsettled_backend(&mut self) -> Result<(), sqlx::Error> {
        let Some(backend) = self.unsettled_backend else {
            return Ok(());
        };
        // Ending takes the process a moment (it rolls back what it was doing); asking again
        // is harmless, so one statement both ends it and says whether it was still there.
        for _ in 0..200 {
            let (alive,): (i64,) = sqlx::query_as(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::bigint = $2",
            )
            .bind(backend.pid)
            .bind(backend.started_us)
            .fetch_one(&self.pool)
            .await?;
            if alive == 0 {
                self.unsettled_backend = None;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(sqlx::Error::Protocol(format!(
            "the server process {} of a guarded statement whose answer was lost has not ended yet",
            backend.pid
        )))
    }

    /// Makes sure `messages` message ids and `items` work item ids are taken ahead, taking a
    /// block from a sequence that has too few.
    async fn take_ids_ahead(
        &mut self,
        conn: &mut PgConnection,
        messages: usize,
        items: usize,
    ) -> Result<(), sqlx::Error> {
        let block = |have: usize, need: usize| if have < need { need.max(ID_BLOCK) } else { 0 };
        let (more_messages, more_items) = (
            block(self.message_ids.len(), messages),
            block(self.item_ids.len(), items),
        );
        if more_messages + more_items == 0 {
            return Ok(());
        }
        let rows: Vec<(bool, i64)> = sqlx::query_as(
            "SELECT true, nextval('orch_queue_id_seq') FROM generate_series(1, $1) \
             UNION ALL SELECT false, nextval('activity_queue_id_seq') FROM generate_series(1, $2)",
        )
        .bind(more_messages as i64)
        .bind(more_items as i64)
        .fetch_all(conn)
        .await?;
        for (message, id) in rows {
            if message {
                self.message_ids.push(id);
            } else {
                self.item_ids.push(id);
            }
        }
        self.message_ids.sort_unstable();
        self.item_ids.sort_unstable();
        Ok(())
    }
}

/// What a guarded batch's statement has parts for: one bit per list of the batch that is not
/// empty. Its statement runs on a generic plan, which runs every part of it whatever the
/// values, and a part over an empty list costs about what it costs over one row: a turn's
/// statement with only its own parts took 0.39–0.44 ms against 0.45–0.53 ms for the one with
/// every part (`pgbench -M prepared`, generic plans, commit included, three rounds). Each
/// shape is a statement of its own, prepared once on the guarded connection (a few dozen
/// shapes occur).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GuardedShape(u16);

impl GuardedShape {
    const HISTORY: u16 = 1;
    const CONSUMED: u16 = 1 << 1;
    const FINISHED: u16 = 1 << 2;
    const COMPLETED: u16 = 1 << 3;
    const CANCELLED_CALLS: u16 = 1 << 4;
    const CANCELLED_TIMERS: u16 = 1 << 5;
    const NEW_INSTANCES: u16 = 1 << 6;
    const MESSAGES: u16 = 1 << 7;
    const ACTIVITIES: u16 = 1 << 8;
    const UPDATES: u16 = 1 << 9;
    const WORK: u16 = 1 << 10;
    const ALL: u16 = (1 << 11) - 1;

    /// The shape of a batch's plan and guards.
    fn of(plan: &Plan, guards: &Guards) -> Self {
        let parts = [
            (Self::HISTORY, plan.history.is_empty()),
            (Self::CONSUMED, guards.consumed.is_empty()),
            (Self::FINISHED, plan.finished.is_empty()),
            (Self::COMPLETED, guards.completed.is_empty()),
            (Self::CANCELLED_CALLS, plan.cancelled_calls.is_empty()),
            (Self::CANCELLED_TIMERS, plan.cancelled_timers.is_empty()),
            (Self::NEW_INSTANCES, plan.new_instances.is_empty()),
            (Self::MESSAGES, plan.messages.is_empty()),
            (Self::ACTIVITIES, plan.activities.is_empty()),
            (
                Self::UPDATES,
                plan.updates.is_empty() && guards.instances.is_empty(),
            ),
            (Self::WORK, !plan.effects.work),
        ];
        GuardedShape(
            parts
                .into_iter()
                .filter(|(_, empty)| !empty)
                .fold(0, |shape, (part, _)| shape | part),
        )
    }

    /// The shapes most turns have, whose statements a guarded connection plans when it
    /// connects ([`Writer::warm`]): an instance's first turn started by the runtime's own
    /// client, or the first turn of one started by another process, a turn consuming an
    /// activity's result and calling the next, the last turn, the same as one batch with
    /// other turns, a timer's turn and its last turn, and a start by another process's
    /// client (the shapes `RUST_LOG=duractor_sqlx=trace` showed in W1, W6, W7 and W8), and
    /// a first turn that sets a timer, with and without work to announce (test
    /// `one_operation_at_a_time_meets_only_shapes_prepared_when_the_store_opened`).
    const COMMON: [u16; 12] = [
        Self::HISTORY | Self::NEW_INSTANCES | Self::UPDATES,
        Self::HISTORY | Self::CONSUMED | Self::UPDATES,
        Self::HISTORY | Self::CANCELLED_CALLS | Self::UPDATES,
        Self::HISTORY | Self::CANCELLED_CALLS | Self::FINISHED | Self::UPDATES,
        Self::HISTORY | Self::CANCELLED_CALLS | Self::NEW_INSTANCES | Self::UPDATES,
        Self::HISTORY
            | Self::CANCELLED_CALLS
            | Self::NEW_INSTANCES
            | Self::FINISHED
            | Self::UPDATES,
        Self::HISTORY | Self::CONSUMED | Self::MESSAGES | Self::UPDATES,
        Self::HISTORY | Self::CONSUMED | Self::FINISHED | Self::UPDATES,
        Self::HISTORY | Self::CONSUMED | Self::MESSAGES | Self::UPDATES | Self::WORK,
        Self::NEW_INSTANCES | Self::MESSAGES | Self::WORK,
        Self::HISTORY | Self::NEW_INSTANCES | Self::MESSAGES | Self::UPDATES,
        Self::HISTORY | Self::NEW_INSTANCES | Self::MESSAGES | Self::UPDATES | Self::WORK,
    ];

    fn has(self, part: u16) -> bool {
        self.0 & part != 0
    }

    /// The pieces of SQL whose part the shape has.
    fn present<'a>(self, pieces: &[(u16, &'a str)]) -> Vec<&'a str> {
        pieces
            .iter()
            .filter(|(part, _)| self.has(*part))
            .map(|(_, piece)| *piece)
            .collect()
    }

    /// The statement: every part checks or writes one list, and binds it at the same
    /// parameter in every shape ([`guarded_write`] binds them all). Its leading comment names
    /// it for whoever watches the wire (the fault tests' proxy loses answers to commits, and
    /// this statement is one).
    fn sql(self) -> String {
        let mut ctes = vec![
            "fence AS ( \
                INSERT INTO writers (writer, batch, updated_at) VALUES ($1, $2, $3) \
                ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, updated_at = excluded.updated_at)"
                .to_owned(),
        ];
        if self.has(Self::HISTORY) {
            ctes.push(
                "hist AS ( \
                    INSERT INTO history (instance_id, idx, event) \
                    SELECT e->>0, (e->>1)::bigint, e->>2 FROM jsonb_array_elements($4::jsonb) e)"
                    .to_owned(),
            );
        }
        let message_arms = self.present(&[
            (Self::CONSUMED, "id = ANY($5)"),
            (Self::FINISHED, "instance_id = ANY($6)"),
        ]);
        if !message_arms.is_empty() {
            ctes.push(format!(
                "del_msgs AS (DELETE FROM orch_queue WHERE {} RETURNING id, locked_by)",
                message_arms.join(" OR ")
            ));
        }
        if self.has(Self::CANCELLED_TIMERS) {
            // Never rows del_msgs deletes (the plan lists none of instances that finish), and
            // not counted by the guard below; as an arm of del_msgs' OR it cost every
            // statement ~35 us.
            ctes.push(
                "del_timers AS ( \
                    DELETE FROM orch_queue q USING jsonb_array_elements($18::jsonb) c \
                    WHERE q.instance_id = c->>0 AND q.execution = (c->>2)::bigint AND q.locked_by IS NULL \
                      AND (q.message::jsonb -> 'TimerFired' ->> 'seq')::bigint = (c->>1)::bigint)"
                    .to_owned(),
            );
        }
        // Each arm has an index (the cancelled calls' instance ids are an array of their own
        // for it), so a backlog of work items is never scanned.
        let item_arms = self.present(&[
            (Self::COMPLETED, "a.id = ANY($7)"),
            (Self::FINISHED, "a.instance_id = ANY($6)"),
            (
                Self::CANCELLED_CALLS,
                "(a.instance_id = ANY(ARRAY(SELECT c->>0 FROM jsonb_array_elements($8::jsonb) c)) \
                  AND EXISTS (SELECT 1 FROM jsonb_array_elements($8::jsonb) c \
                              WHERE a.instance_id = c->>0 AND a.seq = (c->>1)::bigint \
                                AND a.execution = (c->>2)::bigint))",
            ),
        ]);
        if !item_arms.is_empty() {
            ctes.push(format!(
                "del_items AS (DELETE FROM activity_queue a WHERE {} RETURNING a.id, a.locked_by)",
                item_arms.join(" OR ")
            ));
        }
        if self.has(Self::NEW_INSTANCES) {
            // An instance created by its first turn (`TurnCommit::create`) is inserted as that
            // turn leaves it, from its status update (`u`): the statement's `upd` cannot see
            // a row the same statement inserts, and has no guard for it anyway.
            ctes.push(
                "new_inst AS ( \
                    INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len, \
                                           locked_by, locked_until, output, failure, custom_status, completed_at, calls) \
                    SELECT e->>0, e->>1, e->>2, COALESCE(u->>1, 'Pending'), e->>3, (e->>4)::bigint, \
                           COALESCE((u->>6)::bigint, (e->>4)::bigint), COALESCE((u->>5)::bigint, 0), \
                           CASE WHEN u IS NULL THEN e->>5 ELSE u->>8 END, \
                           CASE WHEN u IS NULL THEN (e->>6)::bigint ELSE (u->>9)::bigint END, \
                           u->>2, u->>3, u->>4, (u->>7)::bigint, nullif(jsonb_strip_nulls((u->>12)::jsonb), '{}'::jsonb) \
                    FROM jsonb_array_elements($17::jsonb) e LEFT JOIN jsonb_array_elements($11::jsonb) u ON u->>0 = e->>0 \
                    ON CONFLICT (instance_id) DO NOTHING RETURNING instance_id)"
                    .to_owned(),
            );
        }
        if self.has(Self::MESSAGES) {
            ctes.push(
                "new_msgs AS ( \
                    INSERT INTO orch_queue (id, instance_id, visible_at, message, execution, locked_by, locked_until) \
                    SELECT (e->>0)::bigint, e->>1, (e->>2)::bigint, e->>3, (e->>4)::bigint, e->>5, (e->>6)::bigint \
                    FROM jsonb_array_elements($9::jsonb) e)"
                    .to_owned(),
            );
        }
        if self.has(Self::ACTIVITIES) {
            ctes.push(
                "new_items AS ( \
                    INSERT INTO activity_queue (id, instance_id, seq, name, input, execution, attempt, locked_by, locked_until, timeouts, heartbeat, flow_key, priority) \
                    SELECT (e->>0)::bigint, e->>1, (e->>2)::bigint, e->>3, e->>4, (e->>5)::bigint, \
                           (e->>12)::integer + CASE WHEN e->>6 IS NULL THEN 0 ELSE 1 END, e->>6, (e->>7)::bigint, e->>8, e->>9, \
                           e->>10, (e->>11)::integer \
                    FROM jsonb_array_elements($10::jsonb) e)"
                    .to_owned(),
            );
        }
        if self.has(Self::UPDATES) {
            ctes.push(format!(
                "upd AS ( \
                    UPDATE instances i SET \
                        status = COALESCE(u.status, i.status), \
                        output = COALESCE(u.output, i.output), \
                        failure = COALESCE(u.failure, i.failure), \
                        custom_status = COALESCE(u.custom_status, i.custom_status), \
                        input = COALESCE(u.input, i.input), \
                        history_len = u.history_len, updated_at = u.updated_at, \
                        completed_at = COALESCE(u.completed_at, i.completed_at), \
                        locked_by = u.locked_by, locked_until = u.locked_until, \
                        calls = CASE WHEN u.drop_calls THEN nullif(jsonb_strip_nulls(u.calls), '{{}}'::jsonb) \
                                 WHEN u.calls IS NULL THEN i.calls \
                                 ELSE nullif((COALESCE(i.calls, '{{}}'::jsonb) \
                                              - ARRAY(SELECT p.key FROM jsonb_each(u.calls) AS p WHERE p.value = 'null'::jsonb)) \
                                             || jsonb_strip_nulls(u.calls), '{{}}'::jsonb) END \
                    FROM (SELECT e->>0 AS id, e->>1 AS status, e->>2 AS output, e->>3 AS failure, \
                                 e->>4 AS custom_status, (e->>5)::bigint AS history_len, (e->>6)::bigint AS updated_at, \
                                 (e->>7)::bigint AS completed_at, e->>8 AS locked_by, (e->>9)::bigint AS locked_until, \
                                 e->>11 AS input, (e->>12)::jsonb AS calls, (e->>13)::boolean AS drop_calls \
                          FROM jsonb_array_elements($11::jsonb) e) AS u, \
                         jsonb_array_elements($12::jsonb) g \
                    WHERE i.instance_id = u.id AND g->>0 = u.id AND i.history_len = (g->>1)::bigint \
                      AND (i.locked_by IS NULL OR i.locked_by = $13 OR i.locked_until < $3) \
                    RETURNING {})",
                if self.has(Self::FINISHED) {
                    // The rows of instances that finish, as their waiters will be handed them.
                    updated_instance_columns()
                } else {
                    "i.instance_id".to_owned()
                }
            ));
        }
        // The guards: a part that is not there has nothing to check.
        let checks = self.present(&[
            (
                Self::UPDATES,
                "(SELECT count(*) FROM upd) = jsonb_array_length($12::jsonb)",
            ),
            (
                Self::NEW_INSTANCES,
                "(SELECT count(*) FROM new_inst) = jsonb_array_length($17::jsonb)",
            ),
            (
                Self::CONSUMED,
                "(SELECT count(*) FROM del_msgs \
                  WHERE locked_by = $13 AND id IN (SELECT unnest($5::bigint[]))) = cardinality($5::bigint[])",
            ),
            (
                Self::COMPLETED,
                "(SELECT count(*) FROM del_items \
                  WHERE locked_by = $13 AND id IN (SELECT unnest($7::bigint[]))) = cardinality($7::bigint[])",
            ),
        ]);
        // Each finished instance's row where it fits a notification, else its id.
        let finished_notice = if self.has(Self::UPDATES) {
            finished_notices("$16", "$19")
        } else {
            "(SELECT count(pg_notify($16, id)) FROM unnest($6::text[]) AS id)".to_owned()
        };
        let notices = self.present(&[
            (
                Self::WORK,
                "(SELECT count(pg_notify($14, $15)) FROM (SELECT 1) AS one WHERE $15 IS NOT NULL)",
            ),
            (Self::FINISHED, &finished_notice),
        ]);
        // The finished instances' rows, for their waiters here (the statement's second column,
        // [`finished_statuses`]) and in other processes (the notifications): each as a JSON
        // array of its columns, NULL for one the statement did not update (created and
        // finished by one turn) or too long for a notification.
        let finished_rows = if self.has(Self::FINISHED) && self.has(Self::UPDATES) {
            ctes.push(finished_rows_cte("$6"));
            FINISHED_ROWS
        } else {
            "NULL::text[]"
        };
        format!(
            "/* duractor: a guarded batch, which commits on its own */ \
             WITH {} \
             SELECT CASE WHEN {} THEN {} \
             ELSE duractor_refuse('a guarded batch found an instance, message or work item changed, or an id taken') \
             END, {finished_rows}",
            ctes.join(", "),
            if checks.is_empty() {
                "true".to_owned()
            } else {
                checks.join(" AND ")
            },
            if notices.is_empty() {
                "0".to_owned()
            } else {
                notices.join(" + ")
            },
        )
    }
}

/// The columns `upd` returns for the rows of finished instances: [`rows::INSTANCE_COLUMNS`]
/// of the updated row (`i`).
fn updated_instance_columns() -> String {
    rows::INSTANCE_COLUMNS
        .split(',')
        .map(|column| format!("i.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CTE `fin`: each finished instance of the id list `ids` with its row as `upd` (whose
/// `RETURNING` has [`updated_instance_columns`]) left it, a JSON array of
/// [`rows::INSTANCE_COLUMNS`]; `r` is NULL for one `upd` did not update (created and finished
/// by one turn) or too long for a notification ([`FINISHED_ROW_MAX`]). A statement's other
/// parts cannot read what it writes (they see the rows as it began), hence `upd`'s rows.
fn finished_rows_cte(ids: &str) -> String {
    format!(
        "fin AS (SELECT id, (SELECT r FROM (SELECT json_build_array({})::text AS r FROM upd \
                                            WHERE upd.instance_id = id) AS j \
                             WHERE octet_length(r) <= {FINISHED_ROW_MAX}) AS r \
                 FROM unnest({ids}::text[]) AS id)",
        rows::INSTANCE_COLUMNS
    )
}

/// Announces each finished instance of [`finished_rows_cte`]: its row on `rows_channel` where
/// it has one, else its id on `ids_channel`.
fn finished_notices(ids_channel: &str, rows_channel: &str) -> String {
    format!(
        "(SELECT count(pg_notify(CASE WHEN r IS NULL THEN {ids_channel} ELSE {rows_channel} END, \
                                 COALESCE(r, id))) FROM fin)"
    )
}

/// The finished rows of [`finished_rows_cte`] a statement returns, for this process's waiters
/// ([`finished_statuses`]).
const FINISHED_ROWS: &str = "(SELECT array_agg(r) FROM fin WHERE r IS NOT NULL)";

/// The finished rows ([`FINISHED_ROWS`]) in column `index` of a statement's answer; none,
/// with a warning, if they cannot be decoded (the statement has committed all the same, and
/// the waiters read the rows themselves).
fn returned_rows(row: &sqlx::postgres::PgRow, index: usize) -> Option<Vec<String>> {
    row.try_get(index).unwrap_or_else(|error| {
        tracing::warn!(%error, "the rows of finished instances a statement returned are not readable; their waiters read them");
        None
    })
}

/// The longest row of a finished instance a notification carries (PostgreSQL's limit is 8,000
/// bytes less the channel name on servers built with the default 8 kB pages, which this
/// assumes); a longer one is announced by its id, and its waiters read it.
pub(super) const FINISHED_ROW_MAX: usize = 7_900;

/// The statuses of the instances a batch finished, from the rows its statement returned
/// ([`returned_rows`]: as the statement left them, [`rows::instance_status_json`]); a row
/// that cannot be read is left out with a warning (its waiters then read it themselves).
fn finished_statuses(rows: Option<Vec<String>>) -> Vec<duractor::store::InstanceStatus> {
    rows.unwrap_or_default()
        .iter()
        .filter_map(|row| {
            rows::instance_status_json(row)
                .inspect_err(|error| tracing::warn!(%error, "the row of a finished instance a batch returned is not readable; its waiters read it"))
                .ok()
        })
        .collect()
}

/// Writes a guarded batch's plan and checks its guards in one statement, which commits on its
/// own: the turns' instances must have the history lengths the turns expect and a lease that
/// is the owner's, lapsed or nobody's, every consumed message and work item must still be
/// leased to the owner, and the ids of new instances must be free. Otherwise `duractor_refuse`
/// raises and nothing is written. The fence row records the attempt, as in every transaction
/// of the writer. `shape` is the batch's ([`GuardedShape::of`] its plan and guards). Answers
/// the rows of the instances it finished, each a JSON array ([`finished_statuses`] reads them).
async fn guarded_write(
    writer: &mut Writer,
    conn: &mut PgConnection,
    shape: GuardedShape,
    plan: &Plan,
    guards: &Guards,
    attempt: i64,
    now: i64,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    if !writer.guarded_sql.contains_key(&shape) {
        // Its statement is prepared and planned in this turn ([`Writer::warm`] did not).
        tracing::debug!(
            shape = shape.0,
            "a guarded batch shape met for the first time"
        );
    }
    statement(writer, conn, shape, plan, guards, attempt, now).await
}

/// Runs the statement of `shape` (or of every part, once a writer keeps
/// [`MAX_GUARDED_SHAPES`]) over `plan` and `guards`: [`guarded_write`], and the warm-up's runs
/// over empty lists.
async fn statement(
    writer: &mut Writer,
    conn: &mut PgConnection,
    mut shape: GuardedShape,
    plan: &Plan,
    guards: &Guards,
    attempt: i64,
    now: i64,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let all = GuardedShape(GuardedShape::ALL);
    let kept = writer
        .guarded_sql
        .keys()
        .filter(|kept| **kept != all)
        .count();
    if !writer.guarded_sql.contains_key(&shape) && kept >= MAX_GUARDED_SHAPES {
        shape = all;
    }
    let sql = writer
        .guarded_sql
        .entry(shape)
        .or_insert_with(|| shape.sql().into())
        .clone();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&writer.attempts.writer)
        .bind(attempt)
        .bind(now)
        .bind(json(&plan.history))
        .bind(&guards.consumed)
        .bind(&plan.finished)
        .bind(&guards.completed)
        .bind(json(&plan.cancelled_calls))
        .bind(json(&plan.messages))
        .bind(json(&plan.activities))
        .bind(json(&plan.updates))
        .bind(json(&guards.instances))
        .bind(&guards.owner)
        .bind(&writer.work_channel)
        // A guarded batch holds only turns and starts: one without history holds no turn.
        .bind(work_notice(plan, true))
        .bind(&writer.finished_channel)
        .bind(json(&plan.new_instances))
        .bind(json(&plan.cancelled_timers))
        .bind(&writer.finished_rows_channel)
        .fetch_one(conn)
        .await
        .map(|row| returned_rows(&row, 1))
}

/// What a batch's notification on the work channel carries ([`super::workers`]): `None` when
/// it made no work for other workers; a start handed to a worker (a batch of one op, `alone`,
/// whose plan is [`Plan::offered`]: the owner, the message id, the instance id and the
/// message); the instance id of a lone start — a batch of one op that made one new instance,
/// not leased, its first message and nothing else — for the instance's lead alone; an empty
/// payload, for every worker, otherwise.
fn work_notice(plan: &Plan, alone: bool) -> Option<String> {
    if !plan.effects.work {
        return None;
    }
    let lone_start = match (plan.new_instances.as_slice(), plan.messages.as_slice()) {
        ([created], [message]) => {
            alone
                && created.5.is_none()
                && message.1 == created.0
                && plan.history.is_empty()
                && plan.updates.is_empty()
                && plan.activities.is_empty()
        }
        _ => false,
    };
    // `offer_only_alone` left offers in batches of one op only.
    debug_assert!(
        alone || !plan.offered,
        "a start handed over in a batch of several ops"
    );
    if let (true, [message]) = (alone && plan.offered, plan.messages.as_slice())
        && let Some(owner) = &message.5
    {
        return Some(super::workers::offer_payload(
            owner, message.0, &message.1, &message.3,
        ));
    }
    Some(if lone_start {
        plan.new_instances[0].0.clone()
    } else {
        String::new()
    })
}

/// Leaves a start to be offered to another process's worker only in a batch of its own:
/// a batch's work notification hands over one message at most (any other batch notifies
/// every worker, and they claim what it left unleased).
fn offer_only_alone(ops: &mut [Op]) {
    if ops.len() == 1 {
        return;
    }
    for op in ops {
        if let Op::Create { claim, offer, .. } = op
            && *offer
        {
            *claim = None;
            *offer = false;
        }
    }
}

/// Answers a claim that did not happen with its error: the caller claims again later.
fn failed_claim(op: &mut Op, error: sqlx::Error) {
    let error = Error::from(store_error("claiming work", error));
    match op {
        Op::ClaimMessages { reply, .. } => reply.set(Err(error)),
        Op::ClaimActivities { reply, .. } => reply.set(Err(error)),
        _ => {}
    }
}

/// Takes the advisory lock of the limited activity `name` until the transaction ends, if
/// no other transaction holds it: `false` if one does. A claim never waits for the lock,
/// so it can neither deadlock against another transaction nor stall the writer behind a
/// claim whose connection hangs with the lock held; it takes nothing of that activity this
/// time, and the worker claims again soon (`FLOW_RECHECK`), while the holder takes what
/// the limits allow.
async fn try_lock_flow_rule(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('duractor.flow:' || $1, 0))",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
}

/// Whether `op` claims activities under a flow-control rule: such a claim reads what runs
/// and picks under the rule's advisory lock, which lasts as long as its transaction.
fn flow_limited(op: &Op) -> bool {
    matches!(op, Op::ClaimActivities { names, rules, .. }
        if rules.iter().any(|rule| names.contains(&rule.name)))
}

/// Runs a claim op in a transaction of its own (flushed at its commit): for a flow-limited
/// claim, whose statements must see and take work under one lock. As autocommit statements,
/// the lock ended with its own statement, and two processes claiming at once each counted
/// the other's running work as free (6 at once under a limit of 3, test
/// `a_per_customer_limit_holds_across_two_stores_on_postgresql`).
async fn claim_in_transaction(
    conn: &mut PgConnection,
    op: &mut Op,
    attempt: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    claim(&mut tx, op, ClaimCommit::WithBatch, attempt, now).await?;
    tx.commit().await
}

/// How a claim statement's transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimCommit {
    /// On its own (a batch of claims only, each statement its own transaction), without
    /// waiting for the server to flush its WAL (`synchronous_commit` off for that transaction
    /// alone): a claim only leases, and a lease the server loses in a crash is harmless. The
    /// worker may then run a turn for messages the store shows unclaimed, but the turn's
    /// commit checks that this worker holds the instance, so it either is the only one that
    /// can consume them or fails (and the instance is claimed again); an activity claimed
    /// twice runs at least once, as after any lapsed lease. Any later flushed commit (the
    /// turn's) makes the claim durable with it. Saves a claim the flush's wait: a durable
    /// timer or a start from another process reaches its turn about one floor sooner.
    Alone,
    /// Inside a batch's transaction, which commits (flushed) with the batch's writes.
    WithBatch,
}

impl ClaimCommit {
    /// The claim statement's first CTE, `commit_mode`, which the statement reads from so
    /// that it is evaluated before any row is locked.
    fn cte(self) -> &'static str {
        match self {
            ClaimCommit::Alone => {
                "commit_mode AS (SELECT set_config('synchronous_commit', 'off', true) AS mode)"
            }
            ClaimCommit::WithBatch => "commit_mode AS (SELECT NULL::text AS mode)",
        }
    }
}

/// Runs a claim op, marking the rows it takes with `attempt`, and sets its outcome; any
/// other op is left alone.
async fn claim(
    conn: &mut PgConnection,
    op: &mut Op,
    commit: ClaimCommit,
    attempt: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    match op {
        Op::ClaimMessages {
            owner,
            limit,
            lease,
            reply,
        } => {
            let claimed =
                claim_messages(conn, owner, *limit, (lease.from(now), now), commit, attempt);
            reply.set(claimed.await?)
        }
        Op::ClaimActivities {
            owner,
            names,
            rules,
            limit,
            lease,
            reply,
        } => {
            let claim = ActivityClaim {
                owner,
                names,
                rules,
                limit: *limit,
            };
            reply.set(claim_activities(conn, claim, (lease.from(now), now), commit, attempt).await?)
        }
        _ => {}
    }
    Ok(())
}

/// Runs both claim statements, as a claim-only batch runs them, asking for nothing (a limit
/// of 0 takes no row): a pooled connection's warm-up ([`super::warm_pool`]).
pub(super) async fn warm_claims(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let now = now_ms();
    claim_messages(conn, "", 0, (now, now), ClaimCommit::Alone, 0)
        .await?
        .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
    let names = [String::new()];
    let claim = ActivityClaim {
        owner: "",
        names: &names,
        rules: &[],
        limit: 0,
    };
    claim_activities(conn, claim, (now, now), ClaimCommit::Alone, 0)
        .await?
        .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
    Ok(())
}

/// Sets a claim's outcome to what attempt `attempt` took, read back by the mark it left on
/// the rows (its answer was lost after it committed).
async fn reclaimed(conn: &mut PgConnection, op: &mut Op, attempt: i64) -> Result<(), sqlx::Error> {
    match op {
        Op::ClaimMessages { owner, reply, .. } => {
            let rows = sqlx::query(
                "SELECT id, instance_id, message, execution FROM orch_queue \
                 WHERE locked_by = $1 AND claim_token = $2 ORDER BY id",
            )
            .bind(&*owner)
            .bind(attempt)
            .fetch_all(&mut *conn)
            .await?;
            reply.set(rows::messages(&rows)?);
        }
        Op::ClaimActivities { owner, reply, .. } => {
            let rows = sqlx::query(
                "SELECT id, instance_id, seq, name, input, attempt, execution, timeouts, heartbeat FROM activity_queue \
                 WHERE locked_by = $1 AND claim_token = $2 ORDER BY id",
            )
            .bind(&*owner)
            .bind(attempt)
            .fetch_all(&mut *conn)
            .await?;
            // Whether its limits held work back is not known now: say so, the worker looks
            // again soon.
            let items = rows::activity_items(&rows)?;
            reply.set(items.map(|items| ClaimedActivities {
                items,
                held_back: true,
            }));
        }
        _ => {}
    }
    Ok(())
}

#[async_trait::async_trait]
impl BatchExecutor for Writer {
    const DATABASE: &'static str = "PostgreSQL";

    /// A claim on its own is one autocommit statement, as in a batch it is one statement
    /// more of its transaction; apart, it keeps a turn's batch on the one-statement path.
    const CLAIMS_APART: bool = true;

    const IDLE_UPKEEP_EVERY: Option<Duration> = Some(GUARDED_KEEPALIVE);

    async fn idle(&mut self) {
        self.keep_guarded().await;
    }

    async fn abort(&mut self) {
        // The transaction rolls back when it is dropped.
    }

    /// The server answered (an error response): it did not commit. Anything else (the
    /// connection broke, timed out) leaves the outcome unknown.
    fn outcome_unknown(error: &sqlx::Error) -> bool {
        !matches!(error, sqlx::Error::Database(_))
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        super::is_transient(error)
    }

    async fn committed(&mut self, attempt: i64) -> Result<bool, sqlx::Error> {
        self.end_unsettled_backend().await?;
        // Upserting the fence row waits for a transaction that still holds it (one whose
        // connection broke after `COMMIT` was sent) to end either way, then reads what
        // committed.
        let batch: i64 = sqlx::query_scalar(
            "INSERT INTO writers (writer, batch, updated_at) VALUES ($1, 0, $2) \
             ON CONFLICT (writer) DO UPDATE SET updated_at = writers.updated_at \
             RETURNING batch",
        )
        .bind(&self.attempts.writer)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(batch == attempt)
    }

    async fn execute(&mut self, ops: &mut [Op]) -> Result<Effects, AttemptError> {
        let now = now_ms();
        if ops.iter().all(Op::is_claim) {
            return self.claim_only(ops, now).await;
        }
        offer_only_alone(ops);
        if let Some(effects) = self.guarded(ops, now).await? {
            return Ok(effects);
        }
        tracing::trace!(
            ops = ?ops.iter().map(Op::kind).collect::<Vec<_>>(),
            "ordinary batch"
        );
        let attempt = self.attempts.next();
        let mut tx = self.pool.begin().await?;
        let mut state = read_state(&mut tx, ops, &self.attempts.writer, attempt, now).await?;
        let mut plan = Plan::default();
        for op in ops.iter_mut() {
            plan.apply(op, &mut state, now);
        }
        let announced = write(&mut tx, &plan, ops.len() == 1, self, now).await?;
        for op in ops.iter_mut() {
            match op {
                // Last, below.
                Op::ClaimMessages { .. } | Op::ClaimActivities { .. } => {}
                Op::Renew {
                    owner,
                    held,
                    lease,
                    reply,
                } => {
                    let lost = renew(&mut tx, owner, held, lease.from(now)).await?;
                    reply.set(Ok(lost));
                }
                Op::Sync {
                    owner,
                    heartbeats,
                    running,
                    reply,
                } => {
                    let gone = sync(&mut tx, owner, heartbeats, running, now).await?;
                    reply.set(Ok(gone));
                }
                Op::Persist {
                    owner,
                    calls,
                    lease,
                    reply,
                } => {
                    let ids = persist_calls(&mut tx, owner, calls, lease.from(now)).await?;
                    reply.set(Ok(ids));
                }
                Op::Recover { reply } => {
                    let recovered = sqlx::query(RECOVER_CALLS)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    plan.effects.work |= recovered > 0;
                    reply.set(Ok(recovered));
                }
                Op::Abandon {
                    owner,
                    ids,
                    visible_at,
                    ..
                } => {
                    sqlx::query(
                        "UPDATE orch_queue SET locked_by = NULL, locked_until = NULL, visible_at = $1 \
                         WHERE id = ANY($2) AND locked_by = $3",
                    )
                    .bind(millis(*visible_at))
                    .bind(&*ids)
                    .bind(&*owner)
                    .execute(&mut *tx)
                    .await?;
                }
                Op::Purge { query, reply } => {
                    reply.set(Ok(purge(&mut tx, query).await?));
                }
                Op::CleanEntities { reply } => {
                    let cleanup = clean_entities(&mut tx, now).await?;
                    plan.effects.work |= cleanup.released_locks > 0;
                    reply.set(Ok(cleanup));
                }
                _ => {}
            }
        }
        // Claims come last: a flow-limited claim holds its rule's advisory lock until the
        // commit, and while it is held other workers take nothing of that activity (they try
        // the lock, never wait for it), so the lock is taken as late in the batch as it can be.
        for op in ops.iter_mut().filter(|op| op.is_claim()) {
            claim(&mut tx, op, ClaimCommit::WithBatch, attempt, now).await?;
        }
        if plan.effects.work && !announced.work {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(&self.work_channel)
                .execute(&mut *tx)
                .await?;
        }
        if !plan.effects.finished.is_empty() && !announced.finished {
            sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
                .bind(&self.finished_channel)
                .bind(&plan.effects.finished)
                .execute(&mut *tx)
                .await?;
        }
        match tx.commit().await {
            Ok(()) => {
                // A row a later statement of the transaction changed is not handed over (a
                // rewind sets it Pending; none can rewind an instance its batch finishes
                // today, as a rewind needs it Failed before).
                plan.effects.statuses = finished_statuses(announced.finished_rows)
                    .into_iter()
                    .filter(|status| !plan.rewound.contains(&status.instance_id))
                    .collect();
                Ok(plan.effects)
            }
            Err(error) => Err(AttemptError {
                error,
                in_commit: Some((attempt, plan.effects)),
            }),
        }
    }
}

/// Records the attempt in the writer's fence row, locks the rows the batch touches, reads
/// their state, and reserves queue ids: one statement.
async fn read_state(
    tx: &mut Transaction<'_, Postgres>,
    ops: &[Op],
    writer: &str,
    attempt: i64,
    now: i64,
) -> Result<State, sqlx::Error> {
    let touched = touched(ops);
    let (messages, items) = ids_needed(ops);
    let instance_ids: Vec<String> = touched.instances.into_iter().map(str::to_owned).collect();
    const SQL: &str = "\
        WITH fence AS (INSERT INTO writers (writer, batch, updated_at) VALUES ($5, $6, $7) \
                       ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, updated_at = excluded.updated_at), \
             i AS (SELECT instance_id, status, history_len, locked_by, locked_until FROM instances \
                   WHERE instance_id = ANY($1) ORDER BY instance_id FOR UPDATE), \
             a AS (SELECT id, locked_by FROM activity_queue WHERE id = ANY($2) ORDER BY id FOR UPDATE), \
             c AS (SELECT id, locked_by FROM orch_queue WHERE id = ANY($8) ORDER BY id FOR UPDATE) \
        SELECT 'i'::text AS kind, instance_id AS k, status AS s, history_len AS n, locked_by AS o, locked_until AS u FROM i \
        UNION ALL SELECT 'a', NULL, NULL, id, locked_by, NULL FROM a \
        UNION ALL SELECT 'c', NULL, NULL, id, locked_by, NULL FROM c \
        UNION ALL SELECT 'm', NULL, NULL, nextval('orch_queue_id_seq'), NULL, NULL FROM generate_series(1, $3) \
        UNION ALL SELECT 'q', NULL, NULL, nextval('activity_queue_id_seq'), NULL, NULL FROM generate_series(1, $4)";
    let rows = sqlx::query(SQL)
        .bind(&instance_ids)
        .bind(&touched.items)
        .bind(messages as i64)
        .bind(items as i64)
        .bind(writer)
        .bind(attempt)
        .bind(now)
        .bind(&touched.messages)
        .fetch_all(&mut **tx)
        .await?;
    let mut state = State::default();
    let (mut message_ids, mut item_ids) = (Vec::with_capacity(messages), Vec::with_capacity(items));
    for row in rows {
        let kind: String = row.try_get(0)?;
        match kind.as_str() {
            "i" => {
                state.instances.insert(
                    row.try_get(1)?,
                    InstanceState {
                        status: row.try_get(2)?,
                        history_len: row.try_get(3)?,
                        locked_by: row.try_get(4)?,
                        locked_until: row.try_get(5)?,
                    },
                );
            }
            "a" => {
                state.items.insert(row.try_get(3)?, row.try_get(4)?);
            }
            "c" => {
                state.messages.insert(row.try_get(3)?, row.try_get(4)?);
            }
            "m" => message_ids.push(row.try_get(3)?),
            _ => item_ids.push(row.try_get(3)?),
        }
    }
    state.reserve(message_ids, item_ids);
    Ok(state)
}

/// The notifications a write already queued (they are delivered at `COMMIT`).
#[derive(Default)]
struct Announced {
    work: bool,
    finished: bool,
    /// The rows of the finished instances, for this process's waiters ([`FINISHED_ROWS`]).
    finished_rows: Option<Vec<String>>,
}

/// The ordinary path's writes of a plan, one statement (binds: see [`write`]). Each join of
/// a table with a list also has the list's keys as `= ANY(ARRAY(…))`: the planner takes a
/// `jsonb_array_elements` for 100 rows whatever the list, and joined them by scanning the
/// whole table at a few thousand rows (test
/// `ordinary_writes_find_their_rows_through_an_index_in_a_large_store`); over an `ANY` it
/// reaches the rows through an index.
///
/// It announces finished instances by id ([`CORE_WRITES_WITH_ROWS`] by row): its batches
/// are the large ones, and building every finished row (`finished_rows_cte` looks each up
/// in `upd`) cost W3 on PostgreSQL (1,000 hello-3 at once, waited for by listing) 15 % of
/// its throughput, for waiters a large batch mostly does not have.
static CORE_WRITES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{CORE_WRITES_CTES}) \
         SELECT (SELECT count(pg_notify($11, $12)) FROM (SELECT 1) AS one WHERE $12 IS NOT NULL), \
                (SELECT count(pg_notify($13, id)) FROM unnest($14::text[]) AS id), NULL::text[]"
    )
});

/// [`CORE_WRITES`] announcing each finished instance by its row ([`finished_rows_cte`],
/// on the channel bound as `$17`) and returning the rows: for a batch of at most
/// [`ROWS_FOR_UPDATES`] instance updates, where a waiter's read would be a round trip in a
/// few.
static CORE_WRITES_WITH_ROWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{CORE_WRITES_CTES} RETURNING {}), {} \
         SELECT (SELECT count(pg_notify($11, $12)) FROM (SELECT 1) AS one WHERE $12 IS NOT NULL), \
                {}, {FINISHED_ROWS}",
        updated_instance_columns(),
        finished_rows_cte("$14"),
        finished_notices("$13", "$17"),
    )
});

/// The most instance updates of an ordinary batch that announces finished instances by
/// their rows ([`CORE_WRITES_WITH_ROWS`]); as many as a guarded batch may have.
const ROWS_FOR_UPDATES: usize = guarded::MAX_ROWS;

/// [`CORE_WRITES`] up to `upd`'s `RETURNING`.
const CORE_WRITES_CTES: &str = "\
        WITH new_entities AS ( \
            INSERT INTO instances (instance_id, kind, name, status, input, created_at, updated_at) \
            SELECT e->>0, 'entity', e->>1, 'Running', 'null', (e->>2)::bigint, (e->>2)::bigint \
            FROM jsonb_array_elements($1::jsonb) e ON CONFLICT (instance_id) DO NOTHING), \
        hist AS ( \
            INSERT INTO history (instance_id, idx, event) \
            SELECT e->>0, (e->>1)::bigint, e->>2 FROM jsonb_array_elements($2::jsonb) e), \
        del_msgs AS ( \
            DELETE FROM orch_queue WHERE id = ANY($3) OR instance_id = ANY($4) \
               OR (instance_id = ANY($5) AND execution IS NOT NULL)), \
        del_timers AS ( \
            /* cancelled timers' messages, unless claimed (never rows del_msgs deletes: \
               the plan lists none of instances that finish or reset their history) */ \
            DELETE FROM orch_queue q USING jsonb_array_elements($16::jsonb) c \
            WHERE q.instance_id = c->>0 AND q.execution = (c->>2)::bigint AND q.locked_by IS NULL \
              AND q.instance_id = ANY(ARRAY(SELECT c->>0 FROM jsonb_array_elements($16::jsonb) c)) \
              AND (q.message::jsonb -> 'TimerFired' ->> 'seq')::bigint = (c->>1)::bigint), \
        del_items AS ( \
            DELETE FROM activity_queue a WHERE a.id = ANY($6) OR a.instance_id = ANY($7) \
               OR (a.instance_id = ANY(ARRAY(SELECT c->>0 FROM jsonb_array_elements($15::jsonb) c)) \
                   AND EXISTS (SELECT 1 FROM jsonb_array_elements($15::jsonb) c \
                               WHERE a.instance_id = c->>0 AND a.seq = (c->>1)::bigint \
                                 AND a.execution = (c->>2)::bigint))), \
        new_msgs AS ( \
            INSERT INTO orch_queue (id, instance_id, visible_at, message, execution, locked_by, locked_until) \
            SELECT (e->>0)::bigint, e->>1, (e->>2)::bigint, e->>3, (e->>4)::bigint, e->>5, (e->>6)::bigint \
            FROM jsonb_array_elements($8::jsonb) e), \
        new_items AS ( \
            INSERT INTO activity_queue (id, instance_id, seq, name, input, execution, attempt, locked_by, locked_until, timeouts, heartbeat, flow_key, priority) \
            SELECT (e->>0)::bigint, e->>1, (e->>2)::bigint, e->>3, e->>4, (e->>5)::bigint, \
                   (e->>12)::integer + CASE WHEN e->>6 IS NULL THEN 0 ELSE 1 END, e->>6, (e->>7)::bigint, e->>8, e->>9, \
                   e->>10, (e->>11)::integer \
            FROM jsonb_array_elements($9::jsonb) e), \
        upd AS ( \
            UPDATE instances i SET \
                status = COALESCE(u.status, i.status), \
                output = CASE WHEN u.reset THEN u.output ELSE COALESCE(u.output, i.output) END, \
                failure = CASE WHEN u.reset THEN u.failure ELSE COALESCE(u.failure, i.failure) END, \
                custom_status = COALESCE(u.custom_status, i.custom_status), \
                input = COALESCE(u.input, i.input), \
                history_len = u.history_len, updated_at = u.updated_at, \
                completed_at = CASE WHEN u.reset THEN u.completed_at ELSE COALESCE(u.completed_at, i.completed_at) END, \
                locked_by = u.locked_by, locked_until = u.locked_until, \
                entity_state = CASE WHEN u.is_entity THEN u.entity_state ELSE i.entity_state END, \
                lock_owner = CASE WHEN u.is_entity THEN u.lock_owner ELSE i.lock_owner END, \
                calls = CASE WHEN u.drop_calls THEN nullif(jsonb_strip_nulls(u.calls), '{}'::jsonb) \
                             WHEN u.calls IS NULL THEN i.calls \
                             ELSE nullif((COALESCE(i.calls, '{}'::jsonb) \
                                          - ARRAY(SELECT p.key FROM jsonb_each(u.calls) AS p WHERE p.value = 'null'::jsonb)) \
                                         || jsonb_strip_nulls(u.calls), '{}'::jsonb) END \
            FROM (SELECT e->>0 AS id, e->>1 AS status, e->>2 AS output, e->>3 AS failure, \
                         e->>4 AS custom_status, (e->>5)::bigint AS history_len, (e->>6)::bigint AS updated_at, \
                         (e->>7)::bigint AS completed_at, e->>8 AS locked_by, (e->>9)::bigint AS locked_until, \
                         (e->>10)::boolean AS reset, e->>11 AS input, \
                         (e->>12)::jsonb AS calls, (e->>13)::boolean AS drop_calls, \
                         (e->>14)::boolean AS is_entity, e->>15 AS entity_state, \
                         e->>16 AS lock_owner \
                  FROM jsonb_array_elements($10::jsonb) e) AS u \
            WHERE i.instance_id = u.id \
              AND i.instance_id = ANY(ARRAY(SELECT e->>0 FROM jsonb_array_elements($10::jsonb) e))";

/// Writes a plan: the instance creations, then everything else in one statement, which also
/// queues the batch's notifications (saving a round trip per batch).
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    alone: bool,
    channels: &Writer,
    now: i64,
) -> Result<Announced, sqlx::Error> {
    let mut announced = Announced::default();
    if !plan.new_instances.is_empty() {
        sqlx::query(
            "WITH h AS (DELETE FROM history WHERE instance_id = ANY($1)), \
                  q AS (DELETE FROM orch_queue WHERE instance_id = ANY($1)), \
                  a AS (DELETE FROM activity_queue WHERE instance_id = ANY($1)) \
             INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len, locked_by, locked_until) \
             SELECT e->>0, e->>1, e->>2, 'Pending', e->>3, (e->>4)::bigint, (e->>4)::bigint, 0, e->>5, (e->>6)::bigint \
             FROM jsonb_array_elements($2::jsonb) e \
             ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name, version = excluded.version, \
               status = 'Pending', input = excluded.input, output = NULL, failure = NULL, \
               custom_status = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at, \
               completed_at = NULL, history_len = 0, locked_by = excluded.locked_by, \
               locked_until = excluded.locked_until, calls = NULL",
        )
        .bind(&plan.replaced)
        .bind(json(&plan.new_instances))
        .execute(&mut **tx)
        .await?;
    }
    if !plan.replaced.is_empty() {
        sqlx::query("DELETE FROM flow_instances WHERE instance_id = ANY($1)")
            .bind(&plan.replaced)
            .execute(&mut **tx)
            .await?;
    }
    if !plan.flow_holds.is_empty() {
        // An upsert: a row left behind (its instance purged meanwhile) never fails the batch.
        sqlx::query(
            "INSERT INTO flow_instances (instance_id, name, flow_key, priority) \
             SELECT e->>0, e->>1, e->>2, (e->>3)::integer FROM jsonb_array_elements($1::jsonb) e \
             ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name, \
               flow_key = excluded.flow_key, priority = excluded.priority, admitted = 0, \
               id = nextval(pg_get_serial_sequence('flow_instances', 'id'))",
        )
        .bind(json(&plan.flow_holds))
        .execute(&mut **tx)
        .await?;
    }
    if !plan.reset_history.is_empty() {
        // Before the new history goes in: one statement cannot delete and re-insert a key.
        sqlx::query("DELETE FROM history WHERE instance_id = ANY($1)")
            .bind(&plan.reset_history)
            .execute(&mut **tx)
            .await?;
    }
    if plan.has_core_writes() {
        let cleared: Vec<&String> = plan.finished.iter().chain(&plan.reset_history).collect();
        let statement = if plan.updates.len() <= ROWS_FOR_UPDATES {
            &CORE_WRITES_WITH_ROWS
        } else {
            &CORE_WRITES
        };
        let finished_rows = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .bind(json(&plan.new_entities))
            .bind(json(&plan.history))
            .bind(&plan.consumed)
            .bind(&plan.finished)
            .bind(&plan.reset_history)
            .bind(&plan.done_items)
            .bind(&cleared)
            .bind(json(&plan.messages))
            .bind(json(&plan.activities))
            .bind(updates_with_entities(plan))
            .bind(&channels.work_channel)
            .bind(work_notice(plan, alone))
            .bind(&channels.finished_channel)
            .bind(&plan.effects.finished)
            .bind(json(&plan.cancelled_calls))
            .bind(json(&plan.cancelled_timers))
            .bind(&channels.finished_rows_channel)
            .fetch_one(&mut **tx)
            .await
            .map(|row| returned_rows(&row, 2))?;
        announced = Announced {
            work: plan.effects.work,
            finished: true,
            finished_rows,
        };
    }
    if !plan.rewound.is_empty() {
        sqlx::query("UPDATE instances SET status = 'Pending' WHERE instance_id = ANY($1) AND status = 'Failed'")
            .bind(&plan.rewound)
            .execute(&mut **tx)
            .await?;
    }
    if plan.has_lease_writes() {
        // The calls kept in memory of instances let go become work items for anyone.
        for (instance_id, owner) in &plan.releases {
            sqlx::query(sqlx::AssertSqlSafe(let_go_calls(
                "instance_id = $1 AND locked_by = $2",
            )))
            .bind(instance_id)
            .bind(owner)
            .execute(&mut **tx)
            .await?;
        }
        for owner in &plan.release_all {
            sqlx::query(sqlx::AssertSqlSafe(let_go_calls("locked_by = $1")))
                .bind(owner)
                .execute(&mut **tx)
                .await?;
        }
        // Timers held for the owner and not due yet become ordinary queued timers (rows not
        // visible yet can only be held timers: a claim takes visible rows only).
        for (instance_id, owner) in &plan.releases {
            sqlx::query(
                "WITH q AS (UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                            WHERE instance_id = $1 AND locked_by = $2 AND visible_at > $3) \
                 UPDATE instances SET locked_by = NULL, locked_until = NULL \
                 WHERE instance_id = $1 AND locked_by = $2",
            )
            .bind(instance_id)
            .bind(owner)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        for owner in &plan.release_all {
            sqlx::query(
                "WITH i AS (UPDATE instances SET locked_by = NULL, locked_until = NULL WHERE locked_by = $1), \
                      q AS (UPDATE orch_queue SET locked_by = NULL, locked_until = NULL WHERE locked_by = $1) \
                 UPDATE activity_queue SET locked_until = 0 WHERE locked_by = $1",
            )
            .bind(owner)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(announced)
}

/// The statement making work items, for anyone, of the calls kept in memory on the
/// instances `condition` picks (locked first), which then no longer record them. A call's `attempt` is its in-memory
/// delivery's: the next claim adds one (the lost delivery may have started).
fn let_go_calls(condition: &str) -> String {
    format!(
        "WITH o AS (SELECT instance_id, calls FROM instances \
                    WHERE calls IS NOT NULL AND {condition} FOR UPDATE), \
              u AS (UPDATE instances i SET calls = NULL FROM o WHERE i.instance_id = o.instance_id) \
         INSERT INTO activity_queue (instance_id, seq, name, input, execution, attempt, \
                                     timeouts, heartbeat, priority) \
         SELECT o.instance_id, c.key::bigint, c.value->>'name', c.value->>'input', \
                (c.value->>'execution')::bigint, (c.value->>'attempt')::bigint, c.value->>'bounds', \
                c.value->>'heartbeat', COALESCE((c.value->>'priority')::integer, 0) \
         FROM o, jsonb_each(o.calls) AS c"
    )
}

/// Turns lost calls kept in memory into work items for anyone (binds: now): the calls of
/// instances whose lease lapsed, and those kept by a worker that no longer holds their
/// instance (another took the lapsed lease over). Rows another transaction holds are left for
/// the next sweep. Affects one row per call.
const RECOVER_CALLS: &str = "\
    WITH o AS (SELECT instance_id, calls, locked_by, locked_until FROM instances \
               WHERE calls IS NOT NULL AND locked_by IS NOT NULL \
                 AND (locked_until < $1 OR EXISTS (SELECT 1 FROM jsonb_each(calls) AS c \
                                                   WHERE c.value->>'owner' IS DISTINCT FROM locked_by)) \
               FOR UPDATE SKIP LOCKED), \
         lost AS (SELECT o.instance_id, c.key, c.value FROM o, jsonb_each(o.calls) AS c \
                  WHERE o.locked_until < $1 OR c.value->>'owner' IS DISTINCT FROM o.locked_by), \
         u AS (UPDATE instances i SET calls = \
                 (SELECT jsonb_object_agg(c.key, c.value) FROM jsonb_each(o.calls) AS c \
                  WHERE NOT (o.locked_until < $1 OR c.value->>'owner' IS DISTINCT FROM o.locked_by)) \
               FROM o WHERE i.instance_id = o.instance_id) \
    INSERT INTO activity_queue (instance_id, seq, name, input, execution, attempt, \
                                timeouts, heartbeat, priority) \
    SELECT lost.instance_id, lost.key::bigint, lost.value->>'name', lost.value->>'input', \
           (lost.value->>'execution')::bigint, (lost.value->>'attempt')::bigint, lost.value->>'bounds', \
           lost.value->>'heartbeat', COALESCE((lost.value->>'priority')::integer, 0) \
    FROM lost";

/// Makes work items, leased to `owner` until `lease_until`, of the calls it keeps in memory
/// that are still recorded on instances it holds; `None` for the others.
async fn persist_calls(
    tx: &mut Transaction<'_, Postgres>,
    owner: &str,
    calls: &[MemoryCall],
    lease_until: i64,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    const SQL: &str = "\
        WITH o AS (SELECT instance_id, calls -> $3::text AS call FROM instances \
                   WHERE instance_id = $2 AND locked_by = $1 AND calls ? $3::text \
                     AND (calls -> $3::text ->> 'execution')::bigint = $5 \
                     AND calls -> $3::text ->> 'owner' = $1 FOR UPDATE), \
             u AS (UPDATE instances i SET calls = nullif(i.calls - $3::text, '{}'::jsonb) \
                   FROM o WHERE i.instance_id = o.instance_id) \
        INSERT INTO activity_queue (instance_id, seq, name, input, execution, attempt, locked_by, \
                                    locked_until, timeouts, heartbeat, priority) \
        SELECT o.instance_id, $3::text::bigint, o.call->>'name', o.call->>'input', \
               (o.call->>'execution')::bigint, (o.call->>'attempt')::bigint, $1, $4, \
               o.call->>'bounds', o.call->>'heartbeat', COALESCE((o.call->>'priority')::integer, 0) \
        FROM o RETURNING id";
    let mut ids = Vec::with_capacity(calls.len());
    for call in calls {
        let id: Option<i64> = sqlx::query_scalar(SQL)
            .bind(owner)
            .bind(&call.instance_id)
            .bind(call.seq.to_string())
            .bind(lease_until)
            .bind(i64::from(call.execution))
            .fetch_optional(&mut **tx)
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Records heartbeats ($2: [id, heartbeat] of items leased to $3, at $1) and answers
/// which of the items $4 are still leased to $3. The join with the list also has the list's
/// ids as `= ANY(ARRAY(…))`, for the planner to reach them through the key ([`CORE_WRITES`]).
const SYNC_RUNNING: &str = "\
    WITH b AS (UPDATE activity_queue a SET heartbeat = e->>1, heartbeat_at = $1 \
               FROM jsonb_array_elements($2::jsonb) e \
               WHERE a.id = (e->>0)::bigint AND a.locked_by = $3 \
                 AND a.id = ANY(ARRAY(SELECT (e->>0)::bigint FROM jsonb_array_elements($2::jsonb) e))) \
    SELECT id FROM activity_queue WHERE id = ANY($4) AND locked_by = $3";

/// Stores heartbeats on the work items `owner` holds; returns the ids of `running` it no
/// longer holds.
async fn sync(
    tx: &mut Transaction<'_, Postgres>,
    owner: &str,
    heartbeats: &[(i64, String)],
    running: &[i64],
    now: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let held: Vec<i64> = sqlx::query_scalar(SYNC_RUNNING)
        .bind(now)
        .bind(json(heartbeats))
        .bind(owner)
        .bind(running)
        .fetch_all(&mut **tx)
        .await?;
    let held: std::collections::HashSet<i64> = held.into_iter().collect();
    Ok(running
        .iter()
        .copied()
        .filter(|id| !held.contains(id))
        .collect())
}

/// Extends `owner`'s leases on what it holds; returns the held instances it no longer holds.
async fn renew(
    tx: &mut Transaction<'_, Postgres>,
    owner: &str,
    held: &HeldWork,
    lease_until: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let renewed: Vec<String> = sqlx::query_scalar(
        "WITH q AS (UPDATE orch_queue SET locked_until = $2 \
                    WHERE locked_by = $1 AND instance_id = ANY($3)), \
              a AS (UPDATE activity_queue SET locked_until = $2 \
                    WHERE locked_by = $1 AND (id = ANY($4) OR instance_id = ANY($3))) \
         UPDATE instances SET locked_until = $2 WHERE locked_by = $1 AND instance_id = ANY($3) \
         RETURNING instance_id",
    )
    .bind(owner)
    .bind(lease_until)
    .bind(&held.instances)
    .bind(&held.activity_items)
    .fetch_all(&mut **tx)
    .await?;
    let renewed: std::collections::HashSet<&str> = renewed.iter().map(String::as_str).collect();
    Ok(held
        .instances
        .iter()
        .filter(|id| !renewed.contains(id.as_str()))
        .cloned()
        .collect())
}

/// The status updates of a plan with each entity's state and lock folded in: one statement
/// may update a row only once.
fn updates_with_entities(plan: &Plan) -> String {
    let entities: HashMap<&str, (&Option<String>, &Option<String>)> = plan
        .entity_updates
        .iter()
        .map(|(id, state, owner, _)| (id.as_str(), (state, owner)))
        .collect();
    let rows: Vec<serde_json::Value> = plan
        .updates
        .iter()
        .map(|update| {
            let mut row = serde_json::to_value(update).unwrap_or_default();
            if let Some(fields) = row.as_array_mut() {
                let id = fields.first().and_then(|v| v.as_str()).unwrap_or_default();
                match entities.get(id) {
                    Some((state, owner)) => {
                        fields.push(true.into());
                        fields.push(serde_json::json!(state));
                        fields.push(serde_json::json!(owner));
                    }
                    None => fields.extend([
                        false.into(),
                        serde_json::Value::Null,
                        serde_json::Value::Null,
                    ]),
                }
            }
            row
        })
        .collect();
    json(&rows)
}

/// Claims visible messages of instances no other worker holds. Instances are locked with
/// `SKIP LOCKED` before the limit applies, among a window of candidates four times the limit
/// (oldest message first), so two workers claiming at once each take up to `limit` different
/// instances instead of the second finding the first's candidates locked and taking none.
async fn claim_messages(
    conn: &mut PgConnection,
    owner: &str,
    limit: u32,
    (lease_until, now): (i64, i64),
    commit: ClaimCommit,
    attempt: i64,
) -> Result<Result<Vec<OrchestrationMessage>, Error>, sqlx::Error> {
    const SQL: &str = "\
        ready AS ( \
            SELECT q.instance_id, min(q.id) AS first FROM commit_mode, orch_queue q \
            JOIN instances i ON i.instance_id = q.instance_id \
            WHERE q.visible_at <= $3 AND (q.locked_until IS NULL OR q.locked_until < $3) \
              AND (i.locked_by IS NULL OR i.locked_by = $1 OR i.locked_until < $3) \
            GROUP BY q.instance_id ORDER BY first LIMIT $4 * 4), \
        inst AS ( \
            SELECT i.instance_id FROM instances i JOIN ready r ON r.instance_id = i.instance_id \
            WHERE i.locked_by IS NULL OR i.locked_by = $1 OR i.locked_until < $3 \
            ORDER BY r.first LIMIT $4 \
            FOR UPDATE OF i SKIP LOCKED), \
        locked AS ( \
            UPDATE instances i SET locked_by = $1, locked_until = $2 FROM inst \
            WHERE i.instance_id = inst.instance_id RETURNING i.instance_id) \
        UPDATE orch_queue q SET locked_by = $1, locked_until = $2, claim_token = $5 FROM locked \
        WHERE q.instance_id = locked.instance_id AND q.visible_at <= $3 \
          AND (q.locked_until IS NULL OR q.locked_until < $3) \
        RETURNING q.id, q.instance_id, q.message, q.execution";
    // Only the two fixed texts of `ClaimCommit::cte` are spliced in.
    let sql = sqlx::AssertSqlSafe(format!("WITH {}, {SQL}", commit.cte()));
    let rows = sqlx::query(sql)
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .bind(attempt)
        .fetch_all(&mut *conn)
        .await?;
    rows::messages(&rows)
}

/// What an activity claim asks for: up to `limit` items of `names`, under `rules`.
struct ActivityClaim<'a> {
    owner: &'a str,
    names: &'a [String],
    rules: &'a [FlowRule],
    limit: u32,
}

async fn claim_activities(
    conn: &mut PgConnection,
    claim: ActivityClaim<'_>,
    (lease_until, now): (i64, i64),
    commit: ClaimCommit,
    attempt: i64,
) -> Result<Result<ClaimedActivities, Error>, sqlx::Error> {
    let ActivityClaim {
        owner,
        names,
        rules,
        limit,
    } = claim;
    const SQL: &str = "\
        cand AS ( \
            SELECT id FROM commit_mode, activity_queue \
            WHERE (locked_until IS NULL OR locked_until < $3) AND name = ANY($6) \
            ORDER BY priority DESC, id LIMIT $4 FOR UPDATE OF activity_queue SKIP LOCKED) \
        UPDATE activity_queue a SET locked_by = $1, locked_until = $2, attempt = a.attempt + 1, \
            claim_token = $5 \
        FROM cand WHERE a.id = cand.id \
        RETURNING a.id, a.instance_id, a.seq, a.name, a.input, a.attempt, a.execution, \
            a.timeouts, a.heartbeat";
    let unlimited: Vec<&String> = names
        .iter()
        .filter(|name| !rules.iter().any(|rule| rule.name == **name))
        .collect();
    let mut items = Vec::new();
    if !unlimited.is_empty() {
        // Only the two fixed texts of `ClaimCommit::cte` are spliced in.
        let sql = sqlx::AssertSqlSafe(format!("WITH {}, {SQL}", commit.cte()));
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .bind(attempt)
            .bind(&unlimited)
            .fetch_all(&mut *conn)
            .await?;
        match rows::activity_items(&rows)? {
            Ok(claimed) => items = claimed,
            Err(error) => return Ok(Err(error)),
        }
    }
    let mut held_back = false;
    for rule in rules.iter().filter(|rule| names.contains(&rule.name)) {
        let want = (limit as usize).saturating_sub(items.len());
        if want == 0 {
            held_back = true;
            break;
        }
        let (ids, held) = limited_ids(conn, rule, want, now).await?;
        held_back |= held;
        if ids.is_empty() {
            continue;
        }
        // Rows another transaction is changing are skipped, not waited for while holding the
        // activity's advisory lock.
        let rows = sqlx::query(
            "UPDATE activity_queue a SET locked_by = $1, locked_until = $2, \
                 attempt = a.attempt + 1, claim_token = $3 \
             FROM (SELECT id FROM activity_queue WHERE id = ANY($4) \
                   AND (locked_until IS NULL OR locked_until < $5) \
                   FOR UPDATE SKIP LOCKED) free \
             WHERE a.id = free.id \
             RETURNING a.id, a.instance_id, a.seq, a.name, a.input, a.attempt, a.execution, \
                 a.timeouts, a.heartbeat",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(attempt)
        .bind(&ids)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        // A picked row another transaction was changing stays waiting.
        held_back |= rows.len() < ids.len();
        match rows::activity_items(&rows)? {
            Ok(claimed) => items.extend(claimed),
            Err(error) => return Ok(Err(error)),
        }
    }
    Ok(Ok(ClaimedActivities { items, held_back }))
}

/// The waiting items of a limited activity a claim may take now ([`flow::pick`]), after
/// taking the activity's advisory lock: claims of one limited activity run one at a time
/// across workers (until the claiming transaction ends), so each counts what the one before
/// took. None while another transaction holds the lock ([`try_lock_flow_rule`]), which
/// counts as holding work back. Records the starts a rate counts. Also says whether the limits
/// held any waiting item back.
async fn limited_ids(
    conn: &mut PgConnection,
    rule: &FlowRule,
    want: usize,
    now: i64,
) -> Result<(Vec<i64>, bool), sqlx::Error> {
    if !try_lock_flow_rule(conn, &rule.name).await? {
        return Ok((Vec::new(), true));
    }
    let mut usage = FlowUsage::default();
    let running: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT flow_key, count(*) FROM activity_queue \
         WHERE name = $1 AND locked_until >= $2 GROUP BY flow_key",
    )
    .bind(&rule.name)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    usage.running = counts(running);
    if let Some(rate) = rule.limits.rate {
        count_starts(conn, &rule.name, rate, now, &mut usage).await?;
    }
    let candidates: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT id, flow_key FROM ( \
             SELECT id, flow_key, priority, \
                 row_number() OVER (PARTITION BY flow_key ORDER BY priority DESC, id) AS rn \
             FROM activity_queue \
             WHERE name = $1 AND (locked_until IS NULL OR locked_until < $2)) c \
         WHERE rn <= $3 ORDER BY priority DESC, id",
    )
    .bind(&rule.name)
    .bind(now)
    .bind(i64::try_from(flow::per_key_window(&rule.limits, want)).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let picked = flow::pick(&rule.limits, &candidates, &usage, want);
    if rule.limits.rate.is_some() {
        record_starts(conn, &rule.name, &candidates, &picked, now).await?;
    }
    let held = picked.len() < candidates.len();
    Ok((picked, held))
}

fn counts(rows: Vec<(Option<String>, i64)>) -> std::collections::HashMap<Option<String>, u32> {
    rows.into_iter()
        .map(|(key, count)| (key, saturate(count)))
        .collect()
}

pub(crate) fn saturate(count: i64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Deletes finished orchestration instances matching `query` with everything they own.
async fn purge(tx: &mut Transaction<'_, Postgres>, query: &PurgeQuery) -> Result<u64, sqlx::Error> {
    let statuses: Vec<&str> = RuntimeStatus::ALL
        .iter()
        .filter(|s| s.is_terminal() && (query.statuses.is_empty() || query.statuses.contains(s)))
        .map(|s| s.as_str())
        .collect();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT instance_id FROM instances \
         WHERE kind = 'orchestration' AND status = ANY($1) \
           AND ($2::text IS NULL OR instance_id = $2) \
           AND ($3::bigint IS NULL OR created_at >= $3) \
           AND ($4::bigint IS NULL OR created_at < $4) \
         FOR UPDATE",
    )
    .bind(&statuses)
    .bind(query.instance_id.as_deref())
    .bind(query.created_from.map(millis))
    .bind(query.created_to.map(millis))
    .fetch_all(&mut **tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "WITH h AS (DELETE FROM history WHERE instance_id = ANY($1)), \
              q AS (DELETE FROM orch_queue WHERE instance_id = ANY($1)), \
              a AS (DELETE FROM activity_queue WHERE instance_id = ANY($1)), \
              f AS (DELETE FROM flow_instances WHERE instance_id = ANY($1)) \
         DELETE FROM instances WHERE instance_id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len() as u64)
}

/// Releases locks of finished (or gone) orchestrations through an `EntityUnlock` message, and
/// removes entities with no state, no lock and no pending message.
async fn clean_entities(
    tx: &mut Transaction<'_, Postgres>,
    now: i64,
) -> Result<EntityCleanup, sqlx::Error> {
    let released = sqlx::query(
        "INSERT INTO orch_queue (instance_id, visible_at, message) \
         SELECT e.instance_id, $1, json_build_object('EntityUnlock', json_build_object('owner', e.lock_owner))::text \
         FROM instances e \
         WHERE e.kind = 'entity' AND e.lock_owner IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.instance_id = e.lock_owner \
                           AND o.status IN ('Pending', 'Running', 'Suspended'))",
    )
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let removed = sqlx::query(
        "DELETE FROM instances i WHERE kind = 'entity' AND entity_state IS NULL AND lock_owner IS NULL \
           AND NOT EXISTS (SELECT 1 FROM orch_queue q WHERE q.instance_id = i.instance_id)",
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(EntityCleanup {
        removed_empty: removed,
        released_locks: released,
    })
}

/// Lets held instances of the orchestrators in `rules` run as far as their limits allow
/// (see `Store::admit_instances`), after taking each orchestrator's advisory lock: admissions
/// of one orchestrator run one at a time across workers (until the transaction ends), so each
/// counts what the one before let run.
pub(super) async fn admit(
    tx: &mut Transaction<'_, Postgres>,
    rules: &[FlowRule],
    now: i64,
) -> Result<Admission, sqlx::Error> {
    let mut admission = Admission::default();
    // In name order, whatever order the caller gives (see `claim_activities`).
    let mut rules: Vec<&FlowRule> = rules.iter().collect();
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    for rule in rules {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('duractor.flow.orchestrator:' || $1, 0))",
        )
        .bind(&rule.name)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "DELETE FROM flow_instances f WHERE f.name = $1 AND f.admitted = 1 AND NOT EXISTS ( \
               SELECT 1 FROM instances i WHERE i.instance_id = f.instance_id AND i.name = f.name \
                 AND i.status IN ('Pending', 'Running', 'Suspended'))",
        )
        .bind(&rule.name)
        .execute(&mut **tx)
        .await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM flow_instances WHERE name = $1 AND admitted = 0",
        )
        .bind(&rule.name)
        .fetch_one(&mut **tx)
        .await?;
        if held == 0 {
            continue;
        }
        // Held instances being terminated go at once, whatever the limits, and no longer count.
        let terminated: Vec<String> = sqlx::query_scalar(
            "DELETE FROM flow_instances f WHERE f.name = $1 AND f.admitted = 0 AND EXISTS ( \
               SELECT 1 FROM orch_queue q WHERE q.instance_id = f.instance_id \
                 AND q.message LIKE '{\"ExecutionTerminated\"%') \
             RETURNING f.instance_id",
        )
        .bind(&rule.name)
        .fetch_all(&mut **tx)
        .await?;
        let mut usage = FlowUsage::default();
        let running: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT flow_key, count(*) FROM flow_instances \
             WHERE name = $1 AND admitted = 1 GROUP BY flow_key",
        )
        .bind(&rule.name)
        .fetch_all(&mut **tx)
        .await?;
        usage.running = counts(running);
        let starts = flow::orchestrator_starts(&rule.name);
        if let Some(rate) = rule.limits.rate {
            count_starts(tx, &starts, rate, now, &mut usage).await?;
        }
        let candidates: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT id, flow_key FROM ( \
                 SELECT id, flow_key, priority, \
                     row_number() OVER (PARTITION BY flow_key ORDER BY priority DESC, id) AS rn \
                 FROM flow_instances WHERE name = $1 AND admitted = 0) c \
             WHERE rn <= $2 ORDER BY priority DESC, id",
        )
        .bind(&rule.name)
        .bind(i64::try_from(flow::per_key_window(&rule.limits, usize::MAX)).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
        let picked = flow::pick(&rule.limits, &candidates, &usage, usize::MAX);
        admission.waiting += (held as u64).saturating_sub((terminated.len() + picked.len()) as u64);
        if rule.limits.rate.is_some() {
            record_starts(tx, &starts, &candidates, &picked, now).await?;
        }
        let mut admitted: Vec<String> = sqlx::query_scalar(
            "UPDATE flow_instances SET admitted = 1 WHERE id = ANY($1) RETURNING instance_id",
        )
        .bind(&picked)
        .fetch_all(&mut **tx)
        .await?;
        admitted.extend(terminated);
        if admitted.is_empty() {
            continue;
        }
        sqlx::query(
            "WITH q AS (UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                        WHERE instance_id = ANY($1) AND locked_by = $2) \
             UPDATE instances SET locked_by = NULL, locked_until = NULL \
             WHERE instance_id = ANY($1) AND locked_by = $2",
        )
        .bind(&admitted)
        .bind(FLOW_HOLD_OWNER)
        .execute(&mut **tx)
        .await?;
        admission.admitted.extend(admitted);
    }
    Ok(admission)
}

/// Counts the starts of `name` a rate sees now, per key: within its period and within its
/// current tenth ([`flow::tenth_start`]), forgetting older ones.
async fn count_starts(
    conn: &mut PgConnection,
    name: &str,
    rate: flow::Rate,
    now: i64,
    usage: &mut FlowUsage,
) -> Result<(), sqlx::Error> {
    let period = i64::try_from(rate.period_ms).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM flow_starts WHERE name = $1 AND started_at <= $2")
        .bind(name)
        .bind(now.saturating_sub(period))
        .execute(&mut *conn)
        .await?;
    let started: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT flow_key, count(*), count(*) FILTER (WHERE started_at >= $2) \
         FROM flow_starts WHERE name = $1 GROUP BY flow_key",
    )
    .bind(name)
    .bind(flow::tenth_start(now, rate.period_ms))
    .fetch_all(&mut *conn)
    .await?;
    for (key, in_period, in_tenth) in started {
        usage
            .started_in_period
            .insert(key.clone(), saturate(in_period));
        usage.started_in_tenth.insert(key, saturate(in_tenth));
    }
    Ok(())
}

/// Records, for a rate of `name`, the starts of the `picked` among `candidates`.
async fn record_starts(
    conn: &mut PgConnection,
    name: &str,
    candidates: &[(i64, Option<String>)],
    picked: &[i64],
    now: i64,
) -> Result<(), sqlx::Error> {
    let keys: Vec<Option<String>> = candidates
        .iter()
        .filter(|(id, _)| picked.contains(id))
        .map(|(_, key)| key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO flow_starts (name, flow_key, started_at) \
         SELECT $1, k, $2 FROM unnest($3::text[]) k",
    )
    .bind(name)
    .bind(now)
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;

    /// Whether `sql` refers to parameter `$n` (not to `$n0` or `$n1`).
    fn refers_to(sql: &str, n: usize) -> bool {
        let param = format!("${n}");
        sql.match_indices(&param)
            .any(|(at, _)| !sql[at + param.len()..].starts_with(|c: char| c.is_ascii_digit()))
    }

    /// A batch with rows in one list gets the part that writes or checks that list (the
    /// parameters it binds it at) and nothing else; a batch with rows in every list gets
    /// every part.
    #[test]
    fn each_list_with_rows_gets_its_part() {
        let guards = || Guards {
            owner: "w".to_owned(),
            instances: Vec::new(),
            consumed: Vec::new(),
            completed: Vec::new(),
            absent: Vec::new(),
        };
        type Fill = fn(&mut Plan, &mut Guards);
        let lists: [(&str, Fill, &[usize]); 11] = [
            (
                "history",
                |p, _| p.history.push(("i".into(), 0, "e".into())),
                &[4],
            ),
            ("consumed messages", |_, g| g.consumed.push(1), &[5, 13]),
            (
                "finished instances",
                |p, _| p.finished.push("i".into()),
                &[6, 16],
            ),
            ("completed work items", |_, g| g.completed.push(1), &[7, 13]),
            (
                "cancelled calls",
                |p, _| p.cancelled_calls.push(("i".into(), 1, 0)),
                &[8],
            ),
            (
                "new messages",
                |p, _| {
                    p.messages
                        .push((1, "i".into(), 0, "m".into(), None, None, None))
                },
                &[9],
            ),
            (
                "new work items",
                |p, _| {
                    p.activities.push((
                        1,
                        "i".into(),
                        1,
                        "a".into(),
                        "1".into(),
                        0,
                        None,
                        None,
                        None,
                        None,
                        None,
                        0,
                        0,
                    ))
                },
                &[10],
            ),
            (
                "turned instances",
                |_, g| g.instances.push(("i".into(), 0)),
                &[11, 12, 13],
            ),
            ("work to announce", |p, _| p.effects.work = true, &[14, 15]),
            (
                "new instances",
                |p, _| {
                    p.new_instances.push((
                        "i".into(),
                        "o".into(),
                        String::new(),
                        "1".into(),
                        0,
                        None,
                        None,
                    ))
                },
                // An instance its first turn creates is inserted from that turn's update.
                &[17, 11],
            ),
            (
                "cancelled timers",
                |p, _| p.cancelled_timers.push(("i".into(), 1, 0)),
                &[18],
            ),
        ];
        let always = [1, 2, 3];
        let empty = GuardedShape::of(&Plan::default(), &guards()).sql();
        let (mut full_plan, mut full_guards) = (Plan::default(), guards());
        for (name, fill, params) in lists {
            let (mut plan, mut guards) = (Plan::default(), guards());
            fill(&mut plan, &mut guards);
            fill(&mut full_plan, &mut full_guards);
            let sql = GuardedShape::of(&plan, &guards).sql();
            for n in 1..=18 {
                let expected = always.contains(&n) || params.contains(&n);
                assert_eq!(refers_to(&sql, n), expected, "{name}: ${n} in {sql}");
                assert_eq!(refers_to(&empty, n), always.contains(&n), "${n} in {empty}");
            }
        }
        assert_eq!(
            GuardedShape::of(&full_plan, &full_guards),
            GuardedShape(GuardedShape::ALL)
        );
    }

    /// A store on a schema of its own (`{prefix}_{pid}`, migrated) on the test server, and a
    /// connection whose search path is that schema; `None` (with a notice naming `test`)
    /// when `DURACTOR_TEST_POSTGRES_URL` is not set.
    async fn test_schema(
        prefix: &str,
        test: &str,
    ) -> Option<(super::super::PostgresStore, PgConnection)> {
        let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
            println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping the {test} test");
            return None;
        };
        let schema = format!("{prefix}_{}", std::process::id());
        let store = super::super::PostgresStore::connect_with(
            &url,
            super::super::PostgresStoreOptions {
                schema: schema.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET search_path = \"{schema}\""
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        Some((store, conn))
    }

    /// A writer on the schema `{prefix}_{pid}` (made by [`test_schema`]) with its guarded
    /// connection, not warmed yet.
    async fn test_writer(prefix: &str) -> Writer {
        let url = std::env::var("DURACTOR_TEST_POSTGRES_URL").unwrap();
        let schema = format!("{prefix}_{}", std::process::id());
        let options = url
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", schema.as_str())])
            .options(GUARDED_SETTINGS)
            .statement_cache_capacity(GUARDED_STATEMENTS);
        Writer {
            pool: PgPool::connect_with(options.clone()).await.unwrap(),
            work_channel: format!("{prefix}_work"),
            finished_channel: format!("{prefix}_finished"),
            finished_rows_channel: format!("{prefix}_finished_rows"),
            attempts: Attempts::new(),
            message_ids: Vec::new(),
            item_ids: Vec::new(),
            guarded_conn: Some(GuardedConnection::connect(&options).await.unwrap()),
            guarded_options: options,
            guarded_failures: 0,
            guarded_retry_at: None,
            unsettled_backend: None,
            guarded_sql: HashMap::new(),
        }
    }

    /// How many guarded statements are prepared on the writer's guarded connection, and
    /// how many of them have their generic plan made.
    async fn planned(writer: &mut Writer) -> Vec<(String, i64)> {
        let guarded = writer
            .guarded_conn
            .as_mut()
            .expect("the writer has a guarded connection");
        sqlx::query_as(
            "SELECT statement, generic_plans FROM pg_prepared_statements \
             WHERE statement LIKE '/* duractor: a guarded batch%'",
        )
        .fetch_all(&mut guarded.conn)
        .await
        .unwrap()
    }

    /// While the writer idles, a guarded connection whose server process was ended is
    /// found by its ping and replaced, and the new one has the common statements planned
    /// before any turn needs them. Needs `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn an_idle_writer_replaces_a_guarded_connection_the_server_ended() {
        let Some((store, mut conn)) = test_schema("t_guarded_keep", "guarded keep-alive").await
        else {
            return;
        };
        let mut writer = test_writer("t_guarded_keep").await;
        writer.warm().await;
        let ended = writer.guarded_conn.as_ref().unwrap().backend.pid;
        let gone: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(ended)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(gone);
        // A connection in use is left alone; one idle for the keep-alive period is pinged.
        writer.keep_guarded().await;
        assert_eq!(writer.guarded_conn.as_ref().unwrap().backend.pid, ended);
        writer.guarded_conn.as_mut().unwrap().used_at =
            Instant::now().checked_sub(GUARDED_KEEPALIVE).unwrap();
        writer.keep_guarded().await;
        let replaced = writer
            .guarded_conn
            .as_ref()
            .expect("the writer connected again")
            .backend
            .pid;
        assert_ne!(replaced, ended);
        let planned = planned(&mut writer).await;
        assert_eq!(planned.len(), GuardedShape::COMMON.len(), "{planned:?}");
        store.drop_schema().await.unwrap();
    }

    /// Warming a guarded connection leaves every common shape's statement prepared on it
    /// with its generic plan made, and writes nothing (it runs them in a transaction it
    /// rolls back). Needs `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn warming_plans_the_common_shapes_and_writes_nothing() {
        let Some((store, mut conn)) = test_schema("t_guarded_warm", "guarded warm-up").await else {
            return;
        };
        let mut writer = test_writer("t_guarded_warm").await;
        writer.warm().await;
        let planned = planned(&mut writer).await;
        assert_eq!(planned.len(), GuardedShape::COMMON.len(), "{planned:?}");
        for bits in GuardedShape::COMMON {
            let sql = GuardedShape(bits).sql();
            assert!(
                planned
                    .iter()
                    .any(|(statement, plans)| *statement == sql && *plans == 1),
                "shape {bits:#x} was not planned: {planned:?}"
            );
        }
        let written: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM writers) + (SELECT count(*) FROM instances) \
                  + (SELECT count(*) FROM history) + (SELECT count(*) FROM orch_queue)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(written, 0, "warming wrote rows");
        store.drop_schema().await.unwrap();
    }

    /// Every shape's statement must be one the server accepts (each part refers only to parts
    /// the shape has): each is prepared against the real schema, with the parameter types
    /// [`guarded_write`] binds. Needs `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn every_guarded_shape_prepares_against_the_schema() {
        let Some((store, mut conn)) = test_schema("t_guarded_shapes", "guarded shapes").await
        else {
            return;
        };
        const TYPES: &str = "text, bigint, bigint, text, bigint[], text[], bigint[], text, text, \
                             text, text, text, text, text, text, text, text, text";
        let mut sizes = Vec::new();
        for bits in 0..=GuardedShape::ALL {
            let sql = GuardedShape(bits).sql();
            sizes.push(sql.len());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PREPARE shape ({TYPES}) AS {sql}; DEALLOCATE shape"
            )))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("shape {bits:#x}: {e}\n{sql}"));
        }
        // A shape has only its parts: the empty one is the fence and the check.
        assert!(
            sizes[0] < sizes[usize::from(GuardedShape::ALL)] / 5,
            "{sizes:?}"
        );
        store.drop_schema().await.unwrap();
    }

    /// A generic plan is made without the lists' lengths: the planner takes each
    /// `jsonb_array_elements` for 100 rows, and on a table of some thousands of rows it
    /// joined them by scanning the whole table (a guarded turn cost 2.9 ms against 0.3 ms
    /// at 10,000 instances). With the guarded connection's settings every shape's statement
    /// must reach the rows of a large store through an index. Needs
    /// `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn every_guarded_shape_finds_its_rows_through_an_index_in_a_large_store() {
        let Some((store, mut conn)) = test_schema("t_guarded_plans", "guarded plans").await else {
            return;
        };
        for (name, value) in GUARDED_SETTINGS {
            sqlx::query("SELECT set_config($1, $2, false)")
                .bind(name)
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        const TYPES: &str = "text, bigint, bigint, text, bigint[], text[], bigint[], text, text, \
                             text, text, text, text, text, text, text, text, text, text";
        let nulls = vec!["NULL"; 19].join(", ");
        // Without the settings, a turn's shape scanned `instances` at 10,000 rows (and not
        // at 20,000, where 100 lookups cost less than the scan).
        let mut stored = 0_i32;
        for size in [2_000, 10_000] {
            fill_store(&mut conn, stored + 1, size).await;
            stored = size;
            for bits in 0..=GuardedShape::ALL {
                let what = format!("at {size} instances, shape {bits:#x}");
                let sql = GuardedShape(bits).sql();
                assert_no_scan(&mut conn, &what, TYPES, &sql, &nulls).await;
            }
        }
        store.drop_schema().await.unwrap();
    }

    /// Explains `sql` (parameters of `types`) run with `values`, planned as the connection's
    /// settings plan it, and fails if the plan scans a table; `what` names the statement.
    async fn assert_no_scan(
        conn: &mut PgConnection,
        what: &str,
        types: &str,
        sql: &str,
        values: &str,
    ) {
        let plan: Vec<String> = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE checked ({types}) AS {sql}; EXPLAIN EXECUTE checked ({values}); \
             DEALLOCATE checked"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"))
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
        assert!(
            plan.iter().all(|line| !line.contains("Seq Scan")),
            "{what} scans a table:\n{}\n{sql}",
            plan.join("\n")
        );
    }

    /// Fills the store of `conn` with instances `from..=to`, eight history rows, a message and
    /// a work item each, and analyzes it.
    async fn fill_store(conn: &mut PgConnection, from: i32, to: i32) {
        for fill in [
            "INSERT INTO instances (instance_id, name, status, input, created_at, updated_at, \
                                    history_len) \
               SELECT 'i' || g, 'o', 'Completed', 'null', g, g, 8 FROM generate_series($1, $2) g",
            "INSERT INTO history (instance_id, idx, event) \
               SELECT 'i' || g, i, '{}' FROM generate_series($1, $2) g, generate_series(0, 7) i",
            "INSERT INTO orch_queue (instance_id, visible_at, message) \
               SELECT 'i' || g, g, '{}' FROM generate_series($1, $2) g",
            "INSERT INTO activity_queue (instance_id, seq, name, input) \
               SELECT 'i' || g, 1, 'a', 'null' FROM generate_series($1, $2) g",
        ] {
            sqlx::query(fill)
                .bind(from)
                .bind(to)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql("ANALYZE").execute(&mut *conn).await.unwrap();
    }

    /// The ordinary path's statements over one-row lists (a batch of one turn, planned for
    /// its values) reach the rows of a large store through an index: without the `ANY`s, the
    /// instance update and the cancelled timers' delete scanned their tables at 10,000 rows.
    /// Needs `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn ordinary_writes_find_their_rows_through_an_index_in_a_large_store() {
        let Some((store, mut conn)) = test_schema("t_ordinary_plans", "ordinary plans").await
        else {
            return;
        };
        const CORE_TYPES: &str = "jsonb, jsonb, bigint[], text[], text[], bigint[], text[], \
                                  jsonb, jsonb, jsonb, text, text, text, text[], jsonb, jsonb, text";
        const CORE_VALUES: &str = r#"'[["e1", "e", 1]]', '[["i1", 8, "{}"]]', '{1}', '{i2}', '{i3}', '{1}', '{i2}',
                   '[[99999999, "i1", 1, "{}", 0, null, null]]', '[]',
                   '[["i1", "Running", null, null, null, 10, 1, null, "w", 2, false, null,
                      "{\"1\": null}", false, false, null, null]]',
                   'c', NULL, 'd', '{i2}', '[["i1", 1, 0]]', '[["i1", 1, 0]]', 'r'"#;
        let statements = [
            (CORE_WRITES.as_str(), CORE_TYPES, CORE_VALUES),
            (CORE_WRITES_WITH_ROWS.as_str(), CORE_TYPES, CORE_VALUES),
            (
                SYNC_RUNNING,
                "bigint, jsonb, text, bigint[]",
                r#"1, '[[1, "beat"]]', 'w', '{1}'"#,
            ),
        ];
        let mut stored = 0_i32;
        for size in [2_000, 10_000] {
            fill_store(&mut conn, stored + 1, size).await;
            stored = size;
            for (sql, types, values) in statements {
                let what = format!("at {size} instances, a statement");
                assert_no_scan(&mut conn, &what, types, sql, values).await;
            }
        }
        store.drop_schema().await.unwrap();
    }

    /// The names of the activities a claim by `w` takes now (of `names`, under `rules`), in a
    /// transaction of its own; fails if the claim waits for more than 5 s.
    async fn claimed_names(
        conn: &mut PgConnection,
        names: &[String],
        rules: &[FlowRule],
    ) -> Vec<String> {
        let mut tx = conn.begin().await.unwrap();
        let claim = ActivityClaim {
            owner: "w",
            names,
            rules,
            limit: 10,
        };
        let claimed = claim_activities(&mut tx, claim, (i64::MAX, 1), ClaimCommit::WithBatch, 1);
        let items = tokio::time::timeout(Duration::from_secs(5), claimed)
            .await
            .expect("the claim waited")
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        items.items.into_iter().map(|item| item.name).collect()
    }

    /// A limited claim does not wait for its rule's lock while another transaction holds it:
    /// it takes the unlimited work at once and none of the limited; once the lock is free, it
    /// takes the limited work too. Needs `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn a_limited_claim_does_not_wait_for_a_rule_another_claim_holds() {
        let Some((store, mut conn)) = test_schema("t_flow_lock", "flow lock").await else {
            return;
        };
        sqlx::raw_sql(
            "INSERT INTO activity_queue (instance_id, seq, name, input) \
             VALUES ('i', 0, 't_flow_lock_limited', 'null'), ('i', 1, 'free', 'null')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let url = std::env::var("DURACTOR_TEST_POSTGRES_URL").unwrap();
        let mut holder = PgConnection::connect(&url).await.unwrap();
        let mut held = holder.begin().await.unwrap();
        assert!(
            try_lock_flow_rule(&mut held, "t_flow_lock_limited")
                .await
                .unwrap()
        );
        let names = ["t_flow_lock_limited".to_owned(), "free".to_owned()];
        let rules = [FlowRule {
            name: names[0].clone(),
            limits: duractor::flow::FlowControl {
                concurrency: Some(1),
                rate: None,
                key: None,
            },
        }];
        assert_eq!(claimed_names(&mut conn, &names, &rules).await, ["free"]);
        held.rollback().await.unwrap();
        assert_eq!(
            claimed_names(&mut conn, &names, &rules).await,
            ["t_flow_lock_limited"]
        );
        store.drop_schema().await.unwrap();
    }

    /// A claim on its own commits without waiting for the WAL flush; a claim inside a batch
    /// leaves the batch's commit flushed (the turns it carries must be durable when
    /// answered). Read in the claim's own transaction, after it took a message. Needs
    /// `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn only_a_claim_on_its_own_commits_unflushed() {
        let Some((store, mut conn)) = test_schema("t_claim_commit", "claim commit").await else {
            return;
        };
        sqlx::raw_sql(
            "INSERT INTO instances (instance_id, name, status, input, created_at, updated_at) \
                 VALUES ('i', 'o', 'Pending', 'null', 0, 0); \
             INSERT INTO orch_queue (instance_id, visible_at, message) VALUES ('i', 0, '{}')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (commit, expected) in [(ClaimCommit::WithBatch, "on"), (ClaimCommit::Alone, "off")] {
            let mut tx = conn.begin().await.unwrap();
            let claimed = claim_messages(&mut tx, "w", 10, (i64::MAX, 1), commit, 1).await;
            // The message is not a valid event: what matters is that the claim took it.
            drop(claimed.unwrap());
            let locked: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orch_queue WHERE locked_by = 'w'")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            assert_eq!(locked, 1, "{commit:?}");
            let mode: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(mode, expected, "{commit:?}");
            tx.rollback().await.unwrap();
        }
        store.drop_schema().await.unwrap();
    }
}
