//! The SQLite writer: one thread, one connection, group commit.
//!
//! Store calls arrive as [`Op`]s. The writer takes every op waiting when it is free (up to
//! `max_batch`) and commits them in one `BEGIN IMMEDIATE` transaction:
//!
//! 1. one read: the state of every instance and work item the batch touches (lease owner,
//!    history length, status) and the queue id counters — one statement;
//! 2. validation in Rust: duplicate instance ids, lost leases, history that moved on;
//! 3. the writes of all ops merged into one statement per kind, each over a JSON array bound
//!    as one parameter (`INSERT … SELECT … FROM json_each(?)`), sent as one multi-statement
//!    call;
//! 4. claims (`UPDATE … RETURNING`), then `COMMIT`.
//!
//! That is 2–5 round trips to SQLite per *batch*, whatever the number of ops in it. A small
//! batch of plain turns and starts (most of them when work runs one operation at a time)
//! takes one statement: it is planned on what it assumes instead of a read, and one row
//! inserted into a temporary view runs a trigger that checks those assumptions and then
//! writes (`Writer::guarded`, `Shape`). That statement runs on a second connection this
//! thread steps itself ([`Direct`]); on sqlx's connection each round trip, and each statement
//! and row within one, is an answer sent across threads by sqlx's connection thread, and a
//! wake-up of this one. The writer looks for the next op for a moment before it parks
//! (`BatchExecutor::IDLE_SPIN`). Replies are sent after the commit. A busy database (another
//! process writing) is retried with backoff; other failures fail every op of the batch with
//! the database's message.
//!
//! Multi-statement strings use positional `?` parameters only, bound in order of appearance:
//! sqlx-sqlite binds a statement that uses `?3` but not `?1`/`?2` as if those were positional
//! ones, shifting every later statement's arguments.

use duractor::flow::{self, FlowRule, FlowUsage};
use duractor::store::{
    Admission, ClaimedActivities, EntityCleanup, FLOW_HOLD_OWNER, HeldWork, InstanceStatus,
    MemoryCall, OrchestrationMessage, PurgeQuery, StoreEvents,
};
use duractor::{Error, RuntimeStatus};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Executor as _, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::direct::{Direct, Value};
use crate::batch::guarded;
use crate::batch::{
    AttemptError, Attempts, BatchExecutor, Effects, InstanceState, Op, Plan, State, ids_needed,
    run_writer, touched,
};
use crate::common::{json, millis, now_ms};
use crate::rows;

pub(super) struct Writer {
    conn: SqliteConnection,
    /// The connection guarded batches run on, stepped on this thread ([`Direct`]): their
    /// views, triggers and prepared inserts live there.
    direct: Direct,
    attempts: Attempts,
    /// The queue ids (messages, work items) a guarded batch takes next: past every id this
    /// writer has reserved. Its guard checks that no other process has taken ids this far
    /// (`None` until an ordinary batch has read the counters, and after a refused batch).
    next_ids: Option<(i64, i64)>,
    /// The `INSERT` of each guarded batch shape whose view and trigger exist on the
    /// connection.
    shapes: HashMap<Shape, Arc<str>>,
    /// The merged writes' SQL for each set of non-empty lists (and whether `COMMIT` rides
    /// along), composed once.
    core_sql: HashMap<(u16, bool), Arc<str>>,
    /// Who waits for which instance to finish: a guarded batch finishing one reads its row
    /// in the same round trip.
    events: Arc<StoreEvents>,
}

impl Writer {
    /// A writer on `conn` and `direct` (a second write connection to the same file) that
    /// has prepared nothing yet ([`Writer::warm`]).
    fn new(conn: SqliteConnection, direct: Direct, events: Arc<StoreEvents>) -> Writer {
        Writer {
            conn,
            direct,
            attempts: Attempts::new(),
            next_ids: None,
            shapes: HashMap::new(),
            core_sql: HashMap::new(),
            events,
        }
    }

    /// Starts the writer thread; it runs until every sender is dropped. `warmed` is told once
    /// the common shapes' statements are prepared ([`Writer::warm`]), before the first batch.
    pub(super) fn spawn(
        conn: SqliteConnection,
        direct: Direct,
        checkpointer: SqliteConnection,
        rx: mpsc::UnboundedReceiver<Op>,
        events: Arc<StoreEvents>,
        max_batch: usize,
        warmed: tokio::sync::oneshot::Sender<()>,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("duractor-sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(checkpoint(checkpointer));
                    let mut writer = Writer::new(conn, direct, events.clone());
                    writer.warm();
                    let _ = warmed.send(());
                    run_writer(writer, rx, events, max_batch).await;
                });
            })?;
        Ok(())
    }
}

/// The rows of the instances whose ids the JSON list bound names, each as a JSON array of
/// [`rows::INSTANCE_COLUMNS`]: read for their waiters after the commit that finished them
/// ([`Writer::read_finished`]), or right after a guarded batch's statement.
static READ_FINISHED: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT json_array({}) FROM instances WHERE instance_id IN (SELECT value FROM json_each(?))",
        rows::INSTANCE_COLUMNS
    )
    .into()
});

/// The statuses of the finished instances `ids` names, read on the direct connection
/// ([`READ_FINISHED`]); a row that cannot be read is left out (its waiters read it
/// themselves).
fn read_finished_rows<Id: serde::Serialize>(
    direct: &mut Direct,
    ids: &[Id],
) -> Result<Vec<InstanceStatus>, sqlx::Error> {
    let rows = direct.texts(&READ_FINISHED, &[json(ids).into()])?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            rows::instance_status_json(row)
                .inspect_err(|error| tracing::warn!(%error, "a finished instance's row is not readable; its waiters read it"))
                .ok()
        })
        .collect())
}

#[async_trait::async_trait]
impl BatchExecutor for Writer {
    const DATABASE: &'static str = "SQLite";

    /// The next op of a one-at-a-time caller (the next turn of an instance, after its
    /// activity ran) comes within tens of microseconds of the answer to the last.
    const IDLE_SPIN: Duration = Duration::from_micros(200);

    /// A claim (a poll's, a wake-up's) in a turn's batch would send the turn down the
    /// ordinary path (a read, then the writes: ~1 ms instead of ~0.15); apart, the turn stays
    /// one guarded statement and the claims follow in a transaction of their own.
    const CLAIMS_APART: bool = true;

    async fn abort(&mut self) {
        let _ = self.conn.execute("ROLLBACK").await;
    }

