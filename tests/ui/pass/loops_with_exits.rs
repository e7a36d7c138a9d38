//! Loops that end: `break`, labeled `break`, `return`, a real `while` condition, `while let`,
//! and `for` over bounded ranges and endless ranges with a `break`.
use duractor::prelude::*;
use std::time::Duration;

#[activity]
async fn poll_status(_ctx: ActivityContext, _attempt: u32) -> Result<bool, duractor::Error> {
    Ok(true)
}

#[orchestrator]
async fn wait_until_ready(ctx: OrchestrationContext, max: u32) -> Result<u32, duractor::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if ctx.call_activity(PollStatus, attempt).await? || attempt >= max {
            break;
        }
        ctx.sleep(Duration::from_secs(u64::from(attempt))).await;
    }
    'outer: loop {
        for n in 0..3 {
            if n == 2 {
                break 'outer;
            }
        }
    }
    let mut left = max;
    while left > 0 {
        left -= 1;
    }
    let mut stack = vec![1, 2, 3];
    while let Some(top) = stack.pop() {
        attempt += top;
    }
    for backoff in 1u64.. {
        if backoff > 3 {
            break;
        }
        ctx.sleep(Duration::from_secs(backoff)).await;
    }
    loop {
        if ctx.call_activity(PollStatus, attempt).await? {
            return Ok(attempt);
        }
    }
}

fn main() {}
