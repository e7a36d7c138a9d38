//! Branching on durable results with `match`, guards and `if let`.
use duractor::prelude::*;
use std::time::Duration;

#[activity]
async fn check(_ctx: ActivityContext, n: u32) -> Result<Option<u32>, duractor::Error> {
    Ok(Some(n))
}

#[orchestrator]
async fn branch(ctx: OrchestrationContext, n: u32) -> Result<u32, duractor::Error> {
    let value = match ctx.call_activity(Check, n).await? {
        Some(v) if v > 10 => {
            ctx.sleep(Duration::from_secs(1)).await;
            v
        }
        Some(v) => v * 2,
        None => 0,
    };
    if let Some(extra) = ctx.call_activity(Check, value).await? {
        return Ok(value + extra);
    }
    Ok(value)
}

fn main() {}