    /// One read by primary key on the writer's direct connection, on this thread: tens of
    /// microseconds, against a waiter's read through the pool on sqlx's worker thread and
    /// back.
    async fn read_finished(&mut self, instance_ids: &[String]) -> Vec<InstanceStatus> {
        match read_finished_rows(&mut self.direct, instance_ids) {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%error, "reading finished instances for their waiters failed; they read them");
                Vec::new()
            }
        }
    }

    /// Any error on the way to the commit leaves its outcome to be checked: SQLite reports
    /// disk errors during `COMMIT` without saying whether the transaction survived.
    fn outcome_unknown(_: &sqlx::Error) -> bool {
        true
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        super::is_transient(error)
    }

    async fn committed(&mut self, attempt: i64) -> Result<bool, sqlx::Error> {
        // Nothing else in the process can be deciding it: this thread is the only writer (its
        // direct connection sits in autocommit between statements).
        let _ = self.conn.execute("ROLLBACK").await;
        let batch: Option<i64> = sqlx::query_scalar("SELECT batch FROM writers WHERE writer = ?1")
            .bind(&self.attempts.writer)
            .fetch_optional(&mut self.conn)
            .await?;
        Ok(batch == Some(attempt))
    }

    /// One attempt at the batch inside one transaction.
    async fn execute(&mut self, ops: &mut [Op]) -> Result<Effects, AttemptError> {
        let now = now_ms();
        if let Some(effects) = self.guarded(ops, now).await? {
            return Ok(effects);
        }
        let attempt = self.attempts.next();
        if ops.iter().all(Op::is_claim) {
            return self.claims_only(ops, attempt, now).await;
        }
        let started = std::time::Instant::now();
        let mut state = self.read_state(ops, attempt, now).await?;
        let mut plan = Plan::default();
        for op in ops.iter_mut() {
            plan.apply(op, &mut state, now);
        }
        let has_special = ops.iter().any(Op::runs_after_writes);
        // Entity cleanup, which runs after the writes, enqueues unlocks with ids of its own,
        // and calls kept in memory become work items with ids of their own (made for a worker,
        // recovered, or let go with a lease): then the next batch that needs ids reads the
        // counters again.
        let own_ids = plan.has_lease_writes()
            || ops.iter().any(|op| {
                matches!(
                    op,
                    Op::CleanEntities { .. } | Op::Persist { .. } | Op::Recover { .. }
                )
            });
        self.next_ids = (!own_ids).then(|| state.ids_after());
        tracing::trace!(
            ops = ?ops.iter().map(Op::kind).collect::<Vec<_>>(),
            read_us = started.elapsed().as_micros() as u64,
            "batch read and planned"
        );
        if !plan.new_instances.is_empty() {
            self.write_new_instances(&plan).await?;
        }
        if !has_special && !plan.has_lease_writes() {
            // With nothing after them, the writes carry the commit: one round trip less.
            let sent = self.write(&plan, true, now).await;
            tracing::trace!(
                batch_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            return match sent {
                Ok(()) => Ok(plan.effects),
                Err(error) => Err(AttemptError {
                    error,
                    in_commit: Some((attempt, plan.effects)),
                }),
            };
        }
        self.write(&plan, false, now).await?;
        // Claims, purges and abandons run last, so that claims see this batch's new messages.
        for op in ops.iter_mut() {
            match op {
                Op::ClaimMessages { .. } | Op::ClaimActivities { .. } => {
                    self.claim(op, now).await?;
                }
                Op::Admit { rules, reply } => {
                    let admission = self.admit(rules, now).await?;
                    plan.effects.work |= !admission.admitted.is_empty();
                    reply.set(Ok(admission));
                }
                Op::Renew {
                    owner,
                    held,
                    lease,
                    reply,
                } => {
                    let lost = self.renew(owner, held, lease.from(now)).await?;
                    reply.set(Ok(lost));
                }
                Op::Sync {
                    owner,
                    heartbeats,
                    running,
                    reply,
                } => {
                    let gone = self.sync(owner, heartbeats, running, now).await?;
                    reply.set(Ok(gone));
                }
                Op::Persist {
                    owner,
                    calls,
                    lease,
                    reply,
                } => {
                    let ids = self.persist_calls(owner, calls, lease.from(now)).await?;
                    reply.set(Ok(ids));
                }
                Op::Recover { reply } => {
                    // A call is lost when its instance's lease lapsed, or another worker
                    // holds the instance now (it took the lapsed lease over).
                    const LOST: &str =
                        "(i.locked_until < ?1 OR c.value->>'owner' IS NOT i.locked_by)";
                    let insert = calls_to_items(
                        &format!("i.locked_by IS NOT NULL AND {LOST}"),
                        "NULL, NULL",
                    );
                    let recovered = sqlx::query(sqlx::AssertSqlSafe(insert))
                        .bind(now)
                        .execute(&mut self.conn)
                        .await?
                        .rows_affected();
                    if recovered > 0 {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "UPDATE instances AS i SET calls = \
                               (SELECT nullif(json_group_object(c.key, json(c.value)), '{{}}') \
                                FROM json_each(i.calls) AS c WHERE NOT {LOST}) \
                             WHERE i.calls IS NOT NULL AND i.locked_by IS NOT NULL \
                               AND EXISTS (SELECT 1 FROM json_each(i.calls) AS c WHERE {LOST})"
                        )))
                        .bind(now)
                        .execute(&mut self.conn)
                        .await?;
                    }
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
                        "UPDATE orch_queue SET locked_by = NULL, locked_until = NULL, visible_at = ?1 \
                         WHERE id IN (SELECT value FROM json_each(?2)) AND locked_by = ?3",
                    )
                    .bind(millis(*visible_at))
                    .bind(json(ids))
                    .bind(&*owner)
                    .execute(&mut self.conn)
                    .await?;
                }
                Op::Purge { query, reply } => {
                    let purged = self.purge(query).await?;
                    reply.set(Ok(purged));
                }
                Op::CleanEntities { reply } => {
                    let cleanup = self.clean_entities(now).await?;
                    reply.set(Ok(cleanup));
                }
                _ => {}
            }
        }
        let sent = self.conn.execute("COMMIT").await;
        match sent {
            Ok(_) => Ok(plan.effects),
            Err(error) => Err(AttemptError {
                error,
                in_commit: Some((attempt, plan.effects)),
            }),
        }
    }
}

impl Writer {
    /// A batch of claims only (a poll's, a wake-up's; taken apart from turns,
    /// [`BatchExecutor::CLAIMS_APART`]): each claim reads what it takes, so the batch reads
    /// nothing first — `BEGIN IMMEDIATE`, the claims, `COMMIT`. Claims write no queue ids:
    /// the counters the next guarded batch reserves from stay as they are.
    async fn claims_only(
        &mut self,
        ops: &mut [Op],
        attempt: i64,
        now: i64,
    ) -> Result<Effects, AttemptError> {
        let started = std::time::Instant::now();
        self.conn.execute("BEGIN IMMEDIATE").await?;
        for op in ops.iter_mut() {
            self.claim(op, now).await?;
        }
        let sent = self.conn.execute("COMMIT").await;
        tracing::trace!(
            claims = ops.len(),
            batch_us = started.elapsed().as_micros() as u64,
            "claims committed"
        );
        match sent {
            Ok(_) => Ok(Effects::default()),
            Err(error) => Err(AttemptError {
                error,
                in_commit: Some((attempt, Effects::default())),
            }),
        }
    }

    /// Runs a claim op and sets its outcome; any other op is left alone.
    async fn claim(&mut self, op: &mut Op, now: i64) -> Result<(), sqlx::Error> {
        match op {
            Op::ClaimMessages {
                owner,
                limit,
                lease,
                reply,
            } => {
                let claimed = self
                    .claim_messages(owner, *limit, lease.from(now), now)
                    .await?;
                reply.set(claimed);
            }
            Op::ClaimActivities {
                owner,
                names,
                rules,
                limit,
                lease,
                reply,
            } => {
                let claimed = self
                    .claim_activities(owner, names, rules, *limit, lease.from(now), now)
                    .await?;
                reply.set(claimed);
            }
            _ => {}
        }
        Ok(())
    }

