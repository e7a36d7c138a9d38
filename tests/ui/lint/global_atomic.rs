//! A global atomic declared outside the orchestrator, read by its name and by its module path.
use duractor::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

static RUNS: AtomicU32 = AtomicU32::new(0);

mod metrics {
    use std::sync::atomic::AtomicU64;

    pub static HITS: AtomicU64 = AtomicU64::new(0);
}

#[orchestrator]
async fn counter(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let hits = crate::metrics::HITS.load(Ordering::Relaxed);
    Ok(u64::from(run) + hits)
}

fn main() {}
