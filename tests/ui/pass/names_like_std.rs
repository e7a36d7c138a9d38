//! Names that look like banned APIs but are not: user types called `Instant`, `now()`
//! methods, a user function named `random`, a local closure named `thread_rng`, constants of
//! `std::env` and addresses of `std::net`.
use duractor::prelude::*;

mod clock {
    /// The orchestration's own notion of an instant.
    pub struct Instant(pub i64);
    impl Instant {
        pub fn now() -> Self {
            Instant(0)
        }
    }
}

struct Schedule {
    at: i64,
}

impl Schedule {
    fn now(&self) -> i64 {
        self.at
    }
}

fn random(seed: u64) -> u64 {
    seed.rotate_left(7)
}

#[orchestrator]
async fn lookalikes(ctx: OrchestrationContext, seed: u64) -> Result<u64, duractor::Error> {
    let schedule = Schedule { at: ctx.now().timestamp() };
    let at = schedule.now();
    let fixed = clock::Instant::now();
    let also_fixed = crate::clock::Instant::now();
    {
        use crate::clock::Instant;
        let _mine = Instant::now();
    }
    let rng = random(seed);
    let thread_rng = |n: u64| n + 1;
    let rng = thread_rng(rng);
    let mut ctx_rng = ctx.rng();
    let os = std::env::consts::OS;
    let home = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let crate_name = env!("CARGO_PKG_NAME");
    Ok(at as u64 + (fixed.0 + also_fixed.0) as u64 + rng + ctx_rng.next_u64() % 2
        + os.len() as u64 + u64::from(home.octets()[0]) + crate_name.len() as u64)
}

fn main() {}