    /// Commits a batch of plain turns and starts as one statement planned on what it assumes
    /// ([`guarded`]) instead of a read: a row inserted into its shape's view, whose
    /// trigger checks the guards and writes, committing on its own (no `BEGIN`, no read, no
    /// `COMMIT`), stepped on this thread on the [direct connection](Direct).
    /// `None` when the batch does not qualify or did not commit (a guard failed, or anything
    /// else went wrong): the ordinary path then runs it and answers each op exactly.
    async fn guarded(&mut self, ops: &mut [Op], now: i64) -> Result<Option<Effects>, AttemptError> {
        let Some((mut state, guards)) = guarded::assume(ops) else {
            return Ok(None);
        };
        let (messages, items) = ids_needed(ops);
        let known = self.next_ids;
        let (first_message, first_item) = match known {
            Some(next) => next,
            // Nothing to reserve: the id guards hold whatever the counters are.
            None if messages + items == 0 => (i64::MAX, i64::MAX),
            None => return Ok(None),
        };
        state.reserve_after(first_message - 1, messages, first_item - 1, items);
        let mut plan = Plan::default();
        for op in ops.iter_mut() {
            plan.apply(op, &mut state, now);
        }
        if !plan.only_guarded_writes() {
            return Ok(None);
        }
        let attempt = self.attempts.next();
        let started = std::time::Instant::now();
        let lists = core_write_lists(&plan);
        let single = plan.updates.len() <= 1 && guards.instances.len() <= 1;
        let shape = Shape {
            mask: list_mask(&lists),
            creates: !plan.new_instances.is_empty(),
            single,
            // In `GUARD_PARTS` order.
            guards: bits([
                !guards.instances.is_empty(),
                !guards.absent.is_empty(),
                !guards.consumed.is_empty(),
                !guards.completed.is_empty(),
                messages > 0,
                items > 0,
            ]) as u8,
        };
        if !self.shapes.contains_key(&shape) {
            // Its view is created and its insert prepared in this batch ([`Writer::warm`]
            // did not).
            tracing::debug!(shape = ?shape, "a guarded batch shape met for the first time");
        }
        let (shape, insert) = match self.batch_insert(shape) {
            Ok(prepared) => prepared,
            Err(error) => {
                tracing::warn!(%error, "preparing a guarded batch failed; running it the ordinary way");
                return Ok(None);
            }
        };
        let mut params: Vec<Value<'_>> = vec![
            self.attempts.writer.as_str().into(),
            attempt.into(),
            now.into(),
            guards.owner.as_str().into(),
        ];
        if shape.single {
            let instance = guards.instances.first();
            params.push(instance.map(|(id, _)| id.as_str()).into());
            params.push(instance.map(|(_, history_len)| *history_len).into());
        } else {
            params.push(json(&guards.instances).into());
        }
        params.extend([
            json(&guards.absent).into(),
            json(&guards.consumed).into(),
            json(&guards.completed).into(),
            first_message.into(),
            first_item.into(),
        ]);
        if shape.creates {
            params.push(json(&plan.new_instances).into());
        }
        for (i, list) in lists.into_iter().enumerate() {
            if shape.mask & (1 << i) == 0 {
                continue;
            }
            match (i, shape.single) {
                (UPDATES, true) => push_update(&mut params, plan.updates.first()),
                // An empty list of a wider shape's binds as NULL: its statement writes nothing.
                _ => params.push(list.into()),
            }
        }
        // The one statement of the common step, stepped on this thread; then the rows of
        // finished instances someone here waits for, read after it committed.
        let sent = self.direct.execute(&insert, &params).map(|()| {
            let watched: Vec<&String> = plan
                .effects
                .finished
                .iter()
                .filter(|id| self.events.is_watched(id))
                .collect();
            if watched.is_empty() {
                return Vec::new();
            }
            // The batch committed: a failed read leaves the rows to their waiters.
            read_finished_rows(&mut self.direct, &watched).unwrap_or_else(|error| {
                tracing::debug!(%error, "reading finished instances for their waiters failed; they read them");
                Vec::new()
            })
        });
        tracing::trace!(
            batch_us = started.elapsed().as_micros() as u64,
            ok = sent.is_ok(),
            shape = ?shape,
            "guarded batch sent"
        );
        let error = match sent {
            Ok(finished) => {
                if known.is_some() {
                    self.next_ids = Some(state.ids_after());
                }
                let mut effects = plan.effects;
                effects.statuses = finished;
                return Ok(Some(effects));
            }
            Err(error) => error,
        };
        // The error may have come from the statement's own commit (SQLite does not say): the
        // fence row tells whether it happened. A refused batch never writes it.
        self.next_ids = None;
        match self.committed(attempt).await {
            Ok(true) => Ok(Some(plan.effects)),
            Ok(false) => {
                guarded::log_fallback(&error, refused(&error) || Self::is_transient(&error));
                Ok(None)
            }
            Err(_) => Err(AttemptError {
                error,
                in_commit: Some((attempt, plan.effects)),
            }),
        }
    }

    /// Creates the views and triggers of the [common shapes](Shape::common), then prepares
    /// their `INSERT`s and [`READ_FINISHED`], so no turn pays for that: preparing a shape's
    /// insert compiles its trigger, and the first turns of a shape took 1.1–1.3 ms against
    /// 0.1–0.2 ms once prepared. All views first: creating one changes the connection's
    /// schema, which expires every statement prepared before it (SQLite would compile each
    /// again on its first use). Writes nothing (temporary views live with the connection); a
    /// failure only leaves the rest to their first batches.
    fn warm(&mut self) {
        let started = std::time::Instant::now();
        let mut statements = vec![READ_FINISHED.clone()];
        for shape in Shape::common() {
            match self.batch_insert(shape) {
                Ok((_, insert)) => statements.push(insert),
                Err(error) => {
                    tracing::debug!(%error, "creating the guarded statements' views ahead failed; each is made in its first batch");
                    return;
                }
            }
        }
        for statement in &statements {
            if let Err(error) = self.direct.prepare(statement) {
                tracing::debug!(%error, "preparing the guarded statements ahead failed; each is prepared in its first batch");
                return;
            }
        }
        tracing::debug!(
            warm_us = started.elapsed().as_micros() as u64,
            "guarded statements prepared ahead"
        );
    }

    /// The `INSERT` that runs a guarded batch of `shape` as one statement, creating the
    /// shape's view and trigger on first use (outside any transaction: guarded batches run
    /// in autocommit), and the shape it runs as: past [`MAX_SHAPES`] shapes, new ones run as
    /// the shape with every list and every guard.
    fn batch_insert(&mut self, shape: Shape) -> Result<(Shape, Arc<str>), sqlx::Error> {
        let shape = if self.shapes.len() >= MAX_SHAPES && !self.shapes.contains_key(&shape) {
            Shape {
                mask: ALL_LISTS,
                guards: ALL_GUARDS,
                ..shape
            }
        } else {
            shape
        };
        if let Some(insert) = self.shapes.get(&shape) {
            return Ok((shape, insert.clone()));
        }
        let (create, insert) = shape.sql();
        self.direct.run_script(&create)?;
        let insert: Arc<str> = insert.into();
        self.shapes.insert(shape, insert.clone());
        Ok((shape, insert))
    }

    /// Begins the transaction, records the attempt in the writer's fence row, and reads what
    /// validation needs, in one round trip. A batch of claims only records nothing (a claim
    /// that finds nothing stays a read): if its `COMMIT` fails, it counts as not committed and
    /// runs again, and what it may have leased anyway is held by nobody, so it is not renewed
    /// and is claimed again within a lease period.
    async fn read_state(
        &mut self,
        ops: &[Op],
        attempt: i64,
        now: i64,
    ) -> Result<State, sqlx::Error> {
        let touched = touched(ops);
        let fenced = !ops.iter().all(Op::is_claim);
        const SQL: &str = "BEGIN IMMEDIATE; \
            INSERT INTO writers (writer, batch, updated_at) SELECT ?, ?, ? WHERE ? \
              ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, updated_at = excluded.updated_at; \
            SELECT 'i' AS kind, instance_id AS k, status AS s, history_len AS n, locked_by AS o, locked_until AS u \
              FROM instances WHERE instance_id IN (SELECT value FROM json_each(?)) \
            UNION ALL \
            SELECT 'a', CAST(id AS TEXT), NULL, id, locked_by, locked_until \
              FROM activity_queue WHERE id IN (SELECT value FROM json_each(?)) \
            UNION ALL \
            SELECT 'm', CAST(id AS TEXT), NULL, id, locked_by, locked_until \
              FROM orch_queue WHERE id IN (SELECT value FROM json_each(?)) \
            UNION ALL \
            SELECT 's', name, NULL, seq, NULL, NULL FROM sqlite_sequence \
              WHERE name IN ('orch_queue', 'activity_queue')";
        let rows = sqlx::query(SQL)
            .bind(&self.attempts.writer)
            .bind(attempt)
            .bind(now)
            .bind(fenced)
            .bind(json(&touched.instances))
            .bind(json(&touched.items))
            .bind(json(&touched.messages))
            .fetch_all(&mut self.conn)
            .await?;
        let mut state = State::default();
        let (mut last_message_id, mut last_item_id) = (0, 0);
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
                "m" => {
                    state.messages.insert(row.try_get(3)?, row.try_get(4)?);
                }
                _ => {
                    let name: String = row.try_get(1)?;
                    let seq: i64 = row.try_get(3)?;
                    if name == "orch_queue" {
                        last_message_id = seq;
                    } else {
                        last_item_id = seq;
                    }
                }
            }
        }
        let (messages, items) = ids_needed(ops);
        state.reserve_after(last_message_id, messages, last_item_id, items);
        Ok(state)
    }

    /// Creates the batch's new instances (replacing finished ones with their ids).
    async fn write_new_instances(&mut self, plan: &Plan) -> Result<(), sqlx::Error> {
        {
            const SQL: &str = "\
                DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?)); \
                DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
                DELETE FROM activity_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
                INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len, locked_by, locked_until) \
                  SELECT value->>0, value->>1, value->>2, 'Pending', value->>3, value->>4, value->>4, 0, value->>5, value->>6 \
                  FROM jsonb_each(?) WHERE true \
                  ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name, version = excluded.version, \
                    status = 'Pending', input = excluded.input, output = NULL, failure = NULL, \
                    custom_status = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at, \
                    completed_at = NULL, history_len = 0, locked_by = excluded.locked_by, \
                    locked_until = excluded.locked_until, calls = NULL";
            let replaced = json(&plan.replaced);
            sqlx::query(SQL)
                .bind(&replaced)
                .bind(&replaced)
                .bind(&replaced)
                .bind(json(&plan.new_instances))
                .execute(&mut self.conn)
                .await?;
        }
        if !plan.flow_holds.is_empty() || !plan.replaced.is_empty() {
            const SQL: &str = "\
                DELETE FROM flow_instances WHERE instance_id IN (SELECT value FROM json_each(?)); \
                INSERT OR REPLACE INTO flow_instances (instance_id, name, flow_key, priority) \
                  SELECT value->>0, value->>1, value->>2, value->>3 FROM jsonb_each(?)";
            sqlx::query(SQL)
                .bind(json(&plan.replaced))
                .bind(json(&plan.flow_holds))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Sends the merged writes of the batch; with `commit`, `COMMIT` rides along in the same
    /// round trip (then nothing may follow).
    async fn write(&mut self, plan: &Plan, commit: bool, now: i64) -> Result<(), sqlx::Error> {
        if !plan.has_core_writes() {
            if commit {
                self.conn.execute("COMMIT").await?;
            }
        } else {
            // Large batches (the ordinary path's usual ones) share the statements' answers
            // among many ops: one statement per non-empty list, in one call.
            let lists = core_write_lists(plan);
            let mask = list_mask(&lists);
            let sql = self
                .core_sql
                .entry((mask, commit))
                .or_insert_with(|| {
                    let mut sql: Vec<&str> = CORE_WRITES
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, statement)| *statement)
                        .collect();
                    if commit {
                        sql.push("COMMIT");
                    }
                    sql.join("; ").into()
                })
                .clone();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for list in lists.into_iter().flatten() {
                query = query.bind(list);
            }
            query.execute(&mut self.conn).await?;
        }
        if plan.has_lease_writes() && !commit {
            // The calls kept in memory of instances let go become work items for anyone.
            sqlx::query(sqlx::AssertSqlSafe(let_go_calls()))
                .bind(plan.reset_leases)
                .bind(json(&plan.release_all))
                .bind(json(&plan.releases))
                .execute(&mut self.conn)
                .await?;
            const SQL: &str = "\
                UPDATE instances SET locked_by = NULL, locked_until = NULL \
                  WHERE ? AND locked_by IS NOT NULL AND locked_by <> 'duractor.flow'; \
                UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                  WHERE ? AND locked_by IS NOT NULL AND locked_by <> 'duractor.flow'; \
                UPDATE activity_queue SET locked_until = 0 WHERE ? AND locked_by IS NOT NULL; \
                UPDATE instances SET locked_by = NULL, locked_until = NULL \
                  FROM (SELECT value->>0 AS id, value->>1 AS owner FROM jsonb_each(?)) AS r \
                  WHERE instances.instance_id = r.id AND instances.locked_by = r.owner; \
                UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                  FROM (SELECT value->>0 AS id, value->>1 AS owner FROM jsonb_each(?)) AS r \
                  WHERE orch_queue.instance_id = r.id AND orch_queue.locked_by = r.owner \
                    AND orch_queue.visible_at > ?; \
                UPDATE instances SET locked_by = NULL, locked_until = NULL \
                  WHERE locked_by IN (SELECT value FROM json_each(?)); \
                UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                  WHERE locked_by IN (SELECT value FROM json_each(?)); \
                UPDATE activity_queue SET locked_until = 0 \
                  WHERE locked_by IN (SELECT value FROM json_each(?))";
            let release_all = json(&plan.release_all);
            sqlx::query(SQL)
                .bind(plan.reset_leases)
                .bind(plan.reset_leases)
                .bind(plan.reset_leases)
                .bind(json(&plan.releases))
                .bind(json(&plan.releases))
                .bind(now)
                .bind(&release_all)
                .bind(&release_all)
                .bind(&release_all)
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Makes work items, leased to `owner` until `lease_until`, of the calls it keeps in
    /// memory that are still recorded on instances it holds; `None` for the others.
    async fn persist_calls(
        &mut self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: i64,
    ) -> Result<Vec<Option<i64>>, sqlx::Error> {
        let insert = format!(
            "{} RETURNING id",
            calls_to_items(
                "i.instance_id = ?3 AND i.locked_by = ?1 AND c.key = ?4 \
                 AND c.value->>'execution' = ?5 AND c.value->>'owner' = ?1",
                "?1, ?2"
            )
        );
        let mut ids = Vec::with_capacity(calls.len());
        for call in calls {
            let seq = call.seq.to_string();
            let id: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(owner)
                .bind(lease_until)
                .bind(&call.instance_id)
                .bind(&seq)
                .bind(call.execution)
                .fetch_optional(&mut self.conn)
                .await?;
            if id.is_some() {
                sqlx::query(
                    "UPDATE instances SET calls = nullif(json_patch(calls, json_object(?2, NULL)), '{}') \
                     WHERE instance_id = ?1",
                )
                .bind(&call.instance_id)
                .bind(&seq)
                .execute(&mut self.conn)
                .await?;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Extends `owner`'s leases on the held instances (with their claimed messages) and work
    /// items; returns the held instances `owner` no longer holds.
    /// Stores heartbeats on the work items `owner` holds; returns the ids of `running` it
    /// no longer holds.
    async fn sync(
        &mut self,
        owner: &str,
        heartbeats: &[(i64, String)],
        running: &[i64],
        now: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        if !heartbeats.is_empty() {
            sqlx::query(
                "UPDATE activity_queue SET heartbeat = b.value->>1, heartbeat_at = ?1 \
                 FROM jsonb_each(?2) AS b \
                 WHERE activity_queue.id = b.value->>0 AND activity_queue.locked_by = ?3",
            )
            .bind(now)
            .bind(json(heartbeats))
            .bind(owner)
            .execute(&mut self.conn)
            .await?;
        }
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM activity_queue WHERE id IN (SELECT value FROM json_each(?1)) \
             AND locked_by = ?2",
        )
        .bind(json(running))
        .bind(owner)
        .fetch_all(&mut self.conn)
        .await?;
        let held: std::collections::HashSet<i64> = held.into_iter().collect();
        Ok(running
            .iter()
            .copied()
            .filter(|id| !held.contains(id))
            .collect())
    }

    async fn renew(
        &mut self,
        owner: &str,
        held: &HeldWork,
        lease_until: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        const SQL: &str = "\
            UPDATE orch_queue SET locked_until = ? \
              WHERE locked_by = ? AND instance_id IN (SELECT value FROM json_each(?)); \
            UPDATE activity_queue SET locked_until = ? \
              WHERE locked_by = ? AND (id IN (SELECT value FROM json_each(?)) \
                OR instance_id IN (SELECT value FROM json_each(?))); \
            UPDATE instances SET locked_until = ? \
              WHERE locked_by = ? AND instance_id IN (SELECT value FROM json_each(?)) \
              RETURNING instance_id";
        let instances = json(&held.instances);
        let renewed: Vec<String> = sqlx::query_scalar(SQL)
            .bind(lease_until)
            .bind(owner)
            .bind(&instances)
            .bind(lease_until)
            .bind(owner)
            .bind(json(&held.activity_items))
            .bind(&instances)
            .bind(lease_until)
            .bind(owner)
            .bind(&instances)
            .fetch_all(&mut self.conn)
            .await?;
        let renewed: std::collections::HashSet<&str> = renewed.iter().map(String::as_str).collect();
        Ok(held
            .instances
            .iter()
            .filter(|id| !renewed.contains(id.as_str()))
            .cloned()
            .collect())
    }

    async fn claim_messages(
        &mut self,
        owner: &str,
        limit: u32,
        lease_until: i64,
        now: i64,
    ) -> Result<Result<Vec<OrchestrationMessage>, Error>, sqlx::Error> {
        const CLAIM: &str = "\
            UPDATE orch_queue SET locked_by = ?1, locked_until = ?2 \
            WHERE id IN ( \
              SELECT q.id FROM orch_queue q JOIN instances i ON i.instance_id = q.instance_id \
              WHERE q.visible_at <= ?3 AND (q.locked_until IS NULL OR q.locked_until < ?3) \
                AND (i.locked_by IS NULL OR i.locked_by = ?1 OR i.locked_until < ?3) \
              ORDER BY q.visible_at, q.id LIMIT ?4) \
            RETURNING id, instance_id, message, execution";
        let rows = sqlx::query(CLAIM)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut self.conn)
            .await?;
        let messages = match rows::messages(&rows)? {
            Ok(messages) => messages,
            Err(error) => return Ok(Err(error)),
        };
        if !messages.is_empty() {
            let mut instances: Vec<&str> =
                messages.iter().map(|m| m.instance_id.as_str()).collect();
            instances.sort_unstable();
            instances.dedup();
            sqlx::query(
                "UPDATE instances SET locked_by = ?1, locked_until = ?2 \
                 WHERE instance_id IN (SELECT value FROM json_each(?3))",
            )
            .bind(owner)
            .bind(lease_until)
            .bind(json(&instances))
            .execute(&mut self.conn)
            .await?;
        }
        Ok(Ok(messages))
    }

    /// Releases locks of finished (or gone) orchestrations, through an `EntityUnlock` message
    /// so the entity runs what waited for the lock; removes entities with no state, no lock
    /// and no pending message.
    async fn clean_entities(&mut self, now: i64) -> Result<EntityCleanup, sqlx::Error> {
        let released = sqlx::query(
            "INSERT INTO orch_queue (instance_id, visible_at, message) \
             SELECT e.instance_id, ?1, json_object('EntityUnlock', json_object('owner', e.lock_owner)) \
             FROM instances e \
             WHERE e.kind = 'entity' AND e.lock_owner IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.instance_id = e.lock_owner \
                               AND o.status IN ('Pending', 'Running', 'Suspended'))",
        )
        .bind(now)
        .execute(&mut self.conn)
        .await?
        .rows_affected();
        let removed = sqlx::query(
            "DELETE FROM instances WHERE kind = 'entity' AND entity_state IS NULL \
               AND lock_owner IS NULL \
               AND NOT EXISTS (SELECT 1 FROM orch_queue q WHERE q.instance_id = instances.instance_id)",
        )
        .execute(&mut self.conn)
        .await?
        .rows_affected();
        Ok(EntityCleanup {
            removed_empty: removed,
            released_locks: released,
        })
    }

    /// Deletes finished instances matching `query` with everything they own.
    async fn purge(&mut self, query: &PurgeQuery) -> Result<u64, sqlx::Error> {
        let statuses: Vec<&str> = RuntimeStatus::ALL
            .iter()
            .filter(|s| {
                s.is_terminal() && (query.statuses.is_empty() || query.statuses.contains(s))
            })
            .map(|s| s.as_str())
            .collect();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT instance_id FROM instances \
             WHERE kind = 'orchestration' AND status IN (SELECT value FROM json_each(?1)) \
               AND (?2 IS NULL OR instance_id = ?2) \
               AND (?3 IS NULL OR created_at >= ?3) \
               AND (?4 IS NULL OR created_at < ?4)",
        )
        .bind(json(&statuses))
        .bind(query.instance_id.as_deref())
        .bind(query.created_from.map(millis))
        .bind(query.created_to.map(millis))
        .fetch_all(&mut self.conn)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = json(&ids);
        sqlx::query(
            "DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?)); \
             DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
             DELETE FROM activity_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
             DELETE FROM flow_instances WHERE instance_id IN (SELECT value FROM json_each(?)); \
             DELETE FROM instances WHERE instance_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&list)
        .bind(&list)
        .bind(&list)
        .bind(&list)
        .bind(&list)
        .execute(&mut self.conn)
        .await?;
        Ok(ids.len() as u64)
    }

    async fn claim_activities(
        &mut self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: i64,
        now: i64,
    ) -> Result<Result<ClaimedActivities, Error>, sqlx::Error> {
        const CLAIM: &str = "\
            UPDATE activity_queue SET locked_by = ?1, locked_until = ?2, attempt = attempt + 1 \
            WHERE id IN ( \
              SELECT id FROM activity_queue \
              WHERE (locked_until IS NULL OR locked_until < ?3) \
                AND name IN (SELECT value FROM json_each(?5)) \
              ORDER BY priority DESC, id LIMIT ?4) \
            RETURNING id, instance_id, seq, name, input, attempt, execution, timeouts, heartbeat";
        const CLAIM_IDS: &str = "\
            UPDATE activity_queue SET locked_by = ?1, locked_until = ?2, attempt = attempt + 1 \
            WHERE id IN (SELECT value FROM json_each(?3)) \
            RETURNING id, instance_id, seq, name, input, attempt, execution, timeouts, heartbeat";
        let unlimited: Vec<&String> = names
            .iter()
            .filter(|name| !rules.iter().any(|rule| rule.name == **name))
            .collect();
        let mut items = Vec::new();
        if !unlimited.is_empty() {
            let rows = sqlx::query(CLAIM)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .bind(json(&unlimited))
                .fetch_all(&mut self.conn)
                .await?;
            match rows::activity_items(&rows)? {
                Ok(claimed) => items = claimed,
                Err(error) => return Ok(Err(error)),
            }
        }
        // One writer connection runs every claim of this file: the counts below cannot
        // change under it.
        let mut held_back = false;
        for rule in rules.iter().filter(|rule| names.contains(&rule.name)) {
            let want = (limit as usize).saturating_sub(items.len());
            if want == 0 {
                held_back = true;
                break;
            }
            let (ids, held) = self.limited_ids(rule, want, now).await?;
            held_back |= held;
            if ids.is_empty() {
                continue;
            }
            let rows = sqlx::query(CLAIM_IDS)
                .bind(owner)
                .bind(lease_until)
                .bind(json(&ids))
                .fetch_all(&mut self.conn)
                .await?;
            match rows::activity_items(&rows)? {
                Ok(claimed) => items.extend(claimed),
                Err(error) => return Ok(Err(error)),
            }
        }
        Ok(Ok(ClaimedActivities { items, held_back }))
    }

    /// The waiting items of a limited activity a claim may take now ([`flow::pick`]), and
    /// whether its limits held any back; records the starts a rate counts.
    async fn limited_ids(
        &mut self,
        rule: &FlowRule,
        want: usize,
        now: i64,
    ) -> Result<(Vec<i64>, bool), sqlx::Error> {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut usage = FlowUsage::default();
        let running: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT flow_key, count(*) FROM activity_queue \
             WHERE name = ?1 AND locked_until >= ?2 GROUP BY flow_key",
        )
        .bind(&rule.name)
        .bind(now)
        .fetch_all(&mut self.conn)
        .await?;
        usage.running = running.into_iter().map(|(k, n)| (k, count(n))).collect();
        if let Some(rate) = rule.limits.rate {
            self.count_starts(&rule.name, rate, now, &mut usage).await?;
        }
        let candidates: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT id, flow_key FROM ( \
                 SELECT id, flow_key, priority, \
                     row_number() OVER (PARTITION BY flow_key ORDER BY priority DESC, id) AS rn \
                 FROM activity_queue \
                 WHERE name = ?1 AND (locked_until IS NULL OR locked_until < ?2)) \
             WHERE rn <= ?3 ORDER BY priority DESC, id",
        )
        .bind(&rule.name)
        .bind(now)
        .bind(i64::try_from(flow::per_key_window(&rule.limits, want)).unwrap_or(i64::MAX))
        .fetch_all(&mut self.conn)
        .await?;
        let picked = flow::pick(&rule.limits, &candidates, &usage, want);
        if rule.limits.rate.is_some() {
            self.record_starts(&rule.name, &candidates, &picked, now)
                .await?;
        }
        let held = picked.len() < candidates.len();
        Ok((picked, held))
    }

    /// Counts the starts of `name` a rate sees now, per key: within its period and within
    /// its current tenth ([`flow::tenth_start`]), forgetting older ones.
    async fn count_starts(
        &mut self,
        name: &str,
        rate: flow::Rate,
        now: i64,
        usage: &mut FlowUsage,
    ) -> Result<(), sqlx::Error> {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let period = i64::try_from(rate.period_ms).unwrap_or(i64::MAX);
        sqlx::query("DELETE FROM flow_starts WHERE name = ?1 AND started_at <= ?2")
            .bind(name)
            .bind(now.saturating_sub(period))
            .execute(&mut self.conn)
            .await?;
        let started: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT flow_key, count(*), sum(CASE WHEN started_at >= ?2 THEN 1 ELSE 0 END) \
             FROM flow_starts WHERE name = ?1 GROUP BY flow_key",
        )
        .bind(name)
        .bind(flow::tenth_start(now, rate.period_ms))
        .fetch_all(&mut self.conn)
        .await?;
        for (key, in_period, in_tenth) in started {
            usage
                .started_in_period
                .insert(key.clone(), count(in_period));
            usage.started_in_tenth.insert(key, count(in_tenth));
        }
        Ok(())
    }

    /// Records, for a rate of `name`, the starts of the `picked` among `candidates`.
    async fn record_starts(
        &mut self,
        name: &str,
        candidates: &[(i64, Option<String>)],
        picked: &[i64],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let keys: Vec<&Option<String>> = candidates
            .iter()
            .filter(|(id, _)| picked.contains(id))
            .map(|(_, key)| key)
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO flow_starts (name, flow_key, started_at) \
             SELECT ?1, value, ?2 FROM json_each(?3)",
        )
        .bind(name)
        .bind(now)
        .bind(json(&keys))
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }
}

