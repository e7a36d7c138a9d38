//! Tasks outside the orchestration: `tokio::spawn`, `spawn_blocking`.
use duractor::prelude::*;
use tokio::task::spawn_blocking;

#[orchestrator]
async fn fire_and_forget(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let _task = tokio::spawn(async { 1 });
    let _blocking = spawn_blocking(|| 2);
    Ok(())
}

fn main() {}
