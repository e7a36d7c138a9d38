//! The process environment: `std::env::var`, `env::vars` (through `use std::env;` in the body).
use duractor::prelude::*;

#[orchestrator]
async fn configured(_ctx: OrchestrationContext, _: ()) -> Result<usize, duractor::Error> {
    use std::env;
    let region = std::env::var("REGION").unwrap_or_default();
    let count = env::vars().count();
    Ok(region.len() + count)
}

fn main() {}
