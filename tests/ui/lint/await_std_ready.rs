//! Even a future that is ready at once is not durable.
use duractor::prelude::*;

#[orchestrator]
async fn ready(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let n = std::future::ready(1).await;
    Ok(n)
}

fn main() {}
