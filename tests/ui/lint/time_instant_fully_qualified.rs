//! A fully qualified path with a leading `::` is matched too.
use duractor::prelude::*;

#[orchestrator]
async fn timed(ctx: OrchestrationContext, _: ()) -> Result<u128, duractor::Error> {
    let started = ::std::time::Instant::now();
    ctx.sleep(std::time::Duration::from_secs(1)).await;
    Ok(started.elapsed().as_millis())
}

fn main() {}
