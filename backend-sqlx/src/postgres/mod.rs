//! The PostgreSQL store: many worker processes on many machines share one database.
//!
//! * **Competing workers.** Instances, their messages and activity work items are claimed
//!   with `FOR UPDATE SKIP LOCKED` under a lease (owner + expiry) that each worker renews while
//!   it lives. A worker that dies loses its leases when they lapse and another takes the work
//!   over; a worker whose lease lapsed cannot commit over the new owner (every commit checks
//!   the lease and the history length under a row lock, and fails cleanly otherwise).
//! * **Group commit.** Each process batches its store calls into shared transactions, like the
//!   SQLite store (`writer`).
//! * **Wake-ups.** Commits that make work available `NOTIFY` a channel every worker `LISTEN`s
//!   to; polling (which the runtime always keeps, backing off when idle) covers notifications
//!   lost while a connection was down. Finished instances are notified too, so clients in
//!   other processes waiting for them wake at once.
//! * **Connection faults.** Every batch runs on a pooled connection; a dropped connection
//!   fails the batch with a transient error, and the batch is retried with backoff on a new
//!   connection. Nothing is committed twice: a batch is one transaction.
//! * **Schemas.** All tables live in the store's schema (default `duractor`), so several apps
//!   can share one database.
//!
//! All database I/O runs on the store's own thread and tokio runtime, so the store can be used
//! from any runtime (the actix threads of the worker, a test's runtime, a CLI's).

mod workers;
mod writer;

use std::future::Future;
use std::sync::Arc;
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
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Attempts, Writes, run_writer};
use crate::common::{decode_event, from_millis, millis};
use crate::error::{StoreError, transient_in_any_database};
use crate::rows::{self, INSTANCE_COLUMNS, entity_status, instance_status};
use writer::Writer;

/// A pooled connection idle for at least this long is pinged before it is used.
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

/// An instance's history, in order.
const LOAD_HISTORY: &str = "SELECT event FROM history WHERE instance_id = $1 ORDER BY idx";

/// An orchestration's status.
const GET_INSTANCE: &str = "SELECT instance_id, name, version, status, input, output, failure, \
     custom_status, created_at, updated_at, completed_at FROM instances \
     WHERE instance_id = $1 AND kind = 'orchestration'";

/// How many pooled connections a store opens and warms when it opens ([`warm_pool`]): one
/// for the claims and one for the reads that run beside them.
const WARM_CONNECTIONS: usize = 2;

/// Opens `count` pooled connections and runs on each, once, the statements a worker and a
/// client run on every start or wait — claims that take nothing, reads of an instance id no
/// instance has — so those find their statements prepared and the server process's caches
/// filled: the first claim on a new connection took 4–14 ms, a warm one 0.3–1 ms. Writes
/// nothing; a failure only leaves the rest cold.
async fn warm_pool(pool: &PgPool, count: usize) {
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..count {
        match pool.acquire().await {
            Ok(conn) => held.push(conn),
            Err(_) => break,
        }
    }
    for conn in &mut held {
        let warmed = async {
            writer::warm_claims(conn).await?;
            sqlx::query(LOAD_HISTORY)
                .bind("")
                .execute(&mut **conn)
                .await?;
            sqlx::query(GET_INSTANCE)
                .bind("")
                .execute(&mut **conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        };
        if let Err(error) = warmed.await {
            tracing::debug!(%error, "warming a pooled connection failed; its statements are prepared when first used");
        }
    }
    tracing::debug!(
        connections = held.len(),
        warm_us = started.elapsed().as_micros() as u64,
        "pooled connections warmed"
    );
}

/// Options for [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresStoreOptions {
    /// The schema holding duractor's tables (created if missing; default `duractor`).
    pub schema: String,
    /// Connections in the pool (default 8).
    pub max_connections: u32,
    /// Most store calls committed in one transaction (default 1000).
    pub max_batch: usize,
}

impl Default for PostgresStoreOptions {
    fn default() -> Self {
        PostgresStoreOptions {
            schema: "duractor".to_owned(),
            max_connections: 8,
            max_batch: 1000,
        }
    }
}

