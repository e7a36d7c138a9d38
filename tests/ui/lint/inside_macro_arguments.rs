//! Offences in the arguments of `format!`, `println!`, `vec!`, `assert!` and tracing macros.
use duractor::prelude::*;
use std::time::Instant;

#[orchestrator]
async fn logged(_ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let text = format!("at {}", chrono::Utc::now());
    println!("{:?}", Instant::now());
    let stamps = vec![std::process::id(); 3];
    assert!(std::env::var("CI").is_err(), "CI is {}", std::env::args().count());
    tracing::info!(target: "audit", at = ?std::time::SystemTime::now(), "done {}", stamps.len());
    Ok(text)
}

fn main() {}
