//! The clocks of the `time`, `jiff` and `tokio` crates.
use duractor::prelude::*;

// Stand-ins with the real crates' paths (`time` and `jiff` are not dependencies of these
// tests): the lint matches paths, before name resolution.
mod time {
    pub struct OffsetDateTime;
    impl OffsetDateTime {
        pub fn now_utc() -> Self {
            OffsetDateTime
        }
    }
}
mod jiff {
    pub struct Timestamp;
    impl Timestamp {
        pub fn now() -> Self {
            Timestamp
        }
    }
    pub struct Zoned;
    impl Zoned {
        pub fn now() -> Self {
            Zoned
        }
    }
}
use jiff::Zoned;

#[orchestrator]
async fn clocks(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let _a = time::OffsetDateTime::now_utc();
    let _b = jiff::Timestamp::now();
    let _c = Zoned::now();
    let _d = tokio::time::Instant::now();
    Ok(())
}

fn main() {}
