//! A nested `unsafe fn` is rejected like an `unsafe` block: each `unsafe` is reported.
use duractor::prelude::*;

static mut RUNS: u32 = 0;

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    unsafe fn bump() -> u32 {
        unsafe {
            RUNS += 1;
            RUNS
        }
    }
    Ok(unsafe { bump() })
}

fn main() {}
