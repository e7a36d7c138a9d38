//! `format!`, `println!`, `write!`, `assert!`, `vec!`, `matches!` with deterministic arguments.
use duractor::prelude::*;
use std::fmt::Write;

#[orchestrator]
async fn report(ctx: OrchestrationContext, items: Vec<u32>) -> Result<String, duractor::Error> {
    let mut out = format!("{} items for {}", items.len(), ctx.instance_id());
    let _ = write!(out, ", first: {:?}", items.first());
    assert!(items.len() < 1_000, "too many items: {}", items.len());
    debug_assert_eq!(items.len(), items.iter().count());
    let zeros = vec![0u8; items.len()];
    let doubled = vec![items.len() * 2, zeros.len()];
    if !ctx.is_replaying() {
        println!("{out} {doubled:?}");
    }
    let any_zero = items.iter().any(|n| matches!(n, 0));
    Ok(format!("{out} {any_zero} at {}", ctx.now()))
}

fn main() {}
