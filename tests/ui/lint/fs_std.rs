//! File-system I/O with `std::fs`, here inside a closure.
use duractor::prelude::*;

#[orchestrator]
async fn configs(_ctx: OrchestrationContext, names: Vec<String>) -> Result<usize, duractor::Error> {
    let sizes: Vec<usize> = names
        .iter()
        .map(|name| std::fs::read_to_string(name).map(|s| s.len()).unwrap_or(0))
        .collect();
    Ok(sizes.iter().sum())
}

fn main() {}
