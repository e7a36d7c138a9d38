//! The escape hatch needs a reason.
use duractor::prelude::*;

#[orchestrator]
async fn timed(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    #[duractor::allow_nondeterminism]
    let started = std::time::Instant::now();
    Ok(started.elapsed().as_secs())
}

fn main() {}
