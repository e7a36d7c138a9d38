//! The SQLite store: one database file, WAL, one writer with group commit.
//!
//! * **Writes** go to one writer thread that owns the only write connection: there is never
//!   write contention inside the process (no `SQLITE_BUSY`), and every call waiting when a
//!   transaction starts shares it (`writer`). Contention with other processes on the same
//!   file (a CLI raising an event) is absorbed by SQLite's busy timeout plus retries with
//!   backoff.
//! * **Reads** (history, status, lists) use a small pool of read-only connections, which WAL
//!   lets run while the writer writes.
//! * **One worker per file**: [`Store::register_worker`] takes an exclusive lock on
//!   `<file>-worker.lock`, so leases left by a killed worker are released at once on restart.
//!   Clients (start, raise, status) need no lock and may run in any number of processes.

mod direct;
mod writer;

use direct::Direct;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use duractor::entity::EntityId;
use duractor::flow::FlowRule;
use duractor::store::{
    ActivityCompletion, ActivityHeartbeat, ActivityStatus, Admission, ClaimedActivities,
    EntityCleanup, EntityQuery, EntityStatus, FlowKind, FlowStatus, HeldWork, InstanceQuery,
    InstanceStatus, MemoryCall, NewInstance, OrchestrationMessage, PurgeQuery, StoreEvents,
    StoreStats, TurnCommit, TurnCommitted,
};
use duractor::{Error, Event, Store};
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::mpsc;

use crate::batch::Writes;
use crate::common::{decode_event, from_millis};
use crate::error::{StoreError, transient_in_any_database};
use crate::rows::{self, INSTANCE_COLUMNS, entity_status, instance_status};
use writer::Writer;

/// How durable each commit is on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `synchronous=NORMAL` (default): with WAL, a commit survives a process crash; the last
    /// commits may be lost on a power failure or OS crash.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced; survives power loss, slower.
    Full,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// Disk durability of commits (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// How long to wait for another process's write lock before retrying (default 5 s).
    pub busy_timeout: Duration,
    /// Read-only connections for queries (default 4).
    pub read_connections: u32,
    /// Most store calls committed in one transaction (default 1000).
    pub max_batch: usize,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        SqliteStoreOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            max_batch: 1000,
        }
    }
}

/// The SQLite store. Cheap to clone: clones share the file, the writer and the notifications.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    reader: SqlitePool,
    writer: Writes,
    events: Arc<StoreEvents>,
    worker_lock: Mutex<Option<File>>,
    options: SqliteStoreOptions,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` with default options, and
    /// brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, SqliteStoreOptions::default()).await
    }

    /// Opens a database given as a URL: `sqlite://path/to/file.db` or `sqlite:file.db`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "`{url}` is not a SQLite URL; expected `sqlite://path/to/file.db`"
                ))
            })?;
        let path = path.split('?').next().unwrap_or(path);
        Self::open(path).await
    }

    /// Opens the database file at `path` with `options`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteStoreOptions,
    ) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
            return Err(Error::InvalidArgument(
                "the SQLite store needs a file path (in-memory databases are not durable)".into(),
            ));
        }
        let synchronous = match options.synchronous {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        };
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(options.busy_timeout)
            .pragma("temp_store", "memory")
            // Checkpoints (which fsync the database file) run on a background connection,
            // not inside the writer's commits; see `writer::checkpoint`.
            .pragma("wal_autocheckpoint", "0")
            .statement_cache_capacity(64);
        let context = format!("opening SQLite database {}", path.display());
        let mut conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| store_error(&context, e))?;
        migrator()
            .run(&mut conn)
            .await
            .map_err(|e| Error::store(format!("migrating {}: {e}", path.display())))?;
        // Fence rows of writers that have not written for a week (every open store adds one).
        let week_ago = crate::common::now_ms() - 7 * 24 * 3600 * 1000;
        if let Err(error) = sqlx::query("DELETE FROM writers WHERE updated_at < ?1")
            .bind(week_ago)
            .execute(&mut conn)
            .await
        {
            tracing::debug!(%error, "forgetting old writers failed");
        }

        // No ping when a read connection is taken: it is a file handle on this machine, not a
        // socket that can go stale, and sqlx's ping is a round trip to the connection's
        // thread (two thread hops before every read; sqlx pings it when it is given back
        // anyway).
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            .test_before_acquire(false)
            .connect_lazy_with(connect.clone().read_only(true));

        let direct = open_direct(&path, &options).map_err(|e| store_error(&context, e))?;
        let checkpointer = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| store_error(&context, e))?;
        let events = Arc::new(StoreEvents::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (warmed, warming) = tokio::sync::oneshot::channel();
        Writer::spawn(
            conn,
            direct,
            checkpointer,
            rx,
            events.clone(),
            options.max_batch,
            warmed,
        )
        .map_err(|e| Error::store(format!("starting the SQLite writer thread: {e}")))?;
        // The first turns find their statements prepared (a writer that failed to start
        // answers its first op with the error).
        let _ = warming.await;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                reader,
                writer: Writes::new(tx, "SQLite"),
                events,
                worker_lock: Mutex::new(None),
                options,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteStoreOptions {
        &self.inner.options
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.inner.path.as_os_str().to_owned();
        name.push("-worker.lock");
        PathBuf::from(name)
    }
}

