//! A `static mut` declared outside the orchestrator can only be read in `unsafe`, so `unsafe`
//! is rejected.
use duractor::prelude::*;

static mut RUNS: u32 = 0;

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let runs = unsafe {
        RUNS += 1;
        RUNS
    };
    Ok(runs)
}

fn main() {}
