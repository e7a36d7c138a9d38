//! An eternal orchestration: `loop` whose only way out is `?` (an error).
use duractor::prelude::*;
use std::time::Duration;

#[activity]
async fn clean_up(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn janitor(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    loop {
        ctx.call_activity(CleanUp, ()).await?;
        ctx.sleep(Duration::from_secs(3600)).await;
    }
}

fn main() {}
