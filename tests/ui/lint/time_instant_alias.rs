//! `use … as …` inside the body is resolved: `Clock::now` is `std::time::Instant::now`.
use duractor::prelude::*;

#[orchestrator]
async fn timed(ctx: OrchestrationContext, _: ()) -> Result<u128, duractor::Error> {
    use std::time::Instant as Clock;
    let started = Clock::now();
    ctx.sleep(std::time::Duration::from_secs(1)).await;
    Ok(started.elapsed().as_millis())
}

fn main() {}
