//! The `tracing` macros, with fields, targets, spans and `?`/`%` sigils.
use duractor::prelude::*;

#[activity]
async fn ship(_ctx: ActivityContext, order: u64) -> Result<String, duractor::Error> {
    Ok(format!("parcel-{order}"))
}

#[orchestrator]
async fn fulfil(ctx: OrchestrationContext, order: u64) -> Result<String, duractor::Error> {
    let span = tracing::info_span!("fulfil", order, instance = %ctx.instance_id());
    let _entered = span.enter();
    tracing::debug!(target: "orders", order, replaying = ctx.is_replaying(), "shipping");
    let parcel = ctx.call_activity(Ship, order).await?;
    tracing::info!(parcel = %parcel, at = ?ctx.now(), "shipped {}", order);
    if parcel.is_empty() {
        tracing::warn!("empty parcel id for {order}");
    }
    tracing::event!(tracing::Level::TRACE, done = true);
    Ok(parcel)
}

fn main() {}
