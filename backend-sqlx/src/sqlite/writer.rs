//! The SQLite writer: one thread, one connection, group commit.
//!
//! Store calls arrive as [`Op`]s. The writer takes every op waiting when it is free (up to
//! `max_batch`) and commits them in one `BEGIN IMMEDIATE` transaction:
//!
//! 1. one read: the state of every instance and work item the batch touches (lease owner,
//!    history length, status) and the queue id counters — one statement;
//! 2. validation in Rust: duplicate instance ids, lost leases, history that moved on;
//! 3. the writes of all ops merged into a few statements, each over a JSON array bound as one
//!    parameter (`INSERT … SELECT … FROM json_each(?)`), sent as one multi-statement call;
//! 4. claims (`UPDATE … RETURNING`), then `COMMIT`.
//!
//! That is 3–5 round trips to SQLite per *batch*, whatever the number of ops in it. Replies
//! are sent after the commit. A busy database (another process writing) is retried with
//! backoff; other failures fail every op of the batch with the database's message.
//!
//! Multi-statement strings use positional `?` parameters only, bound in order of appearance:
//! sqlx-sqlite binds a statement that uses `?3` but not `?1`/`?2` as if those were positional
//! ones, shifting every later statement's arguments.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use duractor::entity::EntityId;
use duractor::store::{
    ActivityCompletion, ActivityWorkItem, EntityCleanup, NewInstance, OrchestrationMessage,
    PurgeQuery, StoreEvents, TurnCommit, TurnCommitted,
};
use duractor::{Error, Event, Payload, RuntimeStatus};
use serde::Serialize;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Executor as _, Row};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::common::{decode_event, encode_event, is_transient, millis, now_ms, store_error};

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A store call for the writer.
pub(super) enum Op {
    Create {
        instance: NewInstance,
        reply: Reply<()>,
    },
    Enqueue {
        instance_id: String,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
        reply: Reply<()>,
    },
    CleanEntities {
        reply: Reply<EntityCleanup>,
    },
    Abandon {
        owner: String,
        ids: Vec<i64>,
        visible_at: DateTime<Utc>,
        reply: Reply<()>,
    },
    Purge {
        query: PurgeQuery,
        reply: Reply<u64>,
    },
    Turn {
        turn: TurnCommit,
        reply: Reply<TurnCommitted>,
    },
    Complete {
        completion: ActivityCompletion,
        reply: Reply<Option<OrchestrationMessage>>,
    },
    ClaimMessages {
        owner: String,
        limit: u32,
        lease_until: DateTime<Utc>,
        reply: Reply<Vec<OrchestrationMessage>>,
    },
    ClaimActivities {
        owner: String,
        limit: u32,
        lease_until: DateTime<Utc>,
        reply: Reply<Vec<ActivityWorkItem>>,
    },
    Renew {
        owner: String,
        lease_until: DateTime<Utc>,
        reply: Reply<()>,
    },
    Release {
        instance_id: String,
        owner: String,
        reply: Reply<()>,
    },
    ReleaseAll {
        owner: String,
        reply: Reply<()>,
    },
    ResetLeases {
        reply: Reply<()>,
    },
}

/// The result of one op, sent to its caller after the commit.
enum Outcome {
    Unit(Result<(), Error>),
    Turn(Result<TurnCommitted, Error>),
    Delivered(Result<Option<OrchestrationMessage>, Error>),
    Messages(Result<Vec<OrchestrationMessage>, Error>),
    Items(Result<Vec<ActivityWorkItem>, Error>),
    Count(Result<u64, Error>),
    Cleanup(Result<EntityCleanup, Error>),
}

