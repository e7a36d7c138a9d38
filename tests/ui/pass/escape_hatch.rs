//! `#[duractor::allow_nondeterminism(reason = "..")]` on a statement, a `let` and a match arm.
use duractor::prelude::*;
use std::time::Instant;

#[activity]
async fn step(_ctx: ActivityContext, n: u32) -> Result<u32, duractor::Error> {
    Ok(n)
}

#[orchestrator]
async fn measured(ctx: OrchestrationContext, n: u32) -> Result<u32, duractor::Error> {
    #[duractor::allow_nondeterminism(reason = "wall-clock time only feeds a log line, never a decision")]
    let started = Instant::now();
    let out = ctx.call_activity(Step, n).await?;
    #[duractor::allow_nondeterminism(reason = "log only")]
    tracing::debug!(elapsed = ?started.elapsed(), "step done");
    let region = match out {
        #[duractor::allow_nondeterminism(reason = "read-only diagnostics")]
        0 => std::env::var("REGION").unwrap_or_default(),
        _ => String::new(),
    };
    Ok(out + region.len() as u32)
}

fn main() {}
