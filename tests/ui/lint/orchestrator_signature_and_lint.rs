//! Signature errors and lint errors are reported together.
use duractor::prelude::*;

#[orchestrator]
async fn flow(ctx: OrchestrationContext) -> Result<(), duractor::Error> {
    let _ = ctx;
    let _now = std::time::SystemTime::now();
    Ok(())
}

fn main() {}