impl Op {
    fn reply(self, outcome: Result<Outcome, Error>) {
        fn send<T>(reply: Reply<T>, result: Result<T, Error>) {
            let _ = reply.send(result);
        }
        let mismatch = || Error::store("internal error: mismatched writer outcome");
        match (self, outcome) {
            (
                Op::Create { reply, .. }
                | Op::Enqueue { reply, .. }
                | Op::Abandon { reply, .. }
                | Op::Renew { reply, .. }
                | Op::Release { reply, .. }
                | Op::ReleaseAll { reply, .. }
                | Op::ResetLeases { reply },
                outcome,
            ) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Unit(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Turn { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Turn(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Complete { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Delivered(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::ClaimMessages { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Messages(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::ClaimActivities { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Items(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::CleanEntities { reply }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Cleanup(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
            (Op::Purge { reply, .. }, outcome) => send(
                reply,
                outcome.and_then(|o| match o {
                    Outcome::Count(r) => r,
                    _ => Err(mismatch()),
                }),
            ),
        }
    }
}

pub(super) struct Writer {
    conn: SqliteConnection,
    events: Arc<StoreEvents>,
    max_batch: usize,
}

impl Writer {
    /// Starts the writer thread; it runs until every sender is dropped.
    pub(super) fn spawn(
        conn: SqliteConnection,
        checkpointer: SqliteConnection,
        mut rx: mpsc::UnboundedReceiver<Op>,
        events: Arc<StoreEvents>,
        max_batch: usize,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("duractor-sqlite-writer".into())
            .spawn(move || {
                let mut writer = Writer {
                    conn,
                    events,
                    max_batch: max_batch.max(1),
                };
                runtime.block_on(async move {
                    tokio::spawn(checkpoint(checkpointer));
                    let mut batch = Vec::new();
                    while let Some(op) = rx.recv().await {
                        batch.push(op);
                        while batch.len() < writer.max_batch {
                            match rx.try_recv() {
                                Ok(op) => batch.push(op),
                                Err(_) => break,
                            }
                        }
                        writer.commit(std::mem::take(&mut batch)).await;
                    }
                    let _ = sqlx::Connection::close(writer.conn).await;
                });
            })?;
        Ok(())
    }

    /// Commits a batch (retrying while the database is busy) and replies to every op.
    async fn commit(&mut self, ops: Vec<Op>) {
        let mut attempt = 0u32;
        let result = loop {
            match self.execute(&ops).await {
                Ok(done) => break Ok(done),
                Err(error) => {
                    let _ = self.conn.execute("ROLLBACK").await;
                    if is_transient(&error) && attempt < 8 {
                        attempt += 1;
                        let delay = Duration::from_millis(5u64 << attempt.min(7));
                        tracing::debug!(%error, attempt, "SQLite busy; retrying the batch");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    tracing::warn!(%error, ops = ops.len(), "a SQLite write batch failed");
                    break Err(store_error("committing to SQLite", error));
                }
            }
        };
        match result {
            Ok((outcomes, effects)) => {
                for (op, outcome) in ops.into_iter().zip(outcomes) {
                    op.reply(Ok(outcome));
                }
                if effects.work {
                    self.events.notify_work();
                }
                for instance_id in &effects.finished {
                    self.events.notify_finished(instance_id);
                }
            }
            Err(error) => {
                for op in ops {
                    op.reply(Err(error.clone()));
                }
            }
        }
    }

    /// One attempt at the batch inside one transaction.
    async fn execute(&mut self, ops: &[Op]) -> Result<(Vec<Outcome>, Effects), sqlx::Error> {
        let now = now_ms();
        let mut state = self.read_state(ops).await?;
        let mut plan = Plan::default();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(plan.apply(op, &mut state, now));
        }
        let has_special = ops.iter().any(Op::runs_after_writes);
        let committed = self.write(&plan, !has_special).await?;
        // Claims, purges and abandons run last, so that claims see this batch's new messages.
        for (op, outcome) in ops.iter().zip(outcomes.iter_mut()) {
            match op {
                Op::ClaimMessages {
                    owner,
                    limit,
                    lease_until,
                    ..
                } => {
                    let claimed = self
                        .claim_messages(owner, *limit, millis(*lease_until), now)
                        .await?;
                    *outcome = Outcome::Messages(claimed);
                }
                Op::ClaimActivities {
                    owner,
                    limit,
                    lease_until,
                    ..
                } => {
                    let claimed = self
                        .claim_activities(owner, *limit, millis(*lease_until), now)
                        .await?;
                    *outcome = Outcome::Items(claimed);
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
                    .bind(owner)
                    .execute(&mut self.conn)
                    .await?;
                }
                Op::Purge { query, .. } => {
                    let purged = self.purge(query).await?;
                    *outcome = Outcome::Count(Ok(purged));
                }
                Op::CleanEntities { .. } => {
                    let cleanup = self.clean_entities(now).await?;
                    *outcome = Outcome::Cleanup(Ok(cleanup));
                }
                _ => {}
            }
        }
        if !committed {
            self.conn.execute("COMMIT").await?;
        }
        Ok((outcomes, plan.effects))
    }

    /// Begins the transaction and reads what validation needs, in one round trip.
    async fn read_state(&mut self, ops: &[Op]) -> Result<State, sqlx::Error> {
        let mut instance_ids: Vec<&str> = Vec::new();
        let mut item_ids: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::Create { instance, .. } => instance_ids.push(&instance.instance_id),
                Op::Enqueue { instance_id, .. } => instance_ids.push(instance_id),
                Op::Turn { turn, .. } => {
                    instance_ids.push(&turn.instance_id);
                    instance_ids.extend(turn.new_instances.iter().map(|i| i.instance_id.as_str()));
                    instance_ids.extend(turn.messages.iter().map(|m| m.instance_id.as_str()));
                }
                Op::Complete { completion, .. } => {
                    instance_ids.push(&completion.instance_id);
                    item_ids.push(completion.item_id);
                }
                _ => {}
            }
        }
        const SQL: &str = "BEGIN IMMEDIATE; \
            SELECT 'i' AS kind, instance_id AS k, status AS s, history_len AS n, locked_by AS o, locked_until AS u \
              FROM instances WHERE instance_id IN (SELECT value FROM json_each(?1)) \
            UNION ALL \
            SELECT 'a', CAST(id AS TEXT), NULL, id, locked_by, locked_until \
              FROM activity_queue WHERE id IN (SELECT value FROM json_each(?2)) \
            UNION ALL \
            SELECT 's', name, NULL, seq, NULL, NULL FROM sqlite_sequence \
              WHERE name IN ('orch_queue', 'activity_queue')";
        let rows = sqlx::query(SQL)
            .bind(json(&instance_ids))
            .bind(json(&item_ids))
            .fetch_all(&mut self.conn)
            .await?;
        let mut state = State::default();
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
                _ => {
                    let name: String = row.try_get(1)?;
                    let seq: i64 = row.try_get(3)?;
                    if name == "orch_queue" {
                        state.next_message_id = seq + 1;
                    } else {
                        state.next_item_id = seq + 1;
                    }
                }
            }
        }
        state.next_message_id = state.next_message_id.max(1);
        state.next_item_id = state.next_item_id.max(1);
        Ok(state)
    }

    /// Sends the merged writes of the batch; with `commit_inline`, commits too if it can do
    /// so in the same round trip, and says whether it did.
    async fn write(&mut self, plan: &Plan, commit_inline: bool) -> Result<bool, sqlx::Error> {
        if !plan.new_instances.is_empty() {
            const SQL: &str = "\
                DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?)); \
                DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
                DELETE FROM activity_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
                INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len) \
                  SELECT value->>0, value->>1, value->>2, 'Pending', value->>3, value->>4, value->>4, 0 \
                  FROM json_each(?) WHERE true \
                  ON CONFLICT (instance_id) DO UPDATE SET name = excluded.name, version = excluded.version, \
                    status = 'Pending', input = excluded.input, output = NULL, failure = NULL, \
                    custom_status = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at, \
                    completed_at = NULL, history_len = 0, locked_by = NULL, locked_until = NULL";
            let replaced = json(&plan.replaced);
            sqlx::query(SQL)
                .bind(&replaced)
                .bind(&replaced)
                .bind(&replaced)
                .bind(json(&plan.new_instances))
                .execute(&mut self.conn)
                .await?;
        }
        if plan.has_core_writes() {
            // With nothing after it in this batch, the commit rides along: one round trip less.
            let sql = if commit_inline && !plan.has_lease_writes() {
                CORE_WRITES_AND_COMMIT
            } else {
                CORE_WRITES
            };
            let cleared: Vec<&String> = plan.finished.iter().chain(&plan.reset_history).collect();
            sqlx::query(sql)
                .bind(json(&plan.new_entities))
                .bind(json(&plan.reset_history))
                .bind(json(&plan.history))
                .bind(json(&plan.consumed))
                .bind(json(&plan.finished))
                .bind(json(&plan.reset_history))
                .bind(json(&plan.done_items))
                .bind(json(&cleared))
                .bind(json(&plan.messages))
                .bind(json(&plan.activities))
                .bind(json(&plan.updates))
                .bind(json(&plan.rewound))
                .bind(json(&plan.entity_updates))
                .execute(&mut self.conn)
                .await?;
            if commit_inline && !plan.has_lease_writes() {
                return Ok(true);
            }
        }
        if plan.has_lease_writes() {
            const SQL: &str = "\
                UPDATE instances SET locked_by = NULL, locked_until = NULL WHERE ? AND locked_by IS NOT NULL; \
                UPDATE orch_queue SET locked_by = NULL, locked_until = NULL WHERE ? AND locked_by IS NOT NULL; \
                UPDATE activity_queue SET locked_until = 0 WHERE ? AND locked_by IS NOT NULL; \
                UPDATE instances SET locked_until = r.until \
                  FROM (SELECT value->>0 AS owner, value->>1 AS until FROM json_each(?)) AS r \
                  WHERE instances.locked_by = r.owner; \
                UPDATE orch_queue SET locked_until = r.until \
                  FROM (SELECT value->>0 AS owner, value->>1 AS until FROM json_each(?)) AS r \
                  WHERE orch_queue.locked_by = r.owner; \
                UPDATE activity_queue SET locked_until = r.until \
                  FROM (SELECT value->>0 AS owner, value->>1 AS until FROM json_each(?)) AS r \
                  WHERE activity_queue.locked_by = r.owner; \
                UPDATE instances SET locked_by = NULL, locked_until = NULL \
                  FROM (SELECT value->>0 AS id, value->>1 AS owner FROM json_each(?)) AS r \
                  WHERE instances.instance_id = r.id AND instances.locked_by = r.owner; \
                UPDATE instances SET locked_by = NULL, locked_until = NULL \
                  WHERE locked_by IN (SELECT value FROM json_each(?)); \
                UPDATE orch_queue SET locked_by = NULL, locked_until = NULL \
                  WHERE locked_by IN (SELECT value FROM json_each(?)); \
                UPDATE activity_queue SET locked_until = 0 \
                  WHERE locked_by IN (SELECT value FROM json_each(?))";
            let renewals = json(&plan.renewals);
            let release_all = json(&plan.release_all);
            sqlx::query(SQL)
                .bind(plan.reset_leases)
                .bind(plan.reset_leases)
                .bind(plan.reset_leases)
                .bind(&renewals)
                .bind(&renewals)
                .bind(&renewals)
                .bind(json(&plan.releases))
                .bind(&release_all)
                .bind(&release_all)
                .bind(&release_all)
                .execute(&mut self.conn)
                .await?;
        }
        Ok(false)
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
        let mut messages = Vec::with_capacity(rows.len());
        let mut instances: Vec<String> = Vec::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let instance_id: String = row.try_get(1)?;
            let json: String = row.try_get(2)?;
            let event = match decode_event(&json) {
                Ok(event) => event,
                Err(error) => return Ok(Err(error)),
            };
            instances.push(instance_id.clone());
            let execution: Option<i64> = row.try_get(3)?;
            messages.push(OrchestrationMessage {
                id,
                instance_id,
                event,
                execution: execution.and_then(|e| u32::try_from(e).ok()),
            });
        }
        if !instances.is_empty() {
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
        messages.sort_by_key(|m| m.id);
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
             DELETE FROM instances WHERE instance_id IN (SELECT value FROM json_each(?))",
        )
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
        limit: u32,
        lease_until: i64,
        now: i64,
    ) -> Result<Result<Vec<ActivityWorkItem>, Error>, sqlx::Error> {
        const CLAIM: &str = "\
            UPDATE activity_queue SET locked_by = ?1, locked_until = ?2, attempt = attempt + 1 \
            WHERE id IN ( \
              SELECT id FROM activity_queue WHERE locked_until IS NULL OR locked_until < ?3 \
              ORDER BY id LIMIT ?4) \
            RETURNING id, instance_id, seq, name, input, attempt, execution";
        let rows = sqlx::query(CLAIM)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut self.conn)
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let input: String = row.try_get(4)?;
            let input = match Payload::from_json(input) {
                Ok(input) => input,
                Err(e) => {
                    return Ok(Err(Error::store(format!(
                        "a stored activity input is not valid JSON: {e}"
                    ))));
                }
            };
            items.push(ActivityWorkItem {
                id: row.try_get(0)?,
                instance_id: row.try_get(1)?,
                seq: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or_default(),
                name: row.try_get(3)?,
                input,
                attempt: u32::try_from(row.try_get::<i64, _>(5)?).unwrap_or(u32::MAX),
                execution: u32::try_from(row.try_get::<i64, _>(6)?).unwrap_or_default(),
            });
        }
        items.sort_by_key(|i| i.id);
        Ok(Ok(items))
    }
}

/// The merged writes of turns, activity results, messages and status updates.
macro_rules! core_writes {
    () => {
        "INSERT OR IGNORE INTO instances (instance_id, kind, name, status, input, created_at, updated_at) \
           SELECT value->>0, 'entity', value->>1, 'Running', 'null', value->>2, value->>2 FROM json_each(?); \
         DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?)); \
         INSERT INTO history (instance_id, idx, event) \
           SELECT value->>0, value->>1, value->>2 FROM json_each(?); \
         DELETE FROM orch_queue WHERE id IN (SELECT value FROM json_each(?)); \
         DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
         DELETE FROM orch_queue WHERE instance_id IN (SELECT value FROM json_each(?)) AND execution IS NOT NULL; \
         DELETE FROM activity_queue WHERE id IN (SELECT value FROM json_each(?)); \
         DELETE FROM activity_queue WHERE instance_id IN (SELECT value FROM json_each(?)); \
         INSERT INTO orch_queue (id, instance_id, visible_at, message, execution, locked_by, locked_until) \
           SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?); \
         INSERT INTO activity_queue (id, instance_id, seq, name, input, execution, attempt, locked_by, locked_until) \
           SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, 1, value->>6, value->>7 FROM json_each(?); \
         UPDATE instances SET \
             status = COALESCE(u.status, instances.status), \
             output = CASE WHEN u.reset THEN u.output ELSE COALESCE(u.output, instances.output) END, \
             failure = CASE WHEN u.reset THEN u.failure ELSE COALESCE(u.failure, instances.failure) END, \
             custom_status = COALESCE(u.custom_status, instances.custom_status), \
             history_len = u.history_len, updated_at = u.updated_at, \
             completed_at = CASE WHEN u.reset THEN u.completed_at ELSE COALESCE(u.completed_at, instances.completed_at) END, \
             locked_by = u.locked_by, locked_until = u.locked_until \
           FROM (SELECT value->>0 AS id, value->>1 AS status, value->>2 AS output, value->>3 AS failure, \
                   value->>4 AS custom_status, value->>5 AS history_len, value->>6 AS updated_at, \
                   value->>7 AS completed_at, value->>8 AS locked_by, value->>9 AS locked_until, \
                   value->>10 AS reset \
                 FROM json_each(?)) AS u \
           WHERE instances.instance_id = u.id; \
         UPDATE instances SET status = 'Pending' \
           WHERE instance_id IN (SELECT value FROM json_each(?)) AND status = 'Failed'; \
         UPDATE instances SET entity_state = u.state, lock_owner = u.owner, updated_at = u.at \
           FROM (SELECT value->>0 AS id, value->>1 AS state, value->>2 AS owner, value->>3 AS at \
                 FROM json_each(?)) AS u \
           WHERE instances.instance_id = u.id"
    };
}

const CORE_WRITES: &str = core_writes!();
const CORE_WRITES_AND_COMMIT: &str = concat!(core_writes!(), "; COMMIT");

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

impl Op {
    /// Ops that run after the merged writes, each with statements of its own.
    fn runs_after_writes(&self) -> bool {
        matches!(
            self,
            Op::ClaimMessages { .. }
                | Op::ClaimActivities { .. }
                | Op::Abandon { .. }
                | Op::Purge { .. }
                | Op::CleanEntities { .. }
        )
    }
}

/// A JSON array parameter.
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

#[derive(Default)]
struct State {
    instances: HashMap<String, InstanceState>,
    /// Work item id -> lease owner.
    items: HashMap<i64, Option<String>>,
    next_message_id: i64,
    next_item_id: i64,
}

struct InstanceState {
    status: String,
    history_len: i64,
    locked_by: Option<String>,
    locked_until: Option<i64>,
}

/// What the batch changes, besides rows: notifications to send after the commit.
#[derive(Default)]
struct Effects {
    work: bool,
    finished: Vec<String>,
}

/// The merged writes of a batch, as JSON-array parameters.
#[derive(Default)]
struct Plan {
    /// [instance_id, name, version, input, created_at]
    new_instances: Vec<(String, String, String, String, i64)>,
    /// Finished instances being started again: their old rows go.
    replaced: Vec<String>,
    /// [instance_id, idx, event]
    history: Vec<(String, i64, String)>,
    consumed: Vec<i64>,
    /// Instances that finished in this batch: their remaining messages go.
    finished: Vec<String>,
    done_items: Vec<i64>,
    messages: Vec<MessageRow>,
    /// [id, instance_id, seq, name, input, execution, locked_by, locked_until]
    activities: Vec<ActivityRow>,
    updates: Vec<Update>,
    reset_leases: bool,
    /// Failed instances asked to rewind: Pending again at once, so nobody waiting for them
    /// takes the old failure for the outcome.
    rewound: Vec<String>,
    /// Entities addressed for the first time: [instance_id, name, created_at].
    new_entities: Vec<(String, String, i64)>,
    /// [instance_id, state, lock_owner, updated_at]
    entity_updates: Vec<(String, Option<String>, Option<String>, i64)>,
    /// Instances whose history a turn replaces (continue-as-new, rewind).
    reset_history: Vec<String>,
    /// [owner, until]
    renewals: Vec<(String, i64)>,
    /// [instance_id, owner]
    releases: Vec<(String, String)>,
    release_all: Vec<String>,
    effects: Effects,
}

/// [id, instance_id, visible_at, message, execution, locked_by, locked_until]
type MessageRow = (
    i64,
    String,
    i64,
    String,
    Option<u32>,
    Option<String>,
    Option<i64>,
);

/// [id, instance_id, seq, name, input, execution, locked_by, locked_until]
type ActivityRow = (i64, String, i64, String, String, u32, String, i64);

/// [instance_id, status, output, failure, custom_status, history_len, updated_at,
///  completed_at, locked_by, locked_until, reset]; with `reset`, output, failure and
/// completed_at are set as given (a rewound instance loses its failure).
#[derive(Serialize)]
struct Update(
    String,
    Option<&'static str>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    bool,
);

impl Plan {
    fn has_core_writes(&self) -> bool {
        !(self.history.is_empty()
            && self.reset_history.is_empty()
            && self.rewound.is_empty()
            && self.new_entities.is_empty()
            && self.entity_updates.is_empty()
            && self.consumed.is_empty()
            && self.finished.is_empty()
            && self.done_items.is_empty()
            && self.messages.is_empty()
            && self.activities.is_empty()
            && self.updates.is_empty())
    }

