//! `BTreeMap`/`BTreeSet` iterate in sorted order on every replay.
use duractor::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[activity]
async fn bill(_ctx: ActivityContext, _line: (String, u64)) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn invoice(ctx: OrchestrationContext, lines: Vec<(String, u64)>) -> Result<usize, duractor::Error> {
    let mut totals = BTreeMap::new();
    for (customer, cents) in lines {
        *totals.entry(customer).or_insert(0) += cents;
    }
    for (customer, cents) in &totals {
        ctx.call_activity(Bill, (customer.clone(), *cents)).await?;
    }
    let customers: BTreeSet<&String> = totals.keys().collect();
    let calls: Vec<_> = customers
        .iter()
        .map(|customer| ctx.call_activity(Bill, ((*customer).clone(), 0)))
        .collect();
    ctx.join_all(calls).await;
    Ok(totals.values().count())
}

fn main() {}
