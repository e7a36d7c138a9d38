//! A future made by a local closure is checked like any other awaited expression.
use duractor::prelude::*;

#[orchestrator]
async fn indirect(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let rng = || std::future::ready(4);
    Ok(rng().await)
}

fn main() {}
