//! An orchestrator input that is a `HashMap`, consumed by a `for` loop.
use duractor::prelude::*;
use std::collections::HashMap;

#[activity]
async fn restock(_ctx: ActivityContext, _item: (String, u32)) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn restock_all(ctx: OrchestrationContext, stock: HashMap<String, u32>) -> Result<(), duractor::Error> {
    for (item, count) in stock {
        ctx.call_activity(Restock, (item, count)).await?;
    }
    Ok(())
}

fn main() {}
