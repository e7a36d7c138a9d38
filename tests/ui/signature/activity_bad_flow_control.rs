use duractor::prelude::*;

// Each flow-control limit is checked where it is written: a concurrency of 0, a rate of 0,
// a rate that is not `count/period`, a key that is not a JSON pointer, a number in a string.
#[activity(concurrency = 0, rate = "0/s")]
async fn charge(_ctx: ActivityContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

#[activity(rate = "fifty per second", key = "customer")]
async fn refund(_ctx: ActivityContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

#[activity(concurrency = "3")]
async fn notify(_ctx: ActivityContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

// A key alone limits nothing.
#[activity(key = "/customer")]
async fn audit(_ctx: ActivityContext, cents: u64) -> Result<u64, duractor::Error> {
    Ok(cents)
}

fn main() {}
