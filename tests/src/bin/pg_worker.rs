//! A worker process for the PostgreSQL scale-out tests: runs until killed.
//!
//! `pg_worker URL SCHEMA LEASE_MS [POLL_MS]` (the fallback poll's interval, 200 ms unless
//! given)
//!
//! It runs the functions of `duractor_tests::scale` (linked in, so registered): 5 sequential
//! activities per orchestration, then a signal to an entity; and `sized_output`.

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
#[allow(unused_imports)]
use duractor_tests::scale as _;

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, schema, lease_ms, poll_ms) = match args.as_slice() {
        [url, schema, lease_ms] => (url, schema, lease_ms, "200"),
        [url, schema, lease_ms, poll_ms] => (url, schema, lease_ms, poll_ms.as_str()),
        _ => {
            eprintln!("usage: pg_worker URL SCHEMA LEASE_MS [POLL_MS]");
            std::process::exit(2);
        }
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
    let poll_ms: u64 = poll_ms
        .parse()
        .map_err(|e| duractor::Error::InvalidArgument(format!("POLL_MS: {e}")))?;
    let store = PostgresStore::connect_with(
        url,
        PostgresStoreOptions {
            schema: schema.clone(),
            ..Default::default()
        },
    )
    .await?;
    let _runtime = Runtime::builder(store)
        .lease_duration(Duration::from_millis(lease_ms))
        .poll_interval(Duration::from_millis(poll_ms))
        .start()
        .await?;
    println!("worker started");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
