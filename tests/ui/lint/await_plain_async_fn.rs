//! A plain `async fn` is not durable: awaiting it names `#[orchestration_helper]`.
use duractor::prelude::*;
use std::time::Duration;

async fn pause(ctx: &OrchestrationContext) {
    ctx.sleep(Duration::from_secs(1)).await;
}

#[orchestrator]
async fn flow(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    pause(&ctx).await;
    Ok(())
}

fn main() {}
