//! FLOOR: the raw sqlx cost of a step's writes on the same database and settings the store
//! uses — one transaction inserting two history rows and deleting one queue row — alone and
//! 100 to a transaction. Every workload line carries `floor_ms` (ms per single transaction,
//! measured in the same run), so results read as ratios to the floor, not as absolute figures
//! on a disk whose speed changes from day to day.

use std::time::{Duration, Instant};

use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions};
use serde_json::json;
use sqlx::Connection;

/// What one FLOOR measurement found.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Single transactions per second.
    pub single_per_sec: f64,
    /// Milliseconds per single transaction.
    pub single_ms: f64,
    /// Steps per second, 100 steps to a transaction.
    pub batched_per_sec: f64,
}

impl Floor {
    /// The FLOOR workload's own line.
    pub fn to_json(self) -> serde_json::Value {
        json!({
            "n": SINGLE, "per_sec": round(self.single_per_sec), "floor_ms": round(self.single_ms),
            "batched_per_sec": round(self.batched_per_sec), "wall_ms": round(self.single_ms * SINGLE as f64),
            "ok": true,
        })
    }
}

/// How many single transactions, and how many batches of 100.
const SINGLE: usize = 300;
const BATCHES: usize = 30;
const BATCH: usize = 100;

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// FLOOR on a fresh SQLite file in `dir`, with the store's connection settings (WAL,
/// `synchronous` as given, the store's schema), one round trip per transaction.
pub async fn sqlite(dir: &std::path::Path, options: SqliteStoreOptions) -> Result<Floor, String> {
    let path = dir.join("floor.db");
    let synchronous = match options.synchronous {
        duractor_sqlx::Synchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        duractor_sqlx::Synchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
    };
    // The store creates the schema; the floor then writes its tables directly.
    drop(
        SqliteStore::open_with(&path, options)
            .await
            .map_err(|e| e.to_string())?,
    );
    let connect = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .pragma("wal_autocheckpoint", "0");
    let mut conn = sqlx::SqliteConnection::connect_with(&connect)
        .await
        .map_err(|e| e.to_string())?;
    let queued = (SINGLE + BATCHES * BATCH) as i64;
    fill_queue_sqlite(&mut conn, queued)
        .await
        .map_err(|e| e.to_string())?;
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM orch_queue")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    for i in 0..SINGLE as i64 {
        sqlx::query(
            "BEGIN; \
             INSERT INTO history (instance_id, idx, event) VALUES (?, ?, '{\"OrchestratorStarted\":{}}'); \
             INSERT INTO history (instance_id, idx, event) VALUES (?, ?, '{\"TaskCompleted\":{}}'); \
             DELETE FROM orch_queue WHERE id = ?; COMMIT",
        )
        .bind(format!("f{i}"))
        .bind(0)
        .bind(format!("f{i}"))
        .bind(1)
        .bind(first + i)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    let single = started.elapsed();

    let started = Instant::now();
    for b in 0..BATCHES as i64 {
        let base = first + SINGLE as i64 + b * BATCH as i64;
        let rows: Vec<(String, i64)> = (0..BATCH as i64)
            .flat_map(|s| [(format!("b{b}-{s}"), 0), (format!("b{b}-{s}"), 1)])
            .collect();
        let ids: Vec<i64> = (0..BATCH as i64).map(|s| base + s).collect();
        sqlx::query(
            "BEGIN; \
             INSERT INTO history (instance_id, idx, event) \
               SELECT value->>0, value->>1, '{}' FROM json_each(?); \
             DELETE FROM orch_queue WHERE id IN (SELECT value FROM json_each(?)); COMMIT",
        )
        .bind(serde_json::to_string(&rows).unwrap_or_default())
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    let batched = started.elapsed();
    Ok(floor(single, batched))
}

/// Puts `n` messages in the queue, for the steps to delete.
async fn fill_queue_sqlite(conn: &mut sqlx::SqliteConnection, n: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO orch_queue (instance_id, visible_at, message) SELECT 'floor', 0, '{}' FROM n",
    )
    .bind(n)
    .execute(conn)
    .await
    .map(|_| ())
}

/// FLOOR on PostgreSQL in a fresh schema (the store's tables), one round trip per transaction
/// (one statement: a `DELETE` in a CTE feeding the `INSERT`), then dropped.
pub async fn postgres(url: &str, schema: &str) -> Result<Floor, String> {
    let store = PostgresStore::connect_with(
        url,
        PostgresStoreOptions {
            schema: schema.to_owned(),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let connect: sqlx::postgres::PgConnectOptions = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|e| e.to_string())?
        .options([("search_path", schema)]);
    let mut conn = sqlx::PgConnection::connect_with(&connect)
        .await
        .map_err(|e| e.to_string())?;
    let queued = (SINGLE + BATCHES * BATCH) as i64;
    sqlx::query(
        "INSERT INTO orch_queue (instance_id, visible_at, message) \
         SELECT 'floor', 0, '{}' FROM generate_series(1, $1)",
    )
    .bind(queued)
    .execute(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM orch_queue")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    for i in 0..SINGLE as i64 {
        let id = format!("f{i}");
        sqlx::query(
            "WITH d AS (DELETE FROM orch_queue WHERE id = $3) \
             INSERT INTO history (instance_id, idx, event) VALUES ($1, 0, $2), ($1, 1, $2)",
        )
        .bind(&id)
        .bind("{}")
        .bind(first + i)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    let single = started.elapsed();

    let started = Instant::now();
    for b in 0..BATCHES as i64 {
        let base = first + SINGLE as i64 + b * BATCH as i64;
        let ids: Vec<i64> = (0..BATCH as i64).map(|s| base + s).collect();
        let names: Vec<String> = (0..BATCH).map(|s| format!("b{b}-{s}")).collect();
        sqlx::query(
            "WITH d AS (DELETE FROM orch_queue WHERE id = ANY($1)) \
             INSERT INTO history (instance_id, idx, event) \
             SELECT n, i, '{}' FROM unnest($2::text[]) AS n, (VALUES (0), (1)) AS v(i)",
        )
        .bind(&ids)
        .bind(&names)
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    }
    let batched = started.elapsed();
    let _ = conn.close().await;
    store.drop_schema().await.map_err(|e| e.to_string())?;
    Ok(floor(single, batched))
}

fn floor(single: Duration, batched: Duration) -> Floor {
    Floor {
        single_per_sec: SINGLE as f64 / single.as_secs_f64(),
        single_ms: single.as_secs_f64() * 1000.0 / SINGLE as f64,
        batched_per_sec: (BATCHES * BATCH) as f64 / batched.as_secs_f64(),
    }
}
