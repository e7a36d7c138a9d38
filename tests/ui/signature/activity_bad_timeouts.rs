use duractor::prelude::*;

// Each timeout is checked where it is written: a zero, a negative, an absurdly long one, a
// number without a unit, and a value that is not a string.
#[activity(
    start_to_close = "0s",
    schedule_to_close = "-5m",
    heartbeat_timeout = "400d"
)]
async fn export(_ctx: ActivityContext, rows: u64) -> Result<u64, duractor::Error> {
    Ok(rows)
}

#[activity(start_to_close = "30", heartbeat_timeout = 10)]
async fn import(_ctx: ActivityContext, rows: u64) -> Result<u64, duractor::Error> {
    Ok(rows)
}

fn main() {}