/// The PostgreSQL store. Cheap to clone: clones share the pool, the writer and the
/// notifications.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    writer: Writes,
    /// The channel that tells every worker of the schema that work is ready.
    work_channel: String,
    /// The schema's live workers, as this process sees them: who claims a lone start.
    workers: Arc<workers::Workers>,
    events: Arc<StoreEvents>,
    runtime: tokio::runtime::Handle,
    options: PostgresStoreOptions,
    /// Dropping it stops the store's thread.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.options.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) with default options and brings
    /// the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, PostgresStoreOptions::default()).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: PostgresStoreOptions) -> Result<Self, Error> {
        let schema = options.schema.clone();
        if schema.is_empty()
            || schema.len() > 63
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::InvalidArgument(format!(
                "`{schema}` is not a valid schema name: use up to 63 letters, digits and `_`"
            )));
        }
        let connect: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "`{}` is not a PostgreSQL URL: {e}",
                    duractor::store::redact_password(url)
                ))
            })?
            // A transaction left open by a connection the server cannot see is dead (a
            // network partition) ends after a minute, so a writer settling a commit whose
            // answer was lost never waits longer than that for the row it locked.
            .options([
                ("search_path", schema.as_str()),
                ("idle_in_transaction_session_timeout", "60000"),
            ])
            .application_name(&format!("duractor:{schema}"))
            .log_statements(tracing::log::LevelFilter::Trace);

        // The store's own thread and runtime: all database I/O happens there.
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("duractor-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::store(format!(
                            "starting the PostgreSQL thread: {e}"
                        ))));
                        return;
                    }
                };
                let handle = runtime.handle().clone();
                let _ = ready_tx.send(Ok(handle));
                runtime.block_on(async move {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| Error::store(format!("starting the PostgreSQL thread: {e}")))?;
        let runtime = ready_rx
            .await
            .map_err(|_| Error::store("the PostgreSQL thread did not start"))??;

        let max_connections = options.max_connections.max(2);
        let setup_connect = connect.clone();
        let setup_connect_guarded = connect.clone();
        let listener_connect = connect.clone();
        let (pool, guarded_conn, guarded_options) = spawn_on(&runtime, async move {
            // Create the schema with a connection that does not depend on it.
            let mut admin = setup_connect
                .clone()
                .options([("search_path", "public")])
                .connect()
                .await
                .map_err(|e| store_error("connecting to PostgreSQL", e))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&mut admin)
            .await
            .map_err(|e| store_error("creating the schema", e))?;
            let _ = sqlx::Connection::close(admin).await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                // A connection in steady use is not pinged before each use (a round trip
                // per claim, read or batch); one that sat idle may have been cut off (a
                // server restart, a firewall) and is. sqlx still pings every connection
                // given back, in the background, dropping a broken one.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(setup_connect)
                .await
                .map_err(|e| store_error("connecting to PostgreSQL", e))?;
            migrator()
                .run(&pool)
                .await
                .map_err(|e| Error::store(format!("migrating the PostgreSQL schema: {e}")))?;
            forget_old_writers(&pool).await;
            warm_pool(&pool, WARM_CONNECTIONS).await;
            // The writer's guarded batches run on a connection of their own, with settings
            // of its own (`writer::GUARDED_SETTINGS`: plans made once, reaching rows by key).
            // Only the writer uses it, one batch at a time. It connects now, not in the
            // first turn.
            let guarded_options = setup_connect_guarded
                .options(writer::GUARDED_SETTINGS)
                .statement_cache_capacity(writer::GUARDED_STATEMENTS);
            let guarded_conn = writer::GuardedConnection::connect(&guarded_options)
                .await
                .map_err(|e| store_error("connecting to PostgreSQL", e))?;
            Ok::<_, Error>((pool, guarded_conn, guarded_options))
        })
        .await?;

        let events = Arc::new(StoreEvents::default());
        // Channel names are identifiers (at most 63 bytes): name them by a hash of the schema.
        let tag = workers::hash_text(&options.schema);
        let work_channel = format!("duractor_{tag:016x}_work");
        let finished_channel = format!("duractor_{tag:016x}_finished");
        let finished_rows_channel = format!("duractor_{tag:016x}_finished_rows");
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            pool: pool.clone(),
            work_channel: work_channel.clone(),
            finished_channel: finished_channel.clone(),
            finished_rows_channel: finished_rows_channel.clone(),
            attempts: Attempts::new(),
            message_ids: Vec::new(),
            item_ids: Vec::new(),
            guarded_conn: Some(guarded_conn),
            guarded_options,
            guarded_failures: 0,
            guarded_retry_at: None,
            unsettled_backend: None,
            guarded_sql: std::collections::HashMap::new(),
        };
        // The first turns find their statements planned.
        let writer = spawn_on(&runtime, async move {
            let mut writer = writer;
            writer.warm().await;
            Ok(writer)
        })
        .await?;
        runtime.spawn(run_writer(writer, rx, events.clone(), options.max_batch));
        let workers = Arc::new(workers::Workers::new(&options.schema, tag));
        // The listener's connection comes from a pool of its own: it carries the worker's
        // name while one is registered ([`workers`]), and must never serve another query
        // under that name once given back.
        let listener_pool = spawn_on(&runtime, async move {
            Ok(PgPoolOptions::new()
                .max_connections(1)
                // Never reused: a connection given back may still carry the worker name.
                .after_release(|_, _| Box::pin(async { Ok(false) }))
                // The server drops the listener of a host that vanished (a crash of the
                // machine, a partition) within about 8 s, and with it the worker name.
                .connect_lazy_with(listener_connect.options([
                    ("tcp_keepalives_idle", "5"),
                    ("tcp_keepalives_interval", "1"),
                    ("tcp_keepalives_count", "3"),
                ])))
        })
        .await?;
        runtime.spawn(listen(
            listener_pool,
            pool.clone(),
            [
                work_channel.clone(),
                finished_channel,
                finished_rows_channel,
            ],
            events.clone(),
            workers.clone(),
        ));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                writer: Writes::new(tx, "PostgreSQL"),
                work_channel,
                workers,
                events,
                runtime,
                options,
                _stop: stop_tx,
            }),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &PostgresStoreOptions {
        &self.inner.options
    }

    /// Drops the store's schema with everything in it (for tests and tear-downs). Stop the
    /// schema's workers first: the drop waits for every transaction on its tables, and a
    /// worker still polling can deadlock with it — the server then ends one of the two, and
    /// the drop is tried again, up to five times in all.
    pub async fn drop_schema(&self) -> Result<(), Error> {
        let schema = self.inner.options.schema.clone();
        let mut tries = 1;
        loop {
            let schema = schema.clone();
            let dropped = self
                .run(move |pool| {
                    let schema = schema.clone();
                    async move {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        )))
                        .execute(&pool)
                        .await
                        .map_err(|e| store_error("dropping the schema", e))?;
                        Ok(())
                    }
                })
                .await;
            match dropped {
                Err(error) if tries < DROP_TRIES && is_deadlock(&error) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                dropped => return dropped,
            }
        }
    }

    /// Runs a store call on the store's runtime with the pool; again, up to [`READ_TRIES`]
    /// times in all, when its pooled connection turns out to be gone (the server ended the
    /// session while it sat in the pool: a restart, `pg_terminate_backend`): the next try
    /// takes another or a new one. `call` makes each try's future. Every call run this way
    /// must be safe to run twice, even after a first run that committed but whose answer was
    /// lost: reads, the schema's `DROP … IF EXISTS`, and `admit_instances` (which finds what a
    /// first run did).
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(PgPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        spawn_on(&self.inner.runtime, async move {
            let mut tries = 1;
            loop {
                match call(pool.clone()).await {
                    Err(error) if tries < READ_TRIES && connection_lost(&error) => {
                        tracing::debug!(%error, "the pooled connection was gone; trying again");
                        tries += 1;
                    }
                    done => return done,
                }
            }
        })
        .await
    }
}

