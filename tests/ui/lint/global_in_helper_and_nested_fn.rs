//! A global atomic read in a helper and in a function nested in an orchestrator body.
use duractor::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

#[orchestration_helper]
async fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[orchestrator]
async fn numbered(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    fn peek() -> u32 {
        NEXT_ID.load(Ordering::Relaxed)
    }
    let id = next_id().await;
    Ok(id + peek())
}

fn main() {}
