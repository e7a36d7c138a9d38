//! Aggregator: a counter entity accumulates values sent by many senders, one operation at a
//! time, exactly once each.
//!
//! ```text
//! cargo run --example counter
//! ```

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// Counts things. Entities start from `Default` when first addressed.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
    updates: u64,
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

/// Adds up a batch of numbers through the counter and reads the total back.
#[orchestrator]
async fn tally(ctx: OrchestrationContext, numbers: Vec<i64>) -> Result<i64, duractor::Error> {
    let counter = ctx.call_entity::<Counter>("totals");
    for n in numbers {
        ctx.signal_entity::<Counter>("totals").add(n);
    }
    counter.get().await
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let store = SqliteStore::open("counter.db").await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();

    // Many concurrent senders, one entity: every signal is applied once.
    client.signal_entity::<Counter>("totals").reset().await?;
    let senders = (1..=10).map(|n| {
        let client = client.clone();
        tokio::spawn(async move { client.signal_entity::<Counter>("totals").add(n).await })
    });
    for sender in senders {
        sender.await.map_err(duractor::Error::msg)??;
    }
    // An orchestration adds more, then calls the entity for the total.
    let id = client.start(Tally, vec![100, 200]).await?;
    let status = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await?;
    let total: i64 = status.output()?;
    let counter = client.entity_state::<Counter>("totals").await?;
    println!("total {total} (expected 355); stored state {counter:?}");

    runtime.shutdown().await
}
