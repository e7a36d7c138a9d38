//! Time types and arithmetic are fine; only reading a clock is not.
use chrono::{DateTime, TimeZone, Utc};
use duractor::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn deadline_of(start: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    start + chrono::Duration::days(days)
}

#[orchestrator]
async fn schedule(ctx: OrchestrationContext, days: i64) -> Result<String, duractor::Error> {
    let start: DateTime<Utc> = ctx.now();
    let deadline = deadline_of(start, days);
    let epoch = Utc.timestamp_opt(0, 0).single().unwrap_or(start);
    let unix: SystemTime = UNIX_EPOCH + Duration::from_secs(start.timestamp().max(0) as u64);
    ctx.timer_at(deadline).await;
    Ok(format!("{epoch} {unix:?} {}", (ctx.now() - start).num_days()))
}

fn main() {}
