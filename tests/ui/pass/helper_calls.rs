//! `#[orchestration_helper]` functions: awaited, joined, selected, generic, with several
//! borrowed parameters, as methods, and calling each other.
use duractor::prelude::*;
use std::time::Duration;

#[activity]
async fn charge(_ctx: ActivityContext, cents: u64) -> Result<String, duractor::Error> {
    Ok(format!("receipt {cents}"))
}

/// Charges with retries; a helper may use `?` and `return` like any `async fn`.
#[orchestration_helper]
async fn charge_with_retry(ctx: &OrchestrationContext, cents: u64, attempts: u32) -> Result<String, duractor::Error> {
    let mut last = None;
    for attempt in 1..=attempts {
        match ctx.call_activity(Charge, cents).await {
            Ok(receipt) => return Ok(receipt),
            Err(error) => last = Some(error),
        }
        ctx.sleep(Duration::from_secs(u64::from(attempt))).await;
    }
    Err(last.unwrap_or_else(|| duractor::Error::msg("no attempts")))
}

#[orchestration_helper]
async fn label<'a>(ctx: &OrchestrationContext, prefix: &'a str, names: &[String]) -> String {
    ctx.sleep(Duration::from_millis(1)).await;
    format!("{prefix}: {}", names.join(", "))
}

#[orchestration_helper]
async fn first_of<T: Clone + 'static>(ctx: &OrchestrationContext, items: Vec<T>) -> Option<T> {
    ctx.sleep(Duration::from_millis(1)).await;
    items.first().cloned()
}

#[orchestration_helper]
async fn first_name<'a>(ctx: &OrchestrationContext, names: &'a [String]) -> Option<&'a String> {
    ctx.sleep(Duration::from_millis(1)).await;
    names.first()
}

#[orchestration_helper]
async fn show(ctx: &OrchestrationContext, item: impl std::fmt::Display) -> String {
    ctx.sleep(Duration::from_millis(1)).await;
    item.to_string()
}

#[orchestration_helper]
async fn describe(ctx: &OrchestrationContext, n: u32) -> impl std::fmt::Display {
    ctx.sleep(Duration::from_millis(1)).await;
    n * 2
}

#[orchestration_helper]
async fn nested(ctx: &OrchestrationContext) -> Result<usize, duractor::Error> {
    let receipt = charge_with_retry(ctx, 1, 2).await?;
    Ok(receipt.len())
}

#[orchestration_helper]
async fn owned_context(ctx: OrchestrationContext) {
    ctx.sleep(Duration::from_millis(1)).await;
}

struct Cart {
    cents: Vec<u64>,
}

impl Cart {
    #[orchestration_helper]
    async fn pay(&self, ctx: &OrchestrationContext) -> Result<Vec<String>, duractor::Error> {
        let receipts = ctx
            .join_all(self.cents.iter().map(|&cents| charge_with_retry(ctx, cents, 3)))
            .await;
        receipts.into_iter().collect()
    }

    #[orchestration_helper]
    async fn largest(&self, ctx: &OrchestrationContext) -> &u64 {
        ctx.sleep(Duration::from_millis(1)).await;
        self.cents.iter().max().unwrap_or(&0)
    }
}

#[orchestrator]
async fn checkout(ctx: OrchestrationContext, cents: Vec<u64>) -> Result<String, duractor::Error> {
    let receipt = charge_with_retry(&ctx, 100, 3).await?;
    let both = ctx
        .join(charge_with_retry(&ctx, 1, 1), charge_with_retry(&ctx, 2, 1))
        .await;
    let raced = ctx
        .select(charge_with_retry(&ctx, 3, 1), ctx.sleep(Duration::from_secs(60)))
        .await;
    let names = vec!["a".to_owned(), "b".to_owned()];
    let text = label(&ctx, "paid", &names).await;
    let one = first_of(&ctx, cents.clone()).await;
    let count = nested(&ctx).await?;
    owned_context(ctx.clone()).await;
    let first = first_name(&ctx, &names).await.cloned();
    let shown = format!("{} {}", show(&ctx, 5).await, describe(&ctx, 2).await);
    let cart = Cart { cents };
    let largest = *cart.largest(&ctx).await;
    let receipts = cart.pay(&ctx).await?;
    let _ = (both, matches!(raced, Either::Left(_)), one, count, first, shown, largest);
    Ok(format!("{receipt} {text} {}", receipts.len()))
}

fn main() {}
