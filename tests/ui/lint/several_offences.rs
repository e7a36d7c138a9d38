//! Every offence in a body is reported in the same build, each at its own tokens.
use duractor::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

#[activity]
async fn charge(_ctx: ActivityContext, _cents: u64) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn checkout(ctx: OrchestrationContext, carts: HashMap<String, u64>) -> Result<(), duractor::Error> {
    let started = std::time::Instant::now();
    let region = std::env::var("REGION").unwrap_or_default();
    for (_user, cents) in &carts {
        ctx.call_activity(Charge, *cents).await?;
    }
    std::thread::sleep(Duration::from_millis(10));
    let _receipt = std::fs::write("receipt.txt", region);
    let _ = started;
    loop {
        ctx.sleep(Duration::from_secs(60)).await;
    }
}

fn main() {}
