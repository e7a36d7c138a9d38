//! An app whose functions panic, for the test that a caught panic is logged once through
//! `tracing` (with where it happened) instead of being printed with a backtrace by the
//! default panic hook on every attempt.
//!
//! * `panicky run flaky`: an activity that panics on each of its 3 attempts, then an entity
//!   operation that panics; prints whether both calls failed.
//! * `panicky run doomed`: an orchestrator that panics.

use std::time::Duration;

use duractor::prelude::*;

#[activity]
async fn explode(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    panic!("the flux capacitor overheated");
}

/// An entity with an operation that panics.
#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Bomb {
    armed: bool,
}

#[entity]
impl Bomb {
    fn explode(&mut self) {
        self.armed = true;
        panic!("entity bug");
    }
}

#[orchestrator]
async fn flaky(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    let policy = RetryPolicy::new(3, Duration::from_millis(10));
    let activity = ctx.call_activity_with_retry(Explode, (), &policy).await;
    let entity = ctx.call_entity::<Bomb>("b").explode().await;
    Ok(format!("{} {}", activity.is_err(), entity.is_err()))
}

#[orchestrator]
async fn doomed(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    panic!("orchestrator bug");
}

#[duractor::main]
async fn main() {}