async fn spawn_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    future: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    runtime
        .spawn(future)
        .await
        .map_err(|e| Error::store(format!("the PostgreSQL thread failed: {e}")))?
}

impl PostgresStore {
    /// Wakes this process's listener (and every other: they read the list of live workers
    /// again) with [`workers::MEMBERSHIP_CHANGED`], so that it takes or gives up the worker
    /// name ([`name_listener`], which tells every worker again once it has). Best effort,
    /// and not waited for: until then, lone starts are claimed as before by whoever leads
    /// them (a worker not yet in the lists claims every lone start itself).
    fn wake_listener(&self) {
        let (pool, channel) = (self.inner.pool.clone(), self.inner.work_channel.clone());
        // Not awaited: neither the first claim nor a shutdown waits for it.
        self.inner.runtime.spawn(async move {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(workers::MEMBERSHIP_CHANGED)
                .execute(&pool)
                .await;
            if let Err(error) = sent {
                tracing::debug!(%error, "waking the listener to rename its connection failed");
            }
        });
    }
}

/// Deletes the fence rows of writers that have not written for a week (every open store
/// adds one): the row only matters while its writer settles a commit whose answer was lost.
async fn forget_old_writers(pool: &PgPool) {
    let week_ago = crate::common::now_ms() - 7 * 24 * 3600 * 1000;
    if let Err(error) = sqlx::query("DELETE FROM writers WHERE updated_at < $1")
        .bind(week_ago)
        .execute(pool)
        .await
    {
        tracing::debug!(%error, "forgetting old writers failed");
    }
}

/// The embedded migrations. Migrations only add (columns, indexes, storage settings), so a
/// worker of the previous release keeps running on a schema a newer release has migrated: a
/// rolling upgrade of many processes needs no stop. Hence migrations this build does not know
/// are not an error.
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
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        migration(
            2,
            "fillfactor",
            include_str!("../../migrations/postgres/0002_fillfactor.sql"),
        ),
        migration(
            3,
            "writers",
            include_str!("../../migrations/postgres/0003_writers.sql"),
        ),
        migration(
            4,
            "activity bounds",
            include_str!("../../migrations/postgres/0004_activity_bounds.sql"),
        ),
        migration(
            5,
            "flow control",
            include_str!("../../migrations/postgres/0005_flow_control.sql"),
        ),
        migration(
            6,
            "orchestration flow control",
            include_str!("../../migrations/postgres/0006_orchestration_flow.sql"),
        ),
        migration(
            7,
            "guarded turns",
            include_str!("../../migrations/postgres/0007_guarded_turns.sql"),
        ),
        migration(
            8,
            "memory calls",
            include_str!("../../migrations/postgres/0008_memory_calls.sql"),
        ),
    ]);
    migrator.set_ignore_missing(true);
    migrator
}

