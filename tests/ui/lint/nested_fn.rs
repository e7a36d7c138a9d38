//! A function nested in an orchestrator body runs as part of it: it is linted like the body.
use duractor::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

// A stand-in with rand's paths (rand is not a dependency of these tests).
mod rand {
    pub fn random<T: Default>() -> T {
        T::default()
    }
}

#[orchestrator]
async fn pick(_ctx: OrchestrationContext, choices: Vec<String>) -> Result<String, duractor::Error> {
    fn roll(sides: usize) -> usize {
        rand::random::<usize>() % sides.max(1)
    }
    fn seconds() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
    fn banner() -> Vec<u8> {
        std::fs::read("banner.txt").unwrap_or_default()
    }
    let index = roll(choices.len()) + seconds() as usize + banner().len();
    Ok(choices.get(index % choices.len().max(1)).cloned().unwrap_or_default())
}

fn main() {}
