//! `HashMap` iteration inside a closure and an `async` block: `.values()`, `.into_iter()`.
use duractor::prelude::*;
use std::collections::HashMap;

#[activity]
async fn total(_ctx: ActivityContext, _amounts: Vec<u64>) -> Result<u64, duractor::Error> {
    Ok(0)
}

#[orchestrator]
async fn sum_up(ctx: OrchestrationContext, names: Vec<String>) -> Result<u64, duractor::Error> {
    let mut amounts: HashMap<String, u64> = HashMap::with_capacity(names.len());
    for name in names {
        amounts.insert(name, 1);
    }
    let listed = || amounts.values().copied().collect::<Vec<u64>>();
    let first = ctx.call_activity(Total, listed()).await?;
    let second = async {
        let pairs: Vec<(String, u64)> = amounts.into_iter().collect();
        ctx.call_activity(Total, pairs.into_iter().map(|(_, n)| n).collect()).await
    }
    .await?;
    Ok(first + second)
}

fn main() {}
