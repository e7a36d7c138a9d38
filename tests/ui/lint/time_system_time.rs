//! `SystemTime::now` imported outside the body: matched by how the path ends.
use duractor::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

#[orchestrator]
async fn stamp(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(since_epoch.as_secs())
}

fn main() {}
