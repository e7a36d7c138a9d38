//! `static mut` declared in the body: state shared by every instance.
use duractor::prelude::*;

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    static mut RUNS: u32 = 0;
    let runs = unsafe {
        RUNS += 1;
        RUNS
    };
    Ok(runs)
}

fn main() {}