/// The embedded migrations. As on PostgreSQL, migrations only add, so a command-line client
/// of the previous release still opens a file a newer release migrated.
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let migration = |version, description: &str, sql: &'static str| {
        Migration::new(
            version,
            description.to_owned().into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )
    };
    let mut migrator = Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        migration(
            2,
            "writers",
            include_str!("../../migrations/sqlite/0002_writers.sql"),
        ),
        migration(
            3,
            "activity bounds",
            include_str!("../../migrations/sqlite/0003_activity_bounds.sql"),
        ),
        migration(
            4,
            "flow control",
            include_str!("../../migrations/sqlite/0004_flow_control.sql"),
        ),
        migration(
            5,
            "orchestration flow control",
            include_str!("../../migrations/sqlite/0005_orchestration_flow.sql"),
        ),
        migration(
            6,
            "memory calls",
            include_str!("../../migrations/sqlite/0006_memory_calls.sql"),
        ),
    ]);
    migrator.set_ignore_missing(true);
    migrator
}

/// The writer's second connection to `path`, for its guarded batches ([`Direct`]), with the
/// settings [`SqliteStore::open_with`] gives sqlx's connections.
fn open_direct(path: &Path, options: &SqliteStoreOptions) -> Result<Direct, sqlx::Error> {
    let synchronous = match options.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    Direct::open(
        path,
        options.busy_timeout,
        &format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; \
             PRAGMA temp_store = memory; PRAGMA wal_autocheckpoint = 0"
        ),
    )
}

/// Whether a SQLite error may pass: the database busy or locked by another process
/// (`SQLITE_BUSY` 5, `SQLITE_LOCKED` 6, and the extended codes 261 and 517: busy while
/// recovering, busy on a stale snapshot), or a failure that may pass with any database
/// ([`transient_in_any_database`]).
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            message.contains("database is locked")
                || message.contains("database is busy")
                || matches!(db.code().as_deref(), Some("5" | "6" | "261" | "517"))
        }
        error => transient_in_any_database(error),
    }
}

/// A store error from a SQLite error met while doing `context`.
fn store_error(context: &str, error: sqlx::Error) -> StoreError {
    StoreError::new(context, is_transient(&error), error)
}

