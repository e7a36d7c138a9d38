//! `async` blocks and closures inside orchestrators are durable and joinable.
use duractor::prelude::*;
use std::time::Duration;

#[activity]
async fn fetch(_ctx: ActivityContext, page: u32) -> Result<Vec<u32>, duractor::Error> {
    Ok(vec![page])
}

#[orchestrator]
async fn crawl(ctx: OrchestrationContext, pages: u32) -> Result<usize, duractor::Error> {
    let fetch_page = |page: u32| {
        let ctx = ctx.clone();
        async move {
            ctx.sleep(Duration::from_millis(10)).await;
            ctx.call_activity(Fetch, page).await
        }
    };
    let results = ctx.join_all((0..pages).map(fetch_page)).await;
    let first = async { ctx.call_activity(Fetch, 0).await.map(|v| v.len()) }.await?;
    let mut total = first;
    for result in results {
        total += result?.len();
    }
    Ok(total)
}

fn main() {}