    fn has_lease_writes(&self) -> bool {
        self.reset_leases
            || !self.renewals.is_empty()
            || !self.releases.is_empty()
            || !self.release_all.is_empty()
    }

    fn add_message(
        &mut self,
        state: &mut State,
        instance_id: &str,
        visible_at: i64,
        event: &Event,
        execution: Option<u32>,
        claimed: Option<(&str, i64)>,
    ) -> i64 {
        let id = state.next_message_id;
        state.next_message_id += 1;
        self.messages.push((
            id,
            instance_id.to_owned(),
            visible_at,
            encode_event(event),
            execution,
            claimed.map(|(owner, _)| owner.to_owned()),
            claimed.map(|(_, until)| until),
        ));
        id
    }

    /// Validates one op against the current state and adds its writes to the plan.
    fn apply(&mut self, op: &Op, state: &mut State, now: i64) -> Outcome {
        match op {
            Op::Create { instance, .. } => Outcome::Unit(self.create(instance, state)),
            Op::Enqueue {
                instance_id,
                event,
                visible_at,
                ..
            } => Outcome::Unit(if self.ensure_target(state, instance_id, now) {
                let visible_at = visible_at.map_or(now, |at| millis(at).max(now));
                self.add_message(state, instance_id, visible_at, event, None, None);
                if matches!(event, Event::ExecutionRewound { .. }) {
                    self.rewound.push(instance_id.clone());
                }
                if visible_at <= now {
                    self.effects.work = true;
                }
                Ok(())
            } else {
                Err(Error::InstanceNotFound(instance_id.clone()))
            }),
            Op::Turn { turn, .. } => Outcome::Turn(self.turn(turn, state, now)),
            Op::Complete { completion, .. } => {
                Outcome::Delivered(Ok(self.complete(completion, state, now)))
            }
            Op::Renew {
                owner, lease_until, ..
            } => {
                self.renewals.push((owner.clone(), millis(*lease_until)));
                Outcome::Unit(Ok(()))
            }
            Op::Release {
                instance_id, owner, ..
            } => {
                self.releases.push((instance_id.clone(), owner.clone()));
                if let Some(instance) = state.instances.get_mut(instance_id)
                    && instance.locked_by.as_deref() == Some(owner)
                {
                    instance.locked_by = None;
                    instance.locked_until = None;
                }
                Outcome::Unit(Ok(()))
            }
            Op::ReleaseAll { owner, .. } => {
                self.release_all.push(owner.clone());
                self.effects.work = true;
                Outcome::Unit(Ok(()))
            }
            Op::ResetLeases { .. } => {
                self.reset_leases = true;
                Outcome::Unit(Ok(()))
            }
            // Filled in after the writes.
            Op::ClaimMessages { .. } => Outcome::Messages(Ok(Vec::new())),
            Op::ClaimActivities { .. } => Outcome::Items(Ok(Vec::new())),
            Op::Abandon { .. } => Outcome::Unit(Ok(())),
            Op::Purge { .. } => Outcome::Count(Ok(0)),
            Op::CleanEntities { .. } => Outcome::Cleanup(Ok(EntityCleanup::default())),
        }
    }