/// Listens for other workers' notifications on `[work, finished, finished_rows]`: work
/// available (for every worker, a lone start for its lead only, or a start handed to one
/// worker: [`workers`]), an instance
/// finished (its id), an instance finished (its row, handed to its waiters); reconnects (with
/// backoff) when the connection drops. Notifications sent meanwhile are lost: the runtime's
/// polling finds that work, and waiters read again. While a worker is registered in this
/// process, the connection (`listener_pool`'s one) carries its name
/// ([`workers::Workers::application_name`]); `pool` serves the reads of the live workers.
async fn listen(
    listener_pool: PgPool,
    pool: PgPool,
    channels: [String; 3],
    events: Arc<StoreEvents>,
    workers: Arc<workers::Workers>,
) {
    let [work, finished, finished_rows] = &channels;
    let mut failures = 0u32;
    loop {
        let mut listener = match PgListener::connect_with(&listener_pool).await {
            Ok(listener) => listener,
            Err(error) => {
                failures += 1;
                tracing::debug!(%error, "LISTEN connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(50u64 << failures.min(7))).await;
                continue;
            }
        };
        if let Err(error) = listener
            .listen_all(channels.iter().map(String::as_str))
            .await
        {
            tracing::debug!(%error, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        failures = 0;
        // The version of the name the connection carries (not known yet: set on the first
        // pass; see `Workers::renames`).
        let mut named = None;
        // Whatever happened while we were not listening: look for work.
        events.notify_work();
        loop {
            if name_listener(&mut listener, &mut named, &workers, work)
                .await
                .is_err()
            {
                break;
            }
            let notification = match listener.try_recv().await {
                Ok(Some(notification)) => notification,
                // The connection was lost and made again (unnamed, and deaf meanwhile).
                Ok(None) => {
                    named = None;
                    events.notify_work();
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "LISTEN connection lost; reconnecting");
                    break;
                }
            };
            let channel = notification.channel();
            if channel == work {
                on_work(notification.payload(), &pool, &events, &workers);
            } else if channel == finished {
                events.notify_finished(notification.payload());
            } else if channel == finished_rows {
                announce_finished_row(&events, notification.payload());
            }
        }
    }
}

/// Gives the listener connection the name `workers` wants it to carry (a worker of this
/// store started or stopped claiming since): the other workers find this one by it. When it
/// takes or gives up a worker name, the same statement tells every worker on `work` to read
/// the list again ([`workers::MEMBERSHIP_CHANGED`]), so no worker reads the list between
/// the change and the name. An error means the connection is unusable.
async fn name_listener(
    listener: &mut PgListener,
    named: &mut Option<u64>,
    workers: &workers::Workers,
    work: &str,
) -> Result<(), sqlx::Error> {
    let renames = workers.renames();
    if *named == Some(renames) {
        return Ok(());
    }
    let wanted = workers.application_name();
    // Every worker reads the list again, unless the connection is new and carries no worker
    // name (a client's).
    let announce = workers.is_claiming() || named.is_some();
    sqlx::query(
        "SELECT set_config('application_name', $1, false), \
                (SELECT pg_notify($2, $3) WHERE $4)",
    )
    .bind(&wanted)
    .bind(work)
    .bind(workers::MEMBERSHIP_CHANGED)
    .bind(announce)
    .execute(&mut *listener)
    .await?;
    *named = Some(renames);
    Ok(())
}

/// A work notification: an empty payload is work for every worker; a lone start's names its
/// instance, which only its lead claims (a read of the live workers is started when the list
/// is stale); a start handed to a worker ([`workers::offer_payload`]) is kept for that
/// worker, if it is one of this store's, which is woken to take it without a claim;
/// [`workers::MEMBERSHIP_CHANGED`] says a worker joined or left.
fn on_work(payload: &str, pool: &PgPool, events: &StoreEvents, workers: &Arc<workers::Workers>) {
    if payload.is_empty() {
        events.notify_work();
        return;
    }
    if let Some(offer) = workers::parse_offer(payload) {
        // Every process gets every notification: only the worker it was handed to reads it.
        if offer
            .as_ref()
            .is_ok_and(|offer| !workers.claims(offer.owner))
        {
            return;
        }
        match offer.and_then(|offer| {
            let event = crate::common::decode_event(offer.message).map_err(|e| e.to_string())?;
            Ok((offer, event))
        }) {
            Ok((offer, event)) => {
                let message = OrchestrationMessage {
                    id: offer.id,
                    instance_id: offer.instance_id.to_owned(),
                    event,
                    execution: None,
                };
                if workers.hand(offer.owner, message) {
                    events.notify_offered();
                }
            }
            Err(error) => {
                // Leased to a worker that cannot take it: it runs once the lease lapses.
                tracing::warn!(%error, "a start handed to a worker in a notification is not readable");
                events.notify_work();
            }
        }
        return;
    }
    if payload == workers::MEMBERSHIP_CHANGED {
        workers.mark_stale();
        events.notify_work();
        return;
    }
    let (answer, read) = workers.answer(payload, std::time::Instant::now());
    if answer == workers::Answer::Claim {
        events.notify_work();
    }
    if read {
        let (pool, workers) = (pool.clone(), workers.clone());
        tokio::spawn(async move { workers.read(&pool).await });
    }
}

/// Hands the finished instance's row a notification carries to its waiters; one that cannot
/// be read still wakes them by the id it starts with (they read the row), and a payload
/// without an id is dropped with a warning (their polls find the finish). A row nobody in
/// this process waits for is not read beyond its id (every process gets every finish).
fn announce_finished_row(events: &StoreEvents, payload: &str) {
    let Ok(LeadingId(id)) = serde_json::from_str::<LeadingId>(payload) else {
        tracing::warn!(
            "a finished instance's notification names no instance; its waiters' polls find it"
        );
        return;
    };
    if !events.is_watched(&id) {
        return;
    }
    match crate::rows::instance_status_json(payload) {
        Ok(status) => events.notify_finished_with(&status),
        Err(error) => {
            tracing::warn!(%error, "a finished instance's row in a notification is not readable; its waiters read it");
            events.notify_finished(&id);
        }
    }
}

/// The first element of a JSON array, a string (a row's instance id); the rest is skipped
/// unread.
struct LeadingId(String);

impl<'de> serde::Deserialize<'de> for LeadingId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LeadingId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array starting with an instance id")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LeadingId, A::Error> {
                let id: String = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(LeadingId(id))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// Whether a PostgreSQL error may pass: a transaction rolled back for a serialization
/// failure or a deadlock (`40001`, `40P01`), the server shutting down or starting (`57P01`,
/// `57P02`, `57P03`), a connection failure it reported (`08006`, `08003`), or a failure that
/// may pass with any database ([`transient_in_any_database`]).
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "08006" | "08003")
        ),
        error => transient_in_any_database(error),
    }
}

/// How many times a read is tried when its pooled connection turns out to be gone: each
/// failed try takes one dead connection out of the pool (sqlx drops it once its ping on
/// return fails), and a pool of several may hold as many dead ones after a restart.
const READ_TRIES: u32 = 4;

/// Whether `error` says that the connection was gone: the server ended the session
/// (SQLSTATE 57P01–57P03, 08003, 08006) or the socket broke (which may also happen after a
/// statement ran: what `PostgresStore::run` runs is safe to run again).
fn connection_lost(error: &Error) -> bool {
    match driver_error(error) {
        Some(sqlx::Error::Io(_)) => true,
        Some(sqlx::Error::Database(db)) => matches!(
            db.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "08006" | "08003")
        ),
        _ => false,
    }
}

/// How many times [`PostgresStore::drop_schema`] is tried when the server ends it as one side
/// of a deadlock.
const DROP_TRIES: u32 = 5;

/// Whether `error` says the server ended the statement to break a deadlock (SQLSTATE 40P01).
fn is_deadlock(error: &Error) -> bool {
    matches!(
        driver_error(error),
        Some(sqlx::Error::Database(db)) if db.code().as_deref() == Some("40P01")
    )
}

/// The sqlx error a store error keeps as its source, if it is one.
fn driver_error(error: &Error) -> Option<&sqlx::Error> {
    match error {
        Error::Store {
            source: Some(source),
            ..
        } => source.get().downcast_ref::<sqlx::Error>(),
        _ => None,
    }
}

