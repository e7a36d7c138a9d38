//! Bank transfer: moving money between two account entities inside a critical section, so no
//! other operation sees (or changes) the accounts half-way.
//!
//! ```text
//! cargo run --example bank_transfer
//! ```

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// A bank account.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[entity]
impl Account {
    /// Adds `amount` (negative to withdraw); refuses to go below zero.
    fn deposit(&mut self, amount: i64) -> Result<i64, duractor::Error> {
        if self.balance + amount < 0 {
            return Err(duractor::Error::non_retriable(format!(
                "insufficient funds: balance {}, withdrawal {}",
                self.balance, -amount
            )));
        }
        self.balance += amount;
        Ok(self.balance)
    }

    /// The balance.
    fn balance(&self) -> i64 {
        self.balance
    }
}

/// Moves `amount` from one account to another, atomically: both accounts are locked for the
/// duration, in a global order, so concurrent transfers cannot deadlock.
#[orchestrator]
async fn transfer(
    ctx: OrchestrationContext,
    (from, to, amount): (String, String, i64),
) -> Result<String, duractor::Error> {
    let _locked = ctx
        .lock([
            EntityId::of::<Account>(from.clone()),
            EntityId::of::<Account>(to.clone()),
        ])
        .await?;
    let source = ctx.call_entity::<Account>(from.clone());
    let available = source.balance().await?;
    if available < amount {
        return Ok(format!("refused: {from} has {available}, needs {amount}"));
    }
    source.deposit(-amount).await?;
    ctx.call_entity::<Account>(to.clone())
        .deposit(amount)
        .await?;
    Ok(format!("moved {amount} from {from} to {to}"))
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let store = SqliteStore::open("bank_transfer.db").await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();

    let alice = format!("alice-{}", std::process::id());
    let bob = format!("bob-{}", std::process::id());
    client
        .signal_entity::<Account>(alice.clone())
        .deposit(100)
        .await?;
    client
        .signal_entity::<Account>(bob.clone())
        .deposit(50)
        .await?;

    // Ten concurrent transfers back and forth.
    let mut ids = Vec::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        ids.push(
            client
                .start(Transfer, (from.clone(), to.clone(), 30))
                .await?,
        );
    }
    for id in ids {
        let status = client
            .wait_for_completion(&id, Duration::from_secs(30))
            .await?;
        println!("{}", status.output::<String>()?);
    }
    let a = client
        .entity_state::<Account>(alice.clone())
        .await?
        .map_or(0, |a| a.balance);
    let b = client
        .entity_state::<Account>(bob.clone())
        .await?
        .map_or(0, |a| a.balance);
    println!("{alice}: {a}, {bob}: {b}, total {} (always 150)", a + b);

    runtime.shutdown().await
}
