//! A `break` in a nested loop or closure does not end the outer loop.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn poller(ctx: OrchestrationContext, items: Vec<u32>) -> Result<(), duractor::Error> {
    loop {
        for item in &items {
            if *item == 0 {
                break;
            }
        }
        let _first = items.iter().position(|item| loop {
            if *item > 0 {
                break true;
            }
        });
        ctx.sleep(Duration::from_secs(60)).await;
    }
}

fn main() {}