/// A store error from a PostgreSQL error met while doing `context`.
fn store_error(context: &str, error: sqlx::Error) -> StoreError {
    StoreError::new(context, is_transient(&error), error)
}

#[async_trait]
impl Store for PostgresStore {
    async fn register_worker(&self, owner: &str) -> Result<(), Error> {
        // Workers compete on leases; there is nothing to take exclusively. A worker joins the
        // list of those that lone starts are left to with its first claim of orchestration
        // work ([`workers`]): a worker that runs only activities never claims any.
        tracing::debug!(owner, schema = %self.inner.options.schema, "worker registered");
        Ok(())
    }

    async fn stop_claiming(&self, owner: &str) -> Result<(), Error> {
        if self.inner.workers.stop_claiming(owner) {
            self.wake_listener();
        }
        Ok(())
    }

    async fn unregister_worker(&self, owner: &str) -> Result<(), Error> {
        self.stop_claiming(owner).await?;
        self.inner.writer.release_all(owner).await
    }

    async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        // Handed to the instance's lead, leased to it, when the list of workers is fresh: the
        // worker runs it from the notification, without a claim ([`workers`]).
        let workers = &self.inner.workers;
        let (lead, read) = workers.offer_to(&instance.instance_id, std::time::Instant::now());
        if read {
            let (pool, workers) = (self.inner.pool.clone(), workers.clone());
            self.inner
                .runtime
                .spawn(async move { workers.read(&pool).await });
        }
        match lead {
            Some(owner) => {
                let lease = crate::batch::ops::Lease::lasting(workers::OFFER_LEASE);
                self.inner
                    .writer
                    .create_instance_offered(instance, &owner, lease)
                    .await
            }
            None => self.inner.writer.create_instance(instance).await,
        }
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
        if self.inner.workers.start_claiming(owner) {
            self.wake_listener();
        }
        let mut claimed = self
            .inner
            .writer
            .claim_messages(owner, limit, lease_until)
            .await?;
        // And what was handed to this worker and not taken yet (taken once the claim
        // succeeded: a failed claim leaves it for the next).
        let mut offered = self.inner.workers.take_offered(owner);
        if !offered.is_empty() {
            claimed.append(&mut offered);
            claimed.sort_by_key(|m| m.id);
        }
        Ok(claimed)
    }

    fn take_offered(&self, owner: &str) -> Vec<OrchestrationMessage> {
        self.inner.workers.take_offered(owner)
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
        let names = names.to_vec();
        let now = crate::common::millis(self.clock().now());
        self.run(move |pool| {
            let names = names.clone();
            async move {
                let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
                    "SELECT name, flow_key, count(*) FILTER (WHERE locked_until >= $2), \
                         count(*) FILTER (WHERE locked_until IS NULL OR locked_until < $2) \
                     FROM activity_queue WHERE name = ANY($1) \
                     GROUP BY name, flow_key ORDER BY name, flow_key",
                )
                .bind(&names)
                .bind(now)
                .fetch_all(&pool)
                .await
                .map_err(|e| store_error("counting flow-controlled work", e))?;
                Ok(crate::common::flow_statuses(FlowKind::Activity, rows))
            }
        })
        .await
    }

    /// In a transaction of its own, outside the writer's batches: it waits for advisory locks
    /// (taken in name order, so two workers' admissions cannot deadlock) before it locks any
    /// row, and no batch or claim takes an orchestrator's lock. Run again after a lost answer, it
    /// finds what the first run did and goes on from there.
    async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        let channel = self.inner.work_channel.clone();
        let events = self.inner.events.clone();
        let mut rules = rules.to_vec();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        self.run(move |pool| {
            let channel = channel.clone();
            let events = events.clone();
            let rules = rules.clone();
            async move {
                let failed = |e| Error::from(store_error("letting held instances run", e));
                let mut tx = pool.begin().await.map_err(failed)?;
                let admission = writer::admit(&mut tx, &rules, crate::common::now_ms())
                    .await
                    .map_err(failed)?;
                if !admission.admitted.is_empty() {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(&channel)
                        .execute(&mut *tx)
                        .await
                        .map_err(failed)?;
                }
                tx.commit().await.map_err(failed)?;
                if !admission.admitted.is_empty() {
                    events.notify_work();
                }
                Ok(admission)
            }
        })
        .await
    }

    async fn instance_flow_status(&self, names: &[String]) -> Result<Vec<FlowStatus>, Error> {
        let names = names.to_vec();
        self.run(move |pool| {
            let names = names.clone();
            async move {
                let rows: Vec<(String, Option<String>, i64, i64)> = sqlx::query_as(
                    "SELECT f.name, f.flow_key, count(*) FILTER (WHERE f.admitted = 1), \
                         count(*) FILTER (WHERE f.admitted = 0) \
                     FROM flow_instances f LEFT JOIN instances i ON i.instance_id = f.instance_id \
                     WHERE f.name = ANY($1) \
                       AND (f.admitted = 0 OR i.status IN ('Pending', 'Running', 'Suspended')) \
                     GROUP BY f.name, f.flow_key ORDER BY f.name, f.flow_key",
                )
                .bind(&names)
                .fetch_all(&pool)
                .await
                .map_err(|e| store_error("counting flow-controlled instances", e))?;
                Ok(crate::common::flow_statuses(FlowKind::Orchestration, rows))
            }
        })
        .await
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
        let instance_id = instance_id.to_owned();
        self.run(move |pool| {
            let instance_id = instance_id.clone();
            async move {
                let sql = format!(
                    "SELECT {} FROM activity_queue WHERE instance_id = $1 ORDER BY id",
                    rows::ACTIVITY_STATUS_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(instance_id)
                    .fetch_all(&pool)
                    .await
                    .map_err(|e| store_error("listing activity work items", e))?;
                rows::activity_statuses(&found)
            }
        })
        .await
    }

    fn keeps_calls_in_memory(&self) -> bool {
        true
    }

    fn creates_with_turn(&self) -> bool {
        true
    }

    /// A finish is sent with its row on `_finished_rows` to every listening process (by id
    /// only on `_finished` when the row is too long for a notification).
    fn announces_finished_rows(&self) -> bool {
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
        let instance_id = instance_id.to_owned();
        self.run(move |pool| {
            let instance_id = instance_id.clone();
            async move {
                let rows: Vec<(String,)> = sqlx::query_as(LOAD_HISTORY)
                    .bind(instance_id)
                    .fetch_all(&pool)
                    .await
                    .map_err(|e| store_error("loading history", e))?;
                rows.iter().map(|(json,)| decode_event(json)).collect()
            }
        })
        .await
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceStatus>, Error> {
        let instance_id = instance_id.to_owned();
        self.run(move |pool| {
            let instance_id = instance_id.clone();
            async move {
                let row = sqlx::query(GET_INSTANCE)
                    .bind(instance_id)
                    .fetch_optional(&pool)
                    .await
                    .map_err(|e| store_error("reading instance status", e))?;
                row.as_ref().map(instance_status).transpose()
            }
        })
        .await
    }

    async fn list_instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        let query = query.clone();
        self.run(move |pool| {
            let query = query.clone();
            async move {
                let statuses: Vec<String> = query
                    .statuses
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect();
                let sql = format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances \
                     WHERE kind = 'orchestration' \
                       AND (cardinality($1::text[]) = 0 OR status = ANY($1)) \
                       AND ($2::text IS NULL OR starts_with(instance_id, $2)) \
                       AND ($3::bigint IS NULL OR created_at >= $3) \
                       AND ($4::bigint IS NULL OR created_at < $4) \
                       AND ($5::text IS NULL OR instance_id > $5) \
                       AND ($7::text IS NULL OR name = $7) \
                     ORDER BY instance_id COLLATE \"C\" LIMIT $6"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&statuses)
                    .bind(query.instance_id_prefix.as_deref())
                    .bind(query.created_from.map(millis))
                    .bind(query.created_to.map(millis))
                    .bind(query.after.as_deref())
                    .bind(i64::from(query.limit.unwrap_or(100).min(10_000)))
                    .bind(query.name.as_deref())
                    .fetch_all(&pool)
                    .await
                    .map_err(|e| store_error("listing instances", e))?;
                rows.iter().map(instance_status).collect()
            }
        })
        .await
    }

    async fn next_visible_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        self.run(move |pool| {
            async move {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(visible_at) FROM orch_queue WHERE locked_by IS NULL AND visible_at > $1",
                )
                .bind(crate::common::now_ms())
                .fetch_one(&pool)
                .await
                .map_err(|e| store_error("looking for the next timer", e))?;
                Ok(next.map(from_millis))
            }
        })
        .await
    }

    async fn load_entity(&self, id: &EntityId) -> Result<Option<EntityStatus>, Error> {
        let instance_id = id.instance_id();
        self.run(move |pool| {
            let instance_id = instance_id.clone();
            async move {
                let row = sqlx::query(
                    "SELECT instance_id, entity_state, lock_owner, created_at, updated_at FROM instances \
                     WHERE instance_id = $1 AND kind = 'entity'",
                )
                .bind(instance_id)
                .fetch_optional(&pool)
                .await
                .map_err(|e| store_error("reading an entity", e))?;
                row.as_ref().map(entity_status).transpose()
            }
        })
        .await
    }

    async fn list_entities(&self, query: &EntityQuery) -> Result<Vec<EntityStatus>, Error> {
        let query = query.clone();
        self.run(move |pool| {
            let query = query.clone();
            async move {
                let prefix = query.name.as_ref().map(|name| {
                    format!("@{name}@{}", query.key_prefix.as_deref().unwrap_or_default())
                });
                let rows = sqlx::query(
                    "SELECT instance_id, entity_state, lock_owner, created_at, updated_at FROM instances \
                     WHERE kind = 'entity' \
                       AND ($1::text IS NULL OR starts_with(instance_id, $1)) \
                       AND ($2 OR entity_state IS NOT NULL) \
                       AND ($3::text IS NULL OR instance_id > $3) \
                       AND ($5::text IS NULL OR starts_with( \
                            substr(instance_id, strpos(substr(instance_id, 2), '@') + 2), $5)) \
                     ORDER BY instance_id COLLATE \"C\" LIMIT $4",
                )
                .bind(prefix)
                .bind(query.include_empty)
                .bind(query.after.as_ref().map(EntityId::instance_id))
                .bind(i64::from(query.limit.unwrap_or(100).min(10_000)))
                .bind(crate::common::key_prefix_of_any_name(&query))
                .fetch_all(&pool)
                .await
                .map_err(|e| store_error("listing entities", e))?;
                rows.iter().map(entity_status).collect()
            }
        })
        .await
    }

    async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.inner.writer.clean_entities().await
    }

    fn events(&self) -> &StoreEvents {
        &self.inner.events
    }

    async fn stats(&self) -> Result<Option<StoreStats>, Error> {
        self.run(move |pool| async move {
            let rows: Vec<(String, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(crate::common::stats_sql("jsonb_each")))
                    .bind(crate::common::now_ms())
                    .fetch_all(&pool)
                    .await
                    .map_err(|e| store_error("counting queued work", e))?;
            crate::common::stats_from_rows(rows).map(Some)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished row's notification hands its row to the instance's waiters; an unreadable
    /// row still wakes them (without a row: they read it), and nothing else is woken.
    #[tokio::test]
    async fn a_row_notification_hands_its_row_or_at_least_wakes_the_waiters() {
        let events = StoreEvents::default();
        let row = r#"["done", "flow", "1", "Completed", "42", "\"ok\"", null, "\"halfway\"", 1000, 2000, 2000]"#;
        let watch = events.watch_finished("done");
        announce_finished_row(&events, row);
        tokio::time::timeout(Duration::from_secs(1), watch.notified())
            .await
            .expect("the waiter is woken");
        let handed = watch.take_status().expect("the row is handed over");
        assert_eq!(handed.status, duractor::RuntimeStatus::Completed);
        assert_eq!(handed.output.unwrap().decode::<String>().unwrap(), "ok");
        assert_eq!(
            handed.custom_status.unwrap().decode::<String>().unwrap(),
            "halfway"
        );
        assert_eq!(handed.completed_at.unwrap().timestamp_millis(), 2000);

        let watch = events.watch_finished("odd");
        let other = events.watch_finished("other");
        announce_finished_row(&events, r#"["odd", "flow", "1", "NoSuchStatus"]"#);
        tokio::time::timeout(Duration::from_secs(1), watch.notified())
            .await
            .expect("a waiter is woken by the id of a row it cannot read");
        assert!(watch.take_status().is_none());
        announce_finished_row(&events, "not json");
        announce_finished_row(&events, "[]");
        // A row nobody waits for wakes nobody, readable or not.
        announce_finished_row(&events, r#"["unwatched", "flow"]"#);
        assert!(events.is_watched("other"), "no other waiter was woken");
        events.unwatch_finished("other", &other);
    }

    /// Whether `store`'s worker was woken within `wait` (taking the wake-up).
    async fn woken(store: &PostgresStore, wait: Duration) -> bool {
        tokio::time::timeout(wait, store.events().work_notified())
            .await
            .is_ok()
    }

    fn new_instance(id: &str) -> NewInstance {
        NewInstance {
            instance_id: id.to_owned(),
            name: "order".to_owned(),
            version: String::new(),
            input: duractor::Payload::null(),
            created_at: Utc::now(),
            parent: None,
            flow: None,
        }
    }

    /// Of two worker processes' stores, a lone start wakes one, the instance's lead, and the
    /// starts spread over both; a client that knows the workers hands each start to its lead,
    /// leased to it; a worker that stops leaves every start to the other at once. Needs
    /// `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn a_lone_start_wakes_one_worker_and_a_stopped_one_leaves_them_all_to_the_other() {
        let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
            println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping the lone start test");
            return;
        };
        let options = PostgresStoreOptions {
            schema: format!("t_lone_starts_{}", std::process::id()),
            ..Default::default()
        };
        let client = PostgresStore::connect_with(&url, options.clone())
            .await
            .unwrap();
        let workers = [
            PostgresStore::connect_with(&url, options.clone())
                .await
                .unwrap(),
            PostgresStore::connect_with(&url, options.clone())
                .await
                .unwrap(),
        ];
        // A worker joins the list with its first claim of orchestration work; one that never
        // claims any (it runs only activities) is never left a start.
        for (store, owner) in workers.iter().zip(["worker-1", "worker-2"]) {
            store.register_worker(owner).await.unwrap();
            store
                .claim_messages(owner, 0, Utc::now() + chrono::TimeDelta::seconds(30))
                .await
                .unwrap();
        }
        let activities_only = PostgresStore::connect_with(&url, options.clone())
            .await
            .unwrap();
        activities_only.register_worker("worker-3").await.unwrap();
        // Both listeners carry their workers' names once they have taken the announcements.
        let named = |pool: PgPool, prefix: String| async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND left(application_name, length($1)) = $1",
            )
            .bind(prefix)
            .fetch_one(&pool)
            .await
            .unwrap()
        };
        let prefix = client.inner.workers.prefix().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while named(client.inner.pool.clone(), prefix.clone()).await < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the listeners were not named"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A lone start the client could not hand over (its list of workers stale) wakes the
        // instance's lead only.
        let mut led = [0usize; 2];
        let mut both = 0;
        for i in 0..60 {
            for worker in &workers {
                woken(worker, Duration::from_millis(1)).await;
            }
            client
                .inner
                .writer
                .create_instance(new_instance(&format!("lone-{i}")))
                .await
                .unwrap();
            let first = tokio::select! {
                _ = workers[0].events().work_notified() => 0,
                _ = workers[1].events().work_notified() => 1,
                _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("start {i} woke no worker"),
            };
            led[first] += 1;
            if woken(&workers[1 - first], Duration::from_millis(30)).await {
                both += 1;
            }
        }
        // Both are woken while a worker's list of workers is stale (a read every 250 ms).
        assert!(both <= 15, "{both} of 60 starts woke both workers");
        assert!(
            led.iter().all(|n| *n >= 10),
            "the starts did not spread: {led:?}"
        );

        // A start from a client whose list is fresh is handed to the lead, leased to it: the
        // lead takes it from its store without a claim (a claim would not find it), the other
        // gets nothing.
        let owners = ["worker-1", "worker-2"];
        let lease = || Utc::now() + chrono::TimeDelta::seconds(30);
        let mut handed = [0usize; 2];
        let (mut watch_1, mut watch_2) = (
            workers[0].events().watch_offered(),
            workers[1].events().watch_offered(),
        );
        for i in 0..60 {
            let id = format!("handed-{i}");
            // A fresh list (a busy client reads it every 250 ms, a start never waits for it).
            client.inner.workers.read(&client.inner.pool).await;
            client.create_instance(new_instance(&id)).await.unwrap();
            let to = tokio::select! {
                _ = watch_1.notified() => 0,
                _ = watch_2.notified() => 1,
                _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("{id} was not handed over"),
            };
            handed[to] += 1;
            let taken = workers[to].take_offered(owners[to]);
            assert_eq!(taken.len(), 1, "{id}: {taken:?}");
            assert_eq!(taken[0].instance_id, id);
            assert!(
                matches!(&taken[0].event, duractor::history::Event::ExecutionStarted { name, .. } if name == "order"),
                "{taken:?}"
            );
            assert!(workers[1 - to].take_offered(owners[1 - to]).is_empty());
            let claimed = workers[to]
                .inner
                .writer
                .claim_messages(owners[to], 100, lease())
                .await
                .unwrap();
            assert!(
                !claimed.iter().any(|m| m.instance_id == id),
                "{id} was left claimable: {claimed:?}"
            );
            let locked_by: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT locked_by FROM {}.instances WHERE instance_id = $1",
                options.schema
            )))
            .bind(&id)
            .fetch_one(&client.inner.pool)
            .await
            .unwrap();
            assert_eq!(locked_by.as_deref(), Some(owners[to]), "{id}");
        }
        assert!(
            handed.iter().all(|n| *n >= 10),
            "the starts did not spread: {handed:?}"
        );
        // A start handed to a worker that never takes it (it died after the client read the
        // list) is claimable by the others once its lease lapses.
        client.inner.workers.read(&client.inner.pool).await;
        let id = (0..1000)
            .map(|i| format!("untaken-{i}"))
            .find(|id| {
                client
                    .inner
                    .workers
                    .offer_to(id, std::time::Instant::now())
                    .0
                    .as_deref()
                    == Some("worker-2")
            })
            .expect("worker-2 leads one of 1,000 ids while the list is fresh");
        client.create_instance(new_instance(&id)).await.unwrap();
        let taken =
            |claimed: Vec<OrchestrationMessage>| claimed.iter().any(|m| m.instance_id == id);
        let claim = || {
            workers[0]
                .inner
                .writer
                .claim_messages("worker-1", 100, lease())
        };
        assert!(!taken(claim().await.unwrap()), "{id} was claimable at once");
        tokio::time::sleep(workers::OFFER_LEASE + Duration::from_millis(100)).await;
        assert!(
            taken(claim().await.unwrap()),
            "{id} was not claimable after its lease"
        );
        assert_eq!(workers[1].take_offered("worker-2").len(), 1);

        assert_eq!(named(client.inner.pool.clone(), prefix.clone()).await, 2);

        // The second worker stops claiming (its runtime drains before it unregisters): its
        // share goes to the first from the next start on.
        workers[1].stop_claiming("worker-2").await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while named(client.inner.pool.clone(), prefix.clone()).await > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the name was not given up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..20 {
            woken(&workers[0], Duration::from_millis(1)).await;
            client
                .inner
                .writer
                .create_instance(new_instance(&format!("after-{i}")))
                .await
                .unwrap();
            assert!(
                woken(&workers[0], Duration::from_secs(5)).await,
                "start {i} after the second worker stopped woke nobody"
            );
        }
        for i in 0..20 {
            let id = format!("handed-after-{i}");
            client.inner.workers.read(&client.inner.pool).await;
            client.create_instance(new_instance(&id)).await.unwrap();
            tokio::select! {
                _ = watch_1.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("{id} was not handed over"),
            }
            assert_eq!(workers[0].take_offered("worker-1").len(), 1, "{id}");
            assert!(workers[1].take_offered("worker-2").is_empty(), "{id}");
        }
        client.drop_schema().await.unwrap();
    }

    #[test]
    fn only_a_gone_connection_makes_a_read_try_again() {
        let broken = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_lost(&store_error("reading", broken).into()));
        let bad_sql = sqlx::Error::Protocol("unexpected message".into());
        assert!(!connection_lost(&store_error("reading", bad_sql).into()));
        assert!(!connection_lost(&Error::store("no driver error")));
        assert!(!connection_lost(&Error::InstanceNotFound("x".into())));
    }

    /// Warming a pool leaves its connections with the claim and read statements prepared,
    /// and claims nothing: a queued message stays unclaimed. Needs
    /// `DURACTOR_TEST_POSTGRES_URL`.
    #[tokio::test]
    async fn a_warmed_pool_has_its_statements_prepared_and_claimed_nothing() {
        let Ok(url) = std::env::var("DURACTOR_TEST_POSTGRES_URL") else {
            println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping the pool warm-up test");
            return;
        };
        let schema = format!("t_warm_pool_{}", std::process::id());
        let store = PostgresStore::connect_with(
            &url,
            PostgresStoreOptions {
                schema: schema.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let options = url
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::raw_sql(
            "INSERT INTO instances (instance_id, name, version, status, input, created_at, updated_at, history_len) \
             VALUES ('i', 'o', '', 'Pending', 'null', 0, 0, 0); \
             INSERT INTO orch_queue (instance_id, visible_at, message) VALUES ('i', 0, '{}')",
        )
        .execute(&pool)
        .await
        .unwrap();
        warm_pool(&pool, 2).await;
        assert_eq!(pool.size(), 2, "both connections were opened");
        let mut conns = vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        for conn in &mut conns {
            let prepared: Vec<String> =
                sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
                    .fetch_all(&mut **conn)
                    .await
                    .unwrap();
            for wanted in [
                "UPDATE orch_queue",
                "UPDATE activity_queue",
                LOAD_HISTORY,
                GET_INSTANCE,
            ] {
                assert!(
                    prepared.iter().any(|statement| statement.contains(wanted)),
                    "{wanted:?} is not prepared: {prepared:?}"
                );
            }
        }
        drop(conns);
        let locked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orch_queue WHERE locked_by IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(locked, 0, "warming claimed a message");
        pool.close().await;
        store.drop_schema().await.unwrap();
    }
}
