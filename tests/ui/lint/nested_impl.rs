//! Methods of an `impl` nested in an orchestrator body are linted like the body.
use duractor::prelude::*;
use std::time::Instant;

// A stand-in with rand's paths (rand is not a dependency of these tests).
mod rand {
    pub fn random<T: Default>() -> T {
        T::default()
    }
}

#[orchestrator]
async fn sample(_ctx: OrchestrationContext, _: ()) -> Result<u64, duractor::Error> {
    struct Sampler;

    impl Sampler {
        fn draw(&self) -> u64 {
            rand::random()
        }

        fn started() -> Instant {
            Instant::now()
        }

        fn config() -> String {
            std::fs::read_to_string("sampler.toml").unwrap_or_default()
        }
    }

    let sampler = Sampler;
    let elapsed = Sampler::started().elapsed().as_secs();
    Ok(sampler.draw() + elapsed + Sampler::config().len() as u64)
}

fn main() {}