impl Writer {
    /// Lets held instances of the orchestrators in `rules` run as far as their limits allow
    /// (see `Store::admit_instances`). One writer connection runs every admission of this
    /// file: the counts cannot change under it.
    async fn admit(&mut self, rules: &[FlowRule], now: i64) -> Result<Admission, sqlx::Error> {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        let mut admission = Admission::default();
        for rule in rules {
            sqlx::query(
                "DELETE FROM flow_instances WHERE name = ?1 AND admitted = 1 AND NOT EXISTS ( \
                   SELECT 1 FROM instances i WHERE i.instance_id = flow_instances.instance_id \
                     AND i.name = flow_instances.name \
                     AND i.status IN ('Pending', 'Running', 'Suspended'))",
            )
            .bind(&rule.name)
            .execute(&mut self.conn)
            .await?;
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM flow_instances WHERE name = ?1 AND admitted = 0",
            )
            .bind(&rule.name)
            .fetch_one(&mut self.conn)
            .await?;
            if held == 0 {
                continue;
            }
            // Held instances being terminated go at once, whatever the limits, and no longer
            // count.
            let terminated: Vec<String> = sqlx::query_scalar(
                "DELETE FROM flow_instances WHERE name = ?1 AND admitted = 0 AND instance_id IN ( \
                   SELECT q.instance_id FROM orch_queue q \
                   WHERE q.instance_id = flow_instances.instance_id \
                     AND q.message LIKE '{\"ExecutionTerminated\"%') \
                 RETURNING instance_id",
            )
            .bind(&rule.name)
            .fetch_all(&mut self.conn)
            .await?;
            let mut usage = FlowUsage::default();
            let running: Vec<(Option<String>, i64)> = sqlx::query_as(
                "SELECT flow_key, count(*) FROM flow_instances \
                 WHERE name = ?1 AND admitted = 1 GROUP BY flow_key",
            )
            .bind(&rule.name)
            .fetch_all(&mut self.conn)
            .await?;
            usage.running = running.into_iter().map(|(k, n)| (k, count(n))).collect();
            let starts = flow::orchestrator_starts(&rule.name);
            if let Some(rate) = rule.limits.rate {
                self.count_starts(&starts, rate, now, &mut usage).await?;
            }
            let candidates: Vec<(i64, Option<String>)> = sqlx::query_as(
                "SELECT id, flow_key FROM ( \
                     SELECT id, flow_key, priority, \
                         row_number() OVER (PARTITION BY flow_key ORDER BY priority DESC, id) AS rn \
                     FROM flow_instances WHERE name = ?1 AND admitted = 0) \
                 WHERE rn <= ?2 ORDER BY priority DESC, id",
            )
            .bind(&rule.name)
            .bind(i64::try_from(flow::per_key_window(&rule.limits, usize::MAX)).unwrap_or(i64::MAX))
            .fetch_all(&mut self.conn)
            .await?;
            let picked = flow::pick(&rule.limits, &candidates, &usage, usize::MAX);
            admission.waiting +=
                (held as u64).saturating_sub((terminated.len() + picked.len()) as u64);
            if rule.limits.rate.is_some() {
                self.record_starts(&starts, &candidates, &picked, now)
                    .await?;
            }
            let mut admitted: Vec<String> = sqlx::query_scalar(
                "UPDATE flow_instances SET admitted = 1 \
                 WHERE id IN (SELECT value FROM json_each(?1)) RETURNING instance_id",
            )
            .bind(json(&picked))
            .fetch_all(&mut self.conn)
            .await?;
            admitted.extend(terminated);
            if admitted.is_empty() {
                continue;
            }
            sqlx::query(
                "UPDATE instances SET locked_by = NULL, locked_until = NULL \
                   WHERE instance_id IN (SELECT value FROM json_each(?1)) AND locked_by = ?2; \
                 UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                   WHERE instance_id IN (SELECT value FROM json_each(?1)) AND locked_by = ?2",
            )
            .bind(json(&admitted))
            .bind(FLOW_HOLD_OWNER)
            .execute(&mut self.conn)
            .await?;
            admission.admitted.extend(admitted);
        }
        Ok(admission)
    }
}

