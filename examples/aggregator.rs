//! Aggregator: a counter entity accumulates values sent by many senders, one operation at a
//! time, exactly once each.
//!
//! ```text
//! cargo run --example aggregator -- serve                                   # workers + HTTP API
//! cargo run --example aggregator -- signal Counter visits add --input 5     # from any shell
//! cargo run --example aggregator -- entity Counter visits                   # read the state
//! cargo run --example aggregator -- run tally --input '[1, 2, 3]'           # an orchestration adds and reads
//! ```
//!
//! State lives in `aggregator.db` in the working directory (or `--database-url`).

use duractor::prelude::*;

/// Counts things. Entities start from `Default` when first addressed.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The sum of everything added.
    pub value: i64,
    /// How many updates were applied.
    pub updates: u64,
}

#[entity]
impl Counter {
    /// Adds `amount`.
    fn add(&mut self, amount: i64) {
        self.value += amount;
        self.updates += 1;
    }

    /// The current value.
    fn get(&self) -> i64 {
        self.value
    }

    /// Starts again from zero.
    fn reset(&mut self) {
        *self = Counter::default();
    }
}

/// Adds the numbers to the `totals` counter (signals, in order), then reads it back.
#[orchestrator]
async fn tally(ctx: OrchestrationContext, numbers: Vec<i64>) -> Result<i64, duractor::Error> {
    for n in numbers {
        ctx.signal_entity::<Counter>("totals").add(n);
    }
    ctx.call_entity::<Counter>("totals").get().await
}

#[duractor::main]
async fn main() {}
