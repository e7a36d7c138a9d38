//! The context's replacements: `ctx.now()`, `ctx.new_uuid()`, `ctx.rng()`, durable timers,
//! events, and the durable combinators.
use duractor::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn replacements(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let started = ctx.now();
    let id = ctx.new_uuid();
    let mut rng = ctx.rng();
    let roll = rng.gen_range(1..7);
    let coin = rng.gen_bool(0.5);
    ctx.sleep(Duration::from_secs(roll)).await;
    ctx.timer_at(started + chrono::Duration::minutes(5)).await;
    let approved = ctx
        .wait_for_event_timeout::<bool>("approval", Duration::from_secs(3600))
        .await?;
    let (index, ()) = ctx
        .when_any(vec![ctx.sleep(Duration::from_secs(1)), ctx.sleep(Duration::from_secs(2))])
        .await;
    let elapsed = ctx.now() - started;
    Ok(format!("{id} {roll} {coin} {approved:?} {index} {}s", elapsed.num_seconds()))
}

fn main() {}
