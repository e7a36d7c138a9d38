//! Activity timeouts given on the attribute become the handle's defaults.
use duractor::prelude::*;
use std::time::Duration;

#[activity(start_to_close = "1h30m", schedule_to_close = "1d", heartbeat_timeout = "500ms")]
async fn export(_ctx: ActivityContext, rows: u64) -> Result<u64, duractor::Error> {
    Ok(rows)
}

fn main() {
    let timeouts = <Export as Activity>::TIMEOUTS;
    assert_eq!(timeouts.start_to_close, Some(Duration::from_secs(5400)));
    assert_eq!(timeouts.schedule_to_close, Some(Duration::from_secs(86_400)));
    assert_eq!(timeouts.heartbeat_timeout, Some(Duration::from_millis(500)));
}
