use duractor::prelude::*;

// An orchestrator's flow-control limits are checked where they are written, as an
// activity's are; an unknown argument lists what `#[orchestrator]` accepts.
#[orchestrator(concurrency = 0, key = "customer")]
async fn checkout(_ctx: OrchestrationContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

#[orchestrator(rate = "10 a minute", retries = 3)]
async fn nightly(_ctx: OrchestrationContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

// A key alone limits nothing.
#[orchestrator(key = "/customer")]
async fn onboard(_ctx: OrchestrationContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

fn main() {}
