//! `thread_local!` declared in the body: state shared by every instance on the thread.
use duractor::prelude::*;
use std::cell::Cell;

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    thread_local! {
        static RUNS: Cell<u32> = const { Cell::new(0) };
    }
    Ok(RUNS.with(|runs| {
        runs.set(runs.get() + 1);
        runs.get()
    }))
}

fn main() {}
