//! A bare `sleep(..)` imported outside the body is invisible to the lint, but awaiting its
//! future is rejected by the type rule, which needs no list.
use duractor::prelude::*;
use std::time::Duration;
use tokio::time::sleep;

#[orchestrator]
async fn reminder(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    sleep(Duration::from_secs(3600)).await;
    Ok(())
}

fn main() {}
