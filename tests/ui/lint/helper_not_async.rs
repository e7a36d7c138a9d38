//! `#[orchestration_helper]` goes on an `async fn`, and takes no arguments.
use duractor::prelude::*;

#[orchestration_helper]
fn not_async(ctx: &OrchestrationContext) -> u64 {
    ctx.instance_id().len() as u64
}

#[orchestration_helper(name = "x")]
async fn with_arguments(ctx: &OrchestrationContext) -> u64 {
    ctx.instance_id().len() as u64
}

fn main() {}