/// The merged writes of turns, activity results, messages and status updates: one statement
/// per list of the plan (in this order; each reads its list from one column of its shape's
/// view, see [`Shape`]). A batch runs those whose list has something, and each must find its
/// rows through an index.
///
/// A list of rows is walked with `jsonb_each`, not `json_each`: its `value` is then each row
/// in SQLite's binary form, which `value->>n` reads as it is, where `json_each` would render
/// the row as text for each `->>` to parse again (a quarter of the guarded statement's
/// instructions went to that). What `->>` returns is the same either way.
const CORE_WRITES: [&str; 15] = [
    "INSERT OR IGNORE INTO instances (instance_id, kind, name, status, input, created_at, updated_at) \
       SELECT value->>0, 'entity', value->>1, 'Running', 'null', value->>2, value->>2 FROM jsonb_each(?)",
    "DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?))",
    "INSERT INTO history (instance_id, idx, event) \
       SELECT value->>0, value->>1, value->>2 FROM jsonb_each(?)",
    "DELETE FROM orch_queue WHERE id IN (SELECT value FROM json_each(?))",
    "DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?))",
    "DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)) AND execution IS NOT NULL",
    "DELETE FROM activity_queue WHERE id IN (SELECT value FROM json_each(?))",
    "DELETE FROM activity_queue WHERE instance_id IN (SELECT value FROM json_each(?))",
    // Cancelled calls' work items, found through the instance index (a scan would cost every
    // batch that cancels a call the whole queue).
    "DELETE FROM activity_queue WHERE id IN (SELECT a.id FROM jsonb_each(?) AS c \
       JOIN activity_queue AS a ON a.instance_id = c.value->>0 \
       WHERE a.seq = c.value->>1 AND a.execution = c.value->>2)",
    // Cancelled timers' messages, unless claimed (found through the instance index).
    "DELETE FROM orch_queue WHERE id IN (SELECT q.id FROM jsonb_each(?) AS c \
       JOIN orch_queue AS q ON q.instance_id = c.value->>0 \
       WHERE q.execution = c.value->>2 AND q.locked_by IS NULL \
         AND json_extract(q.message, '$.TimerFired.seq') = c.value->>1)",
    "INSERT INTO orch_queue (id, instance_id, visible_at, message, execution, locked_by, locked_until) \
       SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM jsonb_each(?)",
    "INSERT INTO activity_queue (id, instance_id, seq, name, input, execution, attempt, locked_by, locked_until, timeouts, heartbeat, flow_key, priority) \
       SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
         value->>12 + CASE WHEN value->>6 IS NULL THEN 0 ELSE 1 END, value->>6, value->>7, value->>8, value->>9, \
         value->>10, value->>11 FROM jsonb_each(?)",
    "UPDATE instances SET \
         status = COALESCE(u.status, instances.status), \
         output = CASE WHEN u.reset THEN u.output ELSE COALESCE(u.output, instances.output) END, \
         failure = CASE WHEN u.reset THEN u.failure ELSE COALESCE(u.failure, instances.failure) END, \
         custom_status = COALESCE(u.custom_status, instances.custom_status), \
         input = COALESCE(u.input, instances.input), \
         history_len = u.history_len, updated_at = u.updated_at, \
         completed_at = CASE WHEN u.reset THEN u.completed_at ELSE COALESCE(u.completed_at, instances.completed_at) END, \
         locked_by = u.locked_by, locked_until = u.locked_until, \
         calls = CASE WHEN u.drop_calls THEN nullif(json_patch('{}', COALESCE(u.calls, '{}')), '{}') \
                      WHEN u.calls IS NULL THEN instances.calls \
                      ELSE nullif(json_patch(COALESCE(instances.calls, '{}'), u.calls), '{}') END \
       FROM (SELECT value->>0 AS id, value->>1 AS status, value->>2 AS output, value->>3 AS failure, \
               value->>4 AS custom_status, value->>5 AS history_len, value->>6 AS updated_at, \
               value->>7 AS completed_at, value->>8 AS locked_by, value->>9 AS locked_until, \
               value->>10 AS reset, value->>11 AS input, value->>12 AS calls, value->>13 AS drop_calls \
             FROM jsonb_each(?)) AS u \
       WHERE instances.instance_id = u.id",
    "UPDATE instances SET status = 'Pending' \
       WHERE instance_id IN (SELECT value FROM json_each(?)) AND status = 'Failed'",
    "UPDATE instances SET entity_state = u.state, lock_owner = u.owner, updated_at = u.at \
       FROM (SELECT value->>0 AS id, value->>1 AS state, value->>2 AS owner, value->>3 AS at \
             FROM jsonb_each(?)) AS u \
       WHERE instances.instance_id = u.id",
];

