//! `tokio::time::timeout` around a durable call: race against `ctx.sleep` instead.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn deadline(ctx: OrchestrationContext, _: ()) -> Result<bool, duractor::Error> {
    let approval = ctx.wait_for_event::<bool>("approval");
    let decided = tokio::time::timeout(Duration::from_secs(60), approval).await;
    Ok(decided.is_ok())
}

fn main() {}
