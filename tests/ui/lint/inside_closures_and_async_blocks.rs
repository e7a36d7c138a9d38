//! Offences inside closures and `async` blocks are found.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn nested(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let jitter = |base: u64| base + u64::from(std::process::id());
    let step = async {
        ctx.sleep(Duration::from_secs(1)).await;
        chrono::Utc::now().timestamp()
    };
    let stamped = step.await;
    Ok(jitter(n) + stamped as u64)
}

fn main() {}
