//! Fan-out/fan-in: an orchestration runs many activities in parallel and sums their results.
//!
//! ```text
//! cargo run --example fan_out_fan_in -- 100
//! ```

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// Pretends to measure the size of one file.
#[activity]
async fn file_size(_ctx: ActivityContext, file: u64) -> Result<u64, duractor::Error> {
    Ok(file * 10)
}

/// Measures `count` files in parallel and returns the total.
#[orchestrator]
async fn total_size(ctx: OrchestrationContext, count: u64) -> Result<u64, duractor::Error> {
    let sizes = ctx
        .join_all((0..count).map(|file| ctx.call_activity(FileSize, file)))
        .await;
    let mut total = 0;
    for size in sizes {
        total += size?;
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let count: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .map_err(|e| {
            duractor::Error::InvalidArgument(format!("the file count must be a number: {e}"))
        })?
        .unwrap_or(100);
    let store = SqliteStore::open("fan_out_fan_in.db").await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();

    let id = client.start(TotalSize, count).await?;
    let status = client
        .wait_for_completion(&id, Duration::from_secs(60))
        .await?;
    let total: u64 = status.output()?;
    println!("{count} files, {total} bytes in total ({})", status.status);

    runtime.shutdown().await
}
