//! The worker process: `std::process::id`, `process::Command`, `std::process::exit`.
use duractor::prelude::*;
use std::process;

#[orchestrator]
async fn shell(_ctx: OrchestrationContext, fail: bool) -> Result<u32, duractor::Error> {
    let _ = process::Command::new("ls").status();
    if fail {
        std::process::exit(1);
    }
    Ok(std::process::id())
}

fn main() {}