/// What a guarded batch's one statement writes: which [`CORE_WRITES`] lists it has (bit `i`
/// for statement `i`) and whether it creates instances; its guards and fence row come
/// first. Each shape is a temporary view on the writer's direct connection whose
/// `INSTEAD OF INSERT` trigger runs exactly its statements: inserting one row runs the whole
/// batch as one statement (when it went through sqlx, a multi-statement call was one answer
/// per statement, each a wake-up of the writer), and no statement runs over an
/// empty list (each costs as much as a real one; a trigger running all fifteen cost twice
/// the work of the four a turn needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    mask: u16,
    creates: bool,
    /// Whether its batch updates at most one instance and guards at most one: that update
    /// and that guard are bound as scalars instead of JSON lists ([`UPDATE_ONE`],
    /// [`GUARD_ONE_INSTANCE`]). Every `->>` into a list element parses its JSON again, and
    /// the update reads fourteen fields: a statement over bound values cost about a third
    /// less of the whole batch (measured on SQLite 3.51, the bundled one).
    single: bool,
    /// Which guards it checks ([`guards_sql`]).
    guards: u8,
}

/// How many shapes a connection keeps views for; batches of further shapes run as the shape
/// with every list (the few dozen that occur are far below this).
const MAX_SHAPES: usize = 256;

/// Every [`CORE_WRITES`] list.
const ALL_LISTS: u16 = (1 << CORE_WRITES.len()) - 1;

impl Shape {
    /// The shapes most batches have, whose statements a writer prepares when it starts
    /// ([`Writer::warm`]): an instance's first turn started by the runtime's own client, a
    /// turn consuming an activity's result and calling the next, and the last turn, each
    /// alone and in a batch with other turns; a turn consuming a timer and setting the next,
    /// a first turn that sets one, and the last turn after one (the shapes
    /// `RUST_LOG=duractor_sqlx=trace` showed in W1, W6, W7 and W8).
    fn common() -> [Shape; 10] {
        const HISTORY: u16 = 1 << 2;
        const CONSUMED: u16 = 1 << 3;
        /// A finished instance's messages and work items.
        const FINISHED: u16 = 1 << 4 | 1 << 7;
        const CANCELLED_CALLS: u16 = 1 << 8;
        const MESSAGES: u16 = 1 << 10;
        const UPDATE: u16 = 1 << UPDATES;
        // Guards, in `GUARD_PARTS` order.
        const INSTANCES: u8 = 1;
        const ABSENT: u8 = 1 << 1;
        const CONSUMED_MESSAGES: u8 = 1 << 2;
        const MESSAGE_IDS: u8 = 1 << 4;
        let shape = |mask, creates, single, guards| Shape {
            mask,
            creates,
            single,
            guards,
        };
        let next_call = HISTORY | CANCELLED_CALLS | UPDATE;
        let last_call = next_call | FINISHED;
        [
            shape(HISTORY | UPDATE, true, true, ABSENT),
            shape(next_call, false, true, INSTANCES),
            shape(last_call, false, true, INSTANCES),
            shape(next_call, true, false, INSTANCES | ABSENT),
            shape(last_call, true, false, INSTANCES | ABSENT),
            shape(next_call, false, false, INSTANCES),
            shape(last_call, false, false, INSTANCES),
            shape(
                HISTORY | CONSUMED | MESSAGES | UPDATE,
                false,
                true,
                INSTANCES | CONSUMED_MESSAGES | MESSAGE_IDS,
            ),
            shape(
                HISTORY | MESSAGES | UPDATE,
                true,
                true,
                ABSENT | MESSAGE_IDS,
            ),
            shape(
                HISTORY | CONSUMED | FINISHED | UPDATE,
                false,
                true,
                INSTANCES | CONSUMED_MESSAGES,
            ),
        ]
    }

