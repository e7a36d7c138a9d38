//! `while true` without a way out.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn heartbeat(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    #[allow(while_true)]
    while true {
        ctx.sleep(Duration::from_secs(30)).await;
    }
    Ok(())
}

fn main() {}
