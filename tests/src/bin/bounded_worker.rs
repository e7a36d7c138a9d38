//! A worker process for the bounded-activities tests: runs until killed.
//!
//! `bounded_worker URL SCHEMA ROLE LEASE_MS`: `URL` is a PostgreSQL URL (with `SCHEMA`) or a
//! SQLite file (`SCHEMA` is `-`); `ROLE` is `activities` (it runs only `BoundedStep`) or
//! `all` (every function of `duractor_tests::bounded`, and of `duractor_tests::flow` for the
//! flow-control tests across processes).

use std::sync::Arc;
use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::{PostgresStore, PostgresStoreOptions, SqliteStore};
use duractor_tests::bounded::BoundedStep;
#[allow(unused_imports)]
use duractor_tests::flow as _;

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, role, lease_ms] = args.as_slice() else {
        eprintln!("usage: bounded_worker URL SCHEMA ROLE LEASE_MS");
        std::process::exit(2);
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let lease_ms: u64 = lease_ms
        .parse()
        .map_err(|e| duractor::Error::InvalidArgument(format!("LEASE_MS: {e}")))?;
    let store: Arc<dyn duractor::Store> = if schema == "-" {
        Arc::new(SqliteStore::open(url).await?)
    } else {
        let options = PostgresStoreOptions {
            schema: schema.clone(),
            ..Default::default()
        };
        Arc::new(PostgresStore::connect_with(url, options).await?)
    };
    let builder = Runtime::builder(store)
        .lease_duration(Duration::from_millis(lease_ms))
        .poll_interval(Duration::from_millis(100));
    let builder = match role.as_str() {
        "activities" => builder.auto_register(false).activity(BoundedStep),
        _ => builder,
    };
    let _runtime = builder.start().await?;
    println!("worker started");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
