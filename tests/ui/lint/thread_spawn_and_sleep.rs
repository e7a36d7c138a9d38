//! Threads and blocking sleeps: `std::thread::spawn`, `thread::sleep`.
use duractor::prelude::*;
use std::thread;
use std::time::Duration;

#[orchestrator]
async fn background(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let worker = std::thread::spawn(|| 1 + 1);
    thread::sleep(Duration::from_secs(5));
    let _ = worker.join();
    Ok(())
}

fn main() {}
