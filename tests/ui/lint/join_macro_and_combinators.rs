//! `tokio::join!` and `futures::future::join_all`: not durable combinators.
use duractor::prelude::*;
use std::time::Duration;

// A stand-in with the futures crate's paths (futures is not a dependency of these tests).
mod futures {
    pub mod future {
        pub async fn join_all<F: std::future::Future>(_futures: Vec<F>) -> Vec<F::Output> {
            Vec::new()
        }
    }
}
use futures::future::join_all;

#[orchestrator]
async fn both(ctx: OrchestrationContext, _: ()) -> Result<usize, duractor::Error> {
    let (a, b) = tokio::join!(ctx.sleep(Duration::from_secs(1)), ctx.sleep(Duration::from_secs(2)));
    let all = join_all(vec![ctx.sleep(Duration::from_secs(1))]).await;
    let _ = (a, b);
    Ok(all.len())
}

fn main() {}