    /// Whether a message may go to `instance_id`: an existing instance, or an entity, which
    /// exists from its first message on (its row is created here).
    fn ensure_target(&mut self, state: &mut State, instance_id: &str, now: i64) -> bool {
        if state.instances.contains_key(instance_id) {
            return true;
        }
        let Some(entity) = EntityId::from_instance_id(instance_id) else {
            return false;
        };
        self.new_entities
            .push((instance_id.to_owned(), entity.name, now));
        state.instances.insert(
            instance_id.to_owned(),
            InstanceState {
                status: RuntimeStatus::Running.as_str().to_owned(),
                history_len: 0,
                locked_by: None,
                locked_until: None,
            },
        );
        true
    }

    fn create(&mut self, instance: &NewInstance, state: &mut State) -> Result<(), Error> {
        if let Some(existing) = state.instances.get(&instance.instance_id) {
            let finished = existing
                .status
                .parse::<RuntimeStatus>()
                .is_ok_and(RuntimeStatus::is_terminal);
            if !finished {
                return Err(Error::InstanceExists {
                    instance_id: instance.instance_id.clone(),
                    status: existing.status.clone(),
                });
            }
            self.replaced.push(instance.instance_id.clone());
        }
        let created_at = millis(instance.created_at);
        self.new_instances.push((
            instance.instance_id.clone(),
            instance.name.clone(),
            instance.version.clone(),
            instance.input.as_str().to_owned(),
            created_at,
        ));
        state.instances.insert(
            instance.instance_id.clone(),
            InstanceState {
                status: RuntimeStatus::Pending.as_str().to_owned(),
                history_len: 0,
                locked_by: None,
                locked_until: None,
            },
        );
        let start = Event::ExecutionStarted {
            name: instance.name.clone(),
            version: instance.version.clone(),
            input: instance.input.clone(),
            execution: 0,
            parent: instance.parent.clone(),
        };
        self.add_message(state, &instance.instance_id, created_at, &start, None, None);
        self.effects.work = true;
        Ok(())
    }

