//! A `thread_local!` declared outside the orchestrator: shared by every instance on the thread.
use duractor::prelude::*;
use std::cell::Cell;

thread_local! {
    static RUNS: Cell<u32> = const { Cell::new(0) };
}

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let runs = RUNS.with(|runs| {
        runs.set(runs.get() + 1);
        runs.get()
    });
    Ok(runs)
}

fn main() {}