    /// The SQL creating the shape's view and trigger (temporary: they live with the
    /// connection, so they always match this build's statements; `IF NOT EXISTS`, so creating
    /// one again is harmless), and the `INSERT` that runs a batch of the shape. The insert
    /// binds, in order: the fence row's writer, attempt and time, the batch's owner, its
    /// instance guards (a [`single`](Self::single) shape: the instance id and its history
    /// length, each NULL without one; else the list), its other three guard lists and its
    /// first message and work item ids, then its new instances if it creates any; then the
    /// lists of the mask, in [`CORE_WRITES`] order, the list of updates of a single shape as
    /// the update's fourteen fields ([`UPDATE_ONE`]).
    fn sql(self) -> (String, String) {
        let name = format!(
            "guarded_batch_{}{}_{:x}_{:x}",
            u8::from(self.creates),
            u8::from(self.single),
            self.mask,
            self.guards
        );
        let instance_guards: &[&str] = if self.single {
            &["g_instance", "g_history_len"]
        } else {
            &["g_instances"]
        };
        let mut columns: Vec<String> = ["writer", "attempt", "now", "owner"]
            .iter()
            .chain(instance_guards)
            .chain(&[
                "g_absent",
                "g_consumed",
                "g_completed",
                "first_message",
                "first_item",
            ])
            .map(|c| (*c).to_owned())
            .collect();
        let mut body: Vec<String> = guards_sql(self.guards, self.single).into_iter().collect();
        body.push(FENCE.to_owned());
        if self.creates {
            columns.push("new_instances".to_owned());
            body.push(CREATES.to_owned());
        }
        for (i, statement) in CORE_WRITES.iter().enumerate() {
            if self.mask & (1 << i) == 0 {
                continue;
            }
            if i == UPDATES && self.single {
                columns.extend((0..UPDATE_FIELDS).map(|f| format!("u{f}")));
                body.push(UPDATE_ONE.to_owned());
            } else {
                debug_assert_eq!(statement.matches('?').count(), 1);
                columns.push(format!("l{i}"));
                body.push(statement.replacen("_each(?)", &format!("_each(NEW.l{i})"), 1));
            }
        }
        let nulls: Vec<String> = columns.iter().map(|c| format!("NULL AS {c}")).collect();
        let create = format!(
            "CREATE TEMP VIEW IF NOT EXISTS {name} AS SELECT {}; \
             CREATE TEMP TRIGGER IF NOT EXISTS {name}_rows INSTEAD OF INSERT ON {name} \
             BEGIN {}; END",
            nulls.join(", "),
            body.join("; ")
        );
        let insert = format!(
            "INSERT INTO {name} ({}) VALUES ({})",
            columns.join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        (create, insert)
    }
}

/// A guarded batch's guards, checked first by the trigger: each turn's instance has the
/// history length the turn expects and a lease that is the owner's, lapsed or nobody's; no
/// instance has a new instance's id; every consumed message and work item is leased to the
/// owner; and no queue id at or past the ones reserved has been taken (by another process
/// writing the same file). If one fails, the statement aborts and writes nothing.
const GUARD_PARTS: [&str; 6] = [
    "(SELECT count(*) FROM jsonb_each(NEW.g_instances) AS g \
        JOIN instances AS i ON i.instance_id = g.value->>0 \
       WHERE i.history_len = g.value->>1 \
         AND (i.locked_by IS NULL OR i.locked_by = NEW.owner OR i.locked_until < NEW.now)) \
       = json_array_length(NEW.g_instances)",
    "NOT EXISTS (SELECT 1 FROM instances WHERE instance_id IN (SELECT value FROM json_each(NEW.g_absent)))",
    "(SELECT count(*) FROM orch_queue \
       WHERE id IN (SELECT value FROM json_each(NEW.g_consumed)) AND locked_by = NEW.owner) \
       = json_array_length(NEW.g_consumed)",
    "(SELECT count(*) FROM activity_queue \
       WHERE id IN (SELECT value FROM json_each(NEW.g_completed)) AND locked_by = NEW.owner) \
       = json_array_length(NEW.g_completed)",
    "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'orch_queue'), 0) < NEW.first_message",
    "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'activity_queue'), 0) < NEW.first_item",
];

/// Every guard of [`GUARD_PARTS`].
const ALL_GUARDS: u8 = (1 << GUARD_PARTS.len()) - 1;

/// The instance guard of a [`single`](Shape::single) shape: [`GUARD_PARTS`]`[0]` over the
/// one instance bound as `g_instance` and `g_history_len` (none when NULL).
const GUARD_ONE_INSTANCE: &str = "(NEW.g_instance IS NULL OR EXISTS (SELECT 1 FROM instances AS i \
       WHERE i.instance_id = NEW.g_instance AND i.history_len = NEW.g_history_len \
         AND (i.locked_by IS NULL OR i.locked_by = NEW.owner OR i.locked_until < NEW.now)))";

/// The trigger's first statement: aborts unless the guards of `guards` (bit `i` for
/// [`GUARD_PARTS`]`[i]`; for a `single` shape, its instance guard [`GUARD_ONE_INSTANCE`])
/// hold; `None` without guards. A guard over an empty list holds whatever the rows are, and
/// one over ids the batch does not take has nothing to protect, so a shape checks only what
/// its batch has (each check over nothing cost about what it costs over one row).
fn guards_sql(guards: u8, single: bool) -> Option<String> {
    let parts: Vec<&str> = GUARD_PARTS
        .iter()
        .enumerate()
        .filter(|(i, _)| guards & (1 << i) != 0)
        .map(|(i, part)| {
            if i == 0 && single {
                GUARD_ONE_INSTANCE
            } else {
                *part
            }
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "SELECT RAISE(ABORT, 'duractor: a guarded batch found an instance, message or work item changed, or an id taken') \
             WHERE NOT ({})",
            parts.join(" AND ")
        )
    })
}

/// The index of the instance updates in [`CORE_WRITES`] (and [`core_write_lists`]).
const UPDATES: usize = 12;

/// How many fields an instance update has ([`Update`](crate::batch::Update)).
const UPDATE_FIELDS: usize = 14;

/// [`CORE_WRITES`]`[UPDATES]` for one update bound as its fields, `NEW.u0` to `NEW.u13` in
/// [`Update`](crate::batch::Update)'s order (a [`single`](Shape::single) shape).
const UPDATE_ONE: &str = "UPDATE instances SET \
         status = COALESCE(NEW.u1, status), \
         output = CASE WHEN NEW.u10 THEN NEW.u2 ELSE COALESCE(NEW.u2, output) END, \
         failure = CASE WHEN NEW.u10 THEN NEW.u3 ELSE COALESCE(NEW.u3, failure) END, \
         custom_status = COALESCE(NEW.u4, custom_status), \
         input = COALESCE(NEW.u11, input), \
         history_len = NEW.u5, updated_at = NEW.u6, \
         completed_at = CASE WHEN NEW.u10 THEN NEW.u7 ELSE COALESCE(NEW.u7, completed_at) END, \
         locked_by = NEW.u8, locked_until = NEW.u9, \
         calls = CASE WHEN NEW.u13 THEN nullif(json_patch('{}', COALESCE(NEW.u12, '{}')), '{}') \
                      WHEN NEW.u12 IS NULL THEN calls \
                      ELSE nullif(json_patch(COALESCE(calls, '{}'), NEW.u12), '{}') END \
       WHERE instance_id = NEW.u0";

/// Pushes `update`'s fields in order ([`UPDATE_ONE`]); NULLs without one (the updates of a
/// wider shape than its batch's).
fn push_update<'a>(params: &mut Vec<Value<'a>>, update: Option<&'a crate::batch::Update>) {
    let Some(u) = update else {
        params.extend((0..UPDATE_FIELDS).map(|_| Value::Null));
        return;
    };
    params.extend([
        u.0.as_str().into(),
        u.1.into(),
        u.2.as_deref().into(),
        u.3.as_deref().into(),
        u.4.as_deref().into(),
        u.5.into(),
        u.6.into(),
        u.7.into(),
        u.8.as_deref().into(),
        u.9.into(),
        u.10.into(),
        u.11.as_deref().into(),
        u.12.as_deref().into(),
        u.13.into(),
    ]);
}

/// A guarded batch's fence row.
const FENCE: &str = "INSERT INTO writers (writer, batch, updated_at) \
    SELECT NEW.writer, NEW.attempt, NEW.now WHERE true \
    ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, updated_at = excluded.updated_at";

/// A guarded batch's new instances, whose ids the guards found free.
const CREATES: &str = "\
    INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len, locked_by, locked_until) \
    SELECT value->>0, value->>1, value->>2, 'Pending', value->>3, value->>4, value->>4, 0, value->>5, value->>6 \
    FROM jsonb_each(NEW.new_instances)";

/// The `INSERT` making work items of the calls kept in memory (`c`, from `json_each` over
/// the row `i`'s calls) that `condition` picks, locked by `lock` (`locked_by, locked_until`
/// values). A call's `attempt` is its in-memory delivery's, as a work item born claimed
/// counts it; an unclaimed one's next claim adds one (the lost delivery may have started).
fn calls_to_items(condition: &str, lock: &str) -> String {
    format!(
        "INSERT INTO activity_queue (instance_id, seq, name, input, execution, attempt, locked_by, locked_until, \
                                     timeouts, heartbeat, priority) \
         SELECT i.instance_id, CAST(c.key AS INTEGER), c.value->>'name', c.value->>'input', \
                c.value->>'execution', c.value->>'attempt', {lock}, c.value->>'bounds', \
                c.value->>'heartbeat', COALESCE(c.value->>'priority', 0) \
         FROM instances AS i, json_each(i.calls) AS c WHERE i.calls IS NOT NULL AND {condition}"
    )
}

/// The calls kept in memory on instances whose leases a batch lets go (binds: voiding every
/// lease, the owners releasing all, the [instance, owner] pairs released) become work items
/// for anyone.
fn let_go_calls() -> String {
    const LET_GO: &str = "(?1 OR i.locked_by IN (SELECT value FROM json_each(?2)) \
          OR EXISTS (SELECT 1 FROM jsonb_each(?3) AS r \
                     WHERE r.value->>0 = i.instance_id AND r.value->>1 = i.locked_by))";
    format!(
        "{}; UPDATE instances AS i SET calls = NULL WHERE calls IS NOT NULL AND {LET_GO}",
        calls_to_items(LET_GO, "NULL, NULL")
    )
}

/// Whether a guarded batch failed because a guard did not hold, rather than for another
/// reason.
fn refused(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.message().starts_with("duractor: a guarded batch"))
}