    fn turn(
        &mut self,
        turn: &TurnCommit,
        state: &mut State,
        now: i64,
    ) -> Result<TurnCommitted, Error> {
        let Some(instance) = state.instances.get(&turn.instance_id) else {
            return Err(Error::InstanceNotFound(turn.instance_id.clone()));
        };
        let lease_ok = instance.locked_by.is_none()
            || instance.locked_by.as_deref() == Some(turn.owner.as_str())
            || instance.locked_until.is_some_and(|until| until < now);
        if !lease_ok {
            return Err(Error::Conflict {
                instance_id: turn.instance_id.clone(),
            });
        }
        let start = i64::try_from(turn.history_start).unwrap_or(i64::MAX);
        if turn.reset_history {
            self.reset_history.push(turn.instance_id.clone());
        } else if instance.history_len != start {
            return Err(Error::store_transient(format!(
                "the history of instance `{}` has {} events, but this worker expected {}; reloading it",
                turn.instance_id, instance.history_len, start
            )));
        }
        for (i, event) in turn.new_events.iter().enumerate() {
            self.history.push((
                turn.instance_id.clone(),
                start + i as i64,
                encode_event(event),
            ));
        }
        self.consumed.extend(&turn.consumed);
        self.done_items.extend(&turn.completed_activities);
        let lease_until = millis(turn.lease_until);
        let mut activity_ids = Vec::with_capacity(turn.activities.len());
        for activity in &turn.activities {
            let id = state.next_item_id;
            state.next_item_id += 1;
            self.activities.push((
                id,
                turn.instance_id.clone(),
                i64::try_from(activity.seq).unwrap_or(i64::MAX),
                activity.name.clone(),
                activity.input.as_str().to_owned(),
                turn.execution,
                turn.owner.clone(),
                lease_until,
            ));
            activity_ids.push(id);
        }
        let terminal = turn.status.is_some_and(RuntimeStatus::is_terminal);
        for child in &turn.new_instances {
            if let Err(error) = self.create(child, state)
                && let Some(parent) = &child.parent
            {
                // The child could not start: its parent gets the failure.
                let failed = Event::SubOrchestrationFailed {
                    seq: parent.seq,
                    failure: error.to_failure(),
                };
                self.add_message(
                    state,
                    &parent.instance_id,
                    now,
                    &failed,
                    Some(parent.execution),
                    None,
                );
            }
        }
        for message in &turn.messages {
            if terminal && message.instance_id == turn.instance_id {
                continue; // the instance is done: its own timers would only be dropped
            }
            if !self.ensure_target(state, &message.instance_id, now) {
                tracing::debug!(instance_id = %message.instance_id, "dropping a message to an instance that does not exist");
                continue;
            }
            let visible_at = millis(message.visible_at);
            self.add_message(
                state,
                &message.instance_id,
                visible_at,
                &message.event,
                message.execution,
                None,
            );
            if visible_at <= now {
                self.effects.work = true;
            }
        }
        if let Some(entity) = &turn.entity {
            self.entity_updates.push((
                turn.instance_id.clone(),
                entity.state.as_ref().map(|p| p.as_str().to_owned()),
                entity.lock_owner.clone(),
                millis(turn.now),
            ));
        }
        let history_len = start + turn.new_events.len() as i64;
        let updated_at = millis(turn.now);
        if terminal {
            self.finished.push(turn.instance_id.clone());
            self.effects.finished.push(turn.instance_id.clone());
        }
        let locked_by = (!terminal).then(|| turn.owner.clone());
        let locked_until = (!terminal).then_some(lease_until);
        self.updates.push(Update(
            turn.instance_id.clone(),
            turn.status.map(RuntimeStatus::as_str),
            turn.output.as_ref().map(|p| p.as_str().to_owned()),
            turn.failure
                .as_ref()
                .and_then(|f| serde_json::to_string(f).ok()),
            turn.custom_status.as_ref().map(|p| p.as_str().to_owned()),
            history_len,
            updated_at,
            terminal.then_some(updated_at),
            locked_by.clone(),
            locked_until,
            turn.reset_history,
        ));
        if let Some(instance) = state.instances.get_mut(&turn.instance_id) {
            instance.history_len = history_len;
            instance.locked_by = locked_by;
            instance.locked_until = locked_until;
            if let Some(status) = turn.status {
                instance.status = status.as_str().to_owned();
            }
        }
        Ok(TurnCommitted { activity_ids })
    }

    fn complete(
        &mut self,
        completion: &ActivityCompletion,
        state: &mut State,
        now: i64,
    ) -> Option<OrchestrationMessage> {
        // Only the worker holding the item completes it; a worker whose lease lapsed (and
        // whose item another worker took over, or already completed) commits nothing.
        let held = state
            .items
            .get(&completion.item_id)
            .is_some_and(|owner| owner.as_deref() == Some(completion.owner.as_str()));
        if !held {
            return None;
        }
        state.items.remove(&completion.item_id);
        self.done_items.push(completion.item_id);
        let instance = state.instances.get(&completion.instance_id)?;
        let claimed = instance.locked_by.as_deref() == Some(completion.owner.as_str())
            && instance.locked_until.is_some_and(|until| until >= now);
        let lease_until = millis(completion.lease_until);
        let id = self.add_message(
            state,
            &completion.instance_id,
            now,
            &completion.event,
            Some(completion.execution),
            claimed.then_some((completion.owner.as_str(), lease_until)),
        );
        if claimed {
            Some(OrchestrationMessage {
                id,
                instance_id: completion.instance_id.clone(),
                event: completion.event.clone(),
                execution: Some(completion.execution),
            })
        } else {
            self.effects.work = true;
            None
        }
    }
}
