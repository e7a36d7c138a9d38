//! Iterating a `HashMap` made in the body: the durable calls would follow a random order.
use duractor::prelude::*;
use std::collections::HashMap;

#[activity]
async fn bill(_ctx: ActivityContext, _line: (String, u64)) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn invoice(ctx: OrchestrationContext, lines: Vec<(String, u64)>) -> Result<(), duractor::Error> {
    let mut totals = HashMap::new();
    for (customer, cents) in lines {
        *totals.entry(customer).or_insert(0) += cents;
    }
    for (customer, cents) in &totals {
        ctx.call_activity(Bill, (customer.clone(), *cents)).await?;
    }
    Ok(())
}

fn main() {}
