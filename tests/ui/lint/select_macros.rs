//! `tokio::select!` and a bare `select!`: the winner depends on polling order, not history.
use duractor::prelude::*;
use std::time::Duration;

macro_rules! select {
    ($($tokens:tt)*) => {
        0
    };
}

#[orchestrator]
async fn race(ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let first = tokio::select! {
        _ = ctx.sleep(Duration::from_secs(1)) => 1,
        _ = ctx.sleep(Duration::from_secs(2)) => 2,
    };
    let second = select!(a = ctx.sleep(Duration::from_secs(1)) => 1);
    Ok(first + second)
}

fn main() {}
