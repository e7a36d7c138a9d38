//! The reason must be a non-empty string, and `reason` is the only argument.
use duractor::prelude::*;

#[orchestrator]
async fn timed(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    #[duractor::allow_nondeterminism(reason = "  ")]
    let started = std::time::Instant::now();
    #[duractor::allow_nondeterminism(because = "metrics")]
    let stopped = std::time::Instant::now();
    #[duractor::allow_nondeterminism(reason = metrics)]
    let also = std::time::Instant::now();
    Ok((stopped - started + also.elapsed()).as_secs())
}

fn main() {}
