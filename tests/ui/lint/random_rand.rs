//! rand's global generators: `rand::random`, `thread_rng()`, `rand::rng()` (a bare call too).
use duractor::prelude::*;

// A stand-in with rand's paths (rand is not a dependency of these tests).
mod rand {
    pub struct Rng;
    impl Rng {
        pub fn next(&mut self) -> u64 {
            4
        }
    }
    pub fn random<T: Default>() -> T {
        T::default()
    }
    pub fn thread_rng() -> Rng {
        Rng
    }
    pub fn rng() -> Rng {
        Rng
    }
}
use rand::rng;

#[orchestrator]
async fn dice(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    let a: u64 = rand::random::<u64>();
    let b = rand::thread_rng().next();
    let c = rng().next();
    Ok(a + b + c)
}

fn main() {}
