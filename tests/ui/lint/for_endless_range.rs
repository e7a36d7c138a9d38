//! `for` over an endless range without a way out.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn retry_forever(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    for attempt in 1u64.. {
        ctx.sleep(Duration::from_secs(attempt)).await;
    }
    Ok(())
}

fn main() {}
