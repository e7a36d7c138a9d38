//! Functions of the start-policy and signal-with-start tests, shared by the tests and the
//! `bounded_app` app.

use duractor::prelude::*;

/// Collects `count` `item` events and returns them sorted.
#[orchestrator]
pub async fn collect_events(
    ctx: OrchestrationContext,
    count: u32,
) -> Result<Vec<String>, duractor::Error> {
    let mut items = Vec::new();
    for _ in 0..count {
        items.push(ctx.wait_for_event::<String>("item").await?);
    }
    items.sort();
    Ok(items)
}

/// Fails when asked to, else completes at once.
#[orchestrator]
pub async fn maybe_fail(_ctx: OrchestrationContext, fail: bool) -> Result<bool, duractor::Error> {
    if fail {
        return Err(duractor::Error::msg("asked to fail"));
    }
    Ok(fail)
}