/// Which of `lists` have something: bit `i` for list `i`.
fn list_mask(lists: &[Option<String>]) -> u16 {
    bits(lists.iter().map(Option::is_some))
}

/// Bit `i` set for each `i`-th flag that is set.
fn bits(flags: impl IntoIterator<Item = bool>) -> u16 {
    flags
        .into_iter()
        .enumerate()
        .filter(|(_, set)| *set)
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// The plan's lists in [`CORE_WRITES`] order, as the JSON each statement binds; `None` for
/// an empty list (its statement then writes nothing).
fn core_write_lists(plan: &Plan) -> [Option<String>; 15] {
    fn list<T: serde::Serialize>(items: &[T]) -> Option<String> {
        (!items.is_empty()).then(|| json(items))
    }
    let cleared: Vec<&String> = plan.finished.iter().chain(&plan.reset_history).collect();
    [
        list(&plan.new_entities),
        list(&plan.reset_history),
        list(&plan.history),
        list(&plan.consumed),
        list(&plan.finished),
        list(&plan.reset_history),
        list(&plan.done_items),
        list(&cleared),
        list(&plan.cancelled_calls),
        list(&plan.cancelled_timers),
        list(&plan.messages),
        list(&plan.activities),
        list(&plan.updates),
        list(&plan.rewound),
        list(&plan.entity_updates),
    ]
}

/// Copies committed WAL frames into the database file every 200 ms, off the commit path
/// (a checkpoint fsyncs the database file). `PASSIVE` never blocks the writer or readers.
async fn checkpoint(mut conn: SqliteConnection) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(error) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
            tracing::debug!(%error, "WAL checkpoint failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;

    /// A shape checks exactly the guards its batch needs, and none at all when it needs none.
    #[test]
    fn a_shape_checks_the_guards_it_is_given() {
        assert_eq!(guards_sql(0, false), None);
        for (i, part) in GUARD_PARTS.iter().enumerate() {
            let one = guards_sql(1 << i, false).unwrap();
            for (j, other) in GUARD_PARTS.iter().enumerate() {
                assert_eq!(one.contains(other), i == j, "guard {i} of {one}");
            }
            assert!(guards_sql(ALL_GUARDS, false).unwrap().contains(part));
        }
        // A single shape checks its one instance from bound values, and nothing else changes.
        let single = guards_sql(ALL_GUARDS, true).unwrap();
        assert!(single.contains(GUARD_ONE_INSTANCE) && !single.contains(GUARD_PARTS[0]));
        assert!(GUARD_PARTS[1..].iter().all(|part| single.contains(part)));
    }

    /// A database file with the store's schema, in a directory of its own for `name` (the
    /// test removes it): the directory and the file.
    async fn fresh_database(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("duractor-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.db"));
        drop(super::super::SqliteStore::open(&path).await.unwrap());
        (dir, path)
    }

    /// A direct connection to `path` as the store opens it.
    fn direct(path: &std::path::Path) -> Direct {
        super::super::open_direct(path, &super::super::SqliteStoreOptions::default()).unwrap()
    }

    /// The trigger runs every write statement for every batch, most of them over an empty
    /// list: one that scans a table would make every commit as slow as the table is long
    /// (a backlog of 100,000 work items, say). Checked against the real schema.
    #[tokio::test]
    async fn every_batch_statement_finds_its_rows_through_an_index() {
        let (dir, path) = fresh_database("plan").await;
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let all_guards = guards_sql(ALL_GUARDS, false).unwrap();
        let guards = all_guards
            .split("WHERE NOT (")
            .nth(1)
            .unwrap()
            .trim_end()
            .trim_end_matches(')');
        let mut statements: Vec<String> = CORE_WRITES.iter().map(|s| (*s).to_owned()).collect();
        statements.extend([FENCE, CREATES, UPDATE_ONE].map(str::to_owned));
        statements.push(format!("SELECT {guards}"));
        statements.push(format!("SELECT {GUARD_ONE_INSTANCE}"));
        for statement in statements {
            // `NEW.column` and `?` alike become a bound empty list (or NULL).
            let sql = new_columns_as_parameters(&statement);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            for _ in 0..sql.matches('?').count() {
                query = query.bind("[]");
            }
            let plan: Vec<String> = query
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"))
                .iter()
                .map(|row| row.get::<String, _>(3))
                .collect();
            // `sqlite_sequence` has one row per AUTOINCREMENT table.
            let scans: Vec<&String> = plan
                .iter()
                .filter(|step| step.starts_with("SCAN") && !step.contains("VIRTUAL TABLE"))
                .filter(|step| {
                    !matches!(step.as_str(), "SCAN CONSTANT ROW" | "SCAN sqlite_sequence")
                })
                .collect();
            assert!(scans.is_empty(), "{sql}\nscans {scans:?} in {plan:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Warming a writer creates every common shape's view and trigger on its connection and
    /// leaves each shape's insert prepared in the connection's statement cache, writing
    /// nothing to the database.
    #[tokio::test]
    async fn warming_prepares_the_common_shapes_and_writes_nothing() {
        let (dir, path) = fresh_database("warm").await;
        let url = format!("sqlite://{}", path.display());
        let mut writer = Writer::new(
            SqliteConnection::connect(&url).await.unwrap(),
            direct(&path),
            Arc::new(StoreEvents::default()),
        );
        writer.warm();
        let common = Shape::common();
        assert_eq!(
            writer.shapes.len(),
            common.len(),
            "a common shape repeats or failed"
        );
        let views = writer
            .direct
            .texts(
                &"SELECT count(*) FROM sqlite_temp_master WHERE type = 'view' AND name LIKE 'guarded_batch_%'".into(),
                &[],
            )
            .unwrap();
        assert_eq!(views, [common.len().to_string()]);
        for insert in writer.shapes.values() {
            assert!(
                writer.direct.is_prepared(insert),
                "{insert} was not kept prepared"
            );
        }
        // And still valid: a view created after a statement was prepared expires it, and
        // SQLite would compile it again on its first step. The first shape's insert was made
        // before the other nine views; stepping it (all NULL: the fence's writer refuses it,
        // so nothing is written) must not compile it again.
        let first = writer.shapes[&common[0]].clone();
        let nulls = vec![Value::Null; first.matches('?').count()];
        assert!(writer.direct.execute(&first, &nulls).is_err());
        assert_eq!(
            writer.direct.reprepares(&first),
            Some(0),
            "warming left the first shape's insert to be compiled again"
        );
        let mut other = SqliteConnection::connect(&url).await.unwrap();
        let written: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM writers) + (SELECT count(*) FROM instances) \
                  + (SELECT count(*) FROM history)",
        )
        .fetch_one(&mut other)
        .await
        .unwrap();
        assert_eq!(written, 0, "warming wrote rows");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A guarded batch that finishes an instance someone in this process waits for reads
    /// its row in the statement's own round trip (the batch's effects carry it: nothing reads
    /// it after the commit); one nobody waits for is not read.
    #[tokio::test]
    async fn a_guarded_finish_reads_a_watched_row_in_its_round_trip() {
        use crate::batch::ops::{Lease, Reply};
        use crate::batch::plan::tests::{new_instance, turn};
        use chrono::{TimeDelta, Utc};
        use duractor::Payload;

        let (dir, path) = fresh_database("finish_read").await;
        let events = Arc::new(StoreEvents::default());
        let mut writer = Writer::new(
            SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap(),
            direct(&path),
            events.clone(),
        );
        writer.warm();
        let lease = || Lease::until(Utc::now() + TimeDelta::seconds(30));
        for (id, watched) in [("watched", true), ("unwatched", false)] {
            let (caller, _answer) = tokio::sync::oneshot::channel();
            let mut create = [Op::Create {
                instance: new_instance(id),
                claim: Some(("w".to_owned(), lease())),
                offer: false,
                reply: Reply::new(caller),
            }];
            writer
                .execute(&mut create)
                .await
                .map_err(|e| e.error)
                .unwrap();
            let watch = watched.then(|| events.watch_finished(id));
            let mut last = turn(id, "w");
            last.status = Some(RuntimeStatus::Completed);
            last.output = Some(Payload::encode(&"done").unwrap());
            let (caller, _answer) = tokio::sync::oneshot::channel();
            let mut finish = [Op::Turn {
                turn: Box::new(last),
                lease: lease(),
                reply: Reply::new(caller),
            }];
            let effects = writer
                .execute(&mut finish)
                .await
                .map_err(|e| e.error)
                .unwrap();
            assert_eq!(effects.finished, [id]);
            if watch.is_some() {
                let [status] = effects.statuses.as_slice() else {
                    panic!(
                        "the finished row was not read with the batch: {:?}",
                        effects.statuses
                    );
                };
                assert_eq!(status.instance_id, id);
                assert_eq!(status.status, RuntimeStatus::Completed);
                assert_eq!(
                    status.output.as_ref().unwrap().decode::<String>().unwrap(),
                    "done"
                );
            } else {
                assert!(effects.statuses.is_empty(), "an unwatched row was read");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `statement` with every `NEW.<column>` replaced by a parameter.
    fn new_columns_as_parameters(statement: &str) -> String {
        let mut out = String::new();
        let mut rest = statement;
        while let Some(at) = rest.find("NEW.") {
            out.push_str(&rest[..at]);
            rest = &rest[at + 4..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push('?');
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
}
