//! Fan-out/fan-in: an orchestration runs many activities in parallel and sums their results.
//!
//! ```text
//! cargo run --example fan_out_fan_in -- run total_size --input 1000
//! ```

use duractor::prelude::*;

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

#[duractor::main]
async fn main() {}