#[async_trait]
impl Store for SqliteStore {
    async fn register_worker(&self, owner: &str) -> Result<(), Error> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::store(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::InvalidArgument(format!(
                    "another duractor worker is already running on {} (it holds {}); \
                     run one worker per SQLite file, or use PostgreSQL for several workers",
                    self.inner.path.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::store(format!("locking {}: {e}", path.display())));
            }
        }
        // We are the only worker on this file: leases left by a previous one are void.
        self.inner.writer.reset_leases().await?;
        *self
            .inner
            .worker_lock
            .lock()
            .map_err(|_| Error::store("worker lock poisoned"))? = Some(file);
        tracing::debug!(owner, path = %self.inner.path.display(), "worker registered");
        Ok(())
    }

    async fn unregister_worker(&self, owner: &str) -> Result<(), Error> {
        let result = self.inner.writer.release_all(owner).await;
        if let Ok(mut lock) = self.inner.worker_lock.lock() {
            lock.take();
        }
        result
    }

    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        self.inner.writer.create_instance(instance).await
    }

    async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        self.inner
            .writer
            .create_instance_claimed(instance, owner, lease_until)
            .await
    }

    async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        self.inner
            .writer
            .enqueue(instance_id, event, visible_at)
            .await
    }

    async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.inner
            .writer
            .abandon_messages(owner, ids, visible_at)
            .await
    }

    async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        self.inner.writer.purge_instances(query).await
    }

    async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        self.inner
            .writer
            .claim_messages(owner, limit, lease_until)
            .await
    }

    async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error> {
        self.inner
            .writer
            .claim_activities(owner, names, rules, limit, lease_until)
            .await
    }

    async fn flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        let now = crate::common::millis(self.clock().now());
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT name, flow_key, \
                 sum(CASE WHEN locked_until >= ?2 THEN 1 ELSE 0 END), \
                 sum(CASE WHEN locked_until IS NULL OR locked_until < ?2 THEN 1 ELSE 0 END) \
             FROM activity_queue WHERE name IN (SELECT value FROM json_each(?1)) \
             GROUP BY name, flow_key ORDER BY name, flow_key",
        )
        .bind(crate::common::json(names))
        .bind(now)
        .fetch_all(&self.inner.reader)
        .await
        .map_err(|e| store_error("counting flow-controlled work", e))?;
        Ok(crate::common::flow_statuses(FlowKind::Activity, rows))
    }

    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        self.inner.writer.admit_instances(rules).await
    }

    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT f.name, f.flow_key, \
                 sum(CASE WHEN f.admitted = 1 THEN 1 ELSE 0 END), \
                 sum(CASE WHEN f.admitted = 0 THEN 1 ELSE 0 END) \
             FROM flow_instances f LEFT JOIN instances i ON i.instance_id = f.instance_id \
             WHERE f.name IN (SELECT value FROM json_each(?1)) \
               AND (f.admitted = 0 OR i.status IN ('Pending', 'Running', 'Suspended')) \
             GROUP BY f.name, f.flow_key ORDER BY f.name, f.flow_key",
        )
        .bind(crate::common::json(names))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(|e| store_error("counting flow-controlled instances", e))?;
        Ok(crate::common::flow_statuses(FlowKind::Orchestration, rows))
    }

    async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        self.inner.writer.commit_turn(turn).await
    }

    async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        self.inner.writer.complete_activity(completion).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        self.inner
            .writer
            .renew_leases(owner, held, lease_until)
            .await
    }

    async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
        _now: DateTime<Utc>,
    ) -> Result<Vec<i64>, Error> {
        self.inner
            .writer
            .sync_activities(owner, heartbeats, running)
            .await
    }

    async fn list_activities(&self, instance_id: &str) -> Result<Vec<ActivityStatus>, Error> {
        let sql = format!(
            "SELECT {} FROM activity_queue WHERE instance_id = ?1 ORDER BY id",
            rows::ACTIVITY_STATUS_COLUMNS
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance_id)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(|e| store_error("listing activity work items", e))?;
        rows::activity_statuses(&found)
    }

    fn keeps_calls_in_memory(&self) -> bool {
        true
    }

    fn creates_with_turn(&self) -> bool {
        true
    }

    async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        self.inner
            .writer
            .persist_calls(owner, calls, lease_until)
            .await
    }

    async fn recover_calls(&self) -> Result<u64, Error> {
        self.inner.writer.recover_calls().await
    }

    async fn release_instance(&self, instance_id: &str, owner: &str) -> Result<(), Error> {
        self.inner.writer.release_instance(instance_id, owner).await
    }

    async fn load_history(&self, instance_id: &str) -> Result<Vec<Event>, Error> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event FROM history WHERE instance_id = ?1 ORDER BY idx")
                .bind(instance_id)
                .fetch_all(&self.inner.reader)
                .await
                .map_err(|e| store_error("loading history", e))?;
        rows.iter().map(|(json,)| decode_event(json)).collect()
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error> {
        const SQL: &str = "SELECT instance_id, name, version, status, input, output, failure, \
             custom_status, created_at, updated_at, completed_at FROM instances \
             WHERE instance_id = ?1 AND kind = 'orchestration'";
        let row = sqlx::query(SQL)
            .bind(instance_id)
            .fetch_optional(&self.inner.reader)
            .await
            .map_err(|e| store_error("reading instance status", e))?;
        row.as_ref().map(instance_status).transpose()
    }

    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        let statuses = serde_json::to_string(&statuses).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE kind = 'orchestration' \
               AND (?1 = '[]' OR status IN (SELECT value FROM json_each(?1))) \
               AND (?2 IS NULL OR substr(instance_id, 1, length(?2)) = ?2) \
               AND (?3 IS NULL OR created_at >= ?3) \
               AND (?4 IS NULL OR created_at < ?4) \
               AND (?5 IS NULL OR instance_id > ?5) \
               AND (?7 IS NULL OR name = ?7) \
             ORDER BY instance_id LIMIT ?6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(statuses)
            .bind(query.instance_id_prefix.as_deref())
            .bind(query.created_from.map(crate::common::millis))
            .bind(query.created_to.map(crate::common::millis))
            .bind(query.after.as_deref())
            .bind(i64::from(query.limit.unwrap_or(100).min(10_000)))
            .bind(query.name.as_deref())
            .fetch_all(&self.inner.reader)
            .await
            .map_err(|e| store_error("listing instances", e))?;
        rows.iter().map(instance_status).collect()
    }

    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(visible_at) FROM orch_queue WHERE locked_by IS NULL AND visible_at > ?1",
        )
        .bind(crate::common::now_ms())
        .fetch_one(&self.inner.reader)
        .await
        .map_err(|e| store_error("looking for the next timer", e))?;
        Ok(next.map(from_millis))
    }

    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        let row = sqlx::query(
            "SELECT instance_id, entity_state, lock_owner, created_at, updated_at FROM instances \
             WHERE instance_id = ?1 AND kind = 'entity'",
        )
        .bind(id.instance_id())
        .fetch_optional(&self.inner.reader)
        .await
        .map_err(|e| store_error("reading an entity", e))?;
        row.as_ref().map(entity_status).transpose()
    }

    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        let prefix = query.name.as_ref().map(|name| {
            format!(
                "@{name}@{}",
                query.key_prefix.as_deref().unwrap_or_default()
            )
        });
        let rows = sqlx::query(
            "SELECT instance_id, entity_state, lock_owner, created_at, updated_at FROM instances \
             WHERE kind = 'entity' \
               AND (?1 IS NULL OR substr(instance_id, 1, length(?1)) = ?1) \
               AND (?2 OR entity_state IS NOT NULL) \
               AND (?3 IS NULL OR instance_id > ?3) \
               AND (?5 IS NULL OR substr(instance_id, instr(substr(instance_id, 2), '@') + 2, \
                                        length(?5)) = ?5) \
             ORDER BY instance_id LIMIT ?4",
        )
        .bind(prefix)
        .bind(query.include_empty)
        .bind(query.after.as_ref().map(EntityId::instance_id))
        .bind(i64::from(query.limit.unwrap_or(100).min(10_000)))
        .bind(crate::common::key_prefix_of_any_name(query))
        .fetch_all(&self.inner.reader)
        .await
        .map_err(|e| store_error("listing entities", e))?;
        rows.iter().map(entity_status).collect()
    }

    async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.inner.writer.clean_entities().await
    }

    fn events(&self) -> &StoreEvents {
        &self.inner.events
    }

    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        // `$1` is a named parameter to SQLite: both uses take the one bound value.
        let rows: Vec<(String, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(crate::common::stats_sql("json_each")))
                .bind(crate::common::now_ms())
                .fetch_all(&self.inner.reader)
                .await
                .map_err(|e| store_error("counting queued work", e))?;
        crate::common::stats_from_rows(rows).map(Some)
    }
}
