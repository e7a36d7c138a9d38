//! `#[orchestration_helper]` bodies follow the same rules as orchestrators.
use duractor::prelude::*;
use std::time::Duration;

#[orchestration_helper]
async fn backoff(ctx: &OrchestrationContext, attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let delay = Duration::from_millis(u64::from(attempt * 100 + jitter));
    ctx.sleep(delay).await;
    delay
}

#[orchestration_helper]
async fn watch(ctx: &OrchestrationContext) {
    loop {
        ctx.sleep(Duration::from_secs(1)).await;
    }
}

#[orchestrator]
async fn retrying(ctx: OrchestrationContext, _: ()) -> Result<u128, duractor::Error> {
    let delay = backoff(&ctx, 3).await;
    watch(&ctx).await;
    Ok(delay.as_millis())
}

fn main() {}
