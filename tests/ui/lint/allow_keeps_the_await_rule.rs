//! The escape hatch turns off the lint for a statement, never the type rule for `.await`.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn napping(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    #[duractor::allow_nondeterminism(reason = "trying to sneak a runtime timer in")]
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

fn main() {}
