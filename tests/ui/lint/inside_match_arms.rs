//! Offences inside match arms and guards are found.
use duractor::prelude::*;
use std::time::{Instant, SystemTime};

#[orchestrator]
async fn route(_ctx: OrchestrationContext, kind: u8) -> Result<u128, duractor::Error> {
    let value = match kind {
        0 => Instant::now().elapsed().as_nanos(),
        n if SystemTime::now().elapsed().is_ok() => u128::from(n),
        _ => 0,
    };
    Ok(value)
}

fn main() {}
