//! `tokio::time::sleep` awaited: one error, from the lint, naming `ctx.sleep`.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn reminder(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

fn main() {}
