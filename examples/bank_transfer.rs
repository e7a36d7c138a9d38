//! Bank transfer: moving money between two account entities inside a critical section, so no
//! other operation sees (or changes) the accounts half-way.
//!
//! ```text
//! cargo run --example bank_transfer -- signal Account alice deposit --input 100
//! cargo run --example bank_transfer -- run transfer --input '["alice", "bob", 30]'
//! cargo run --example bank_transfer -- entity Account bob
//! ```

use duractor::prelude::*;

/// A bank account.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    /// The balance, in cents.
    pub balance: i64,
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

#[duractor::main]
async fn main() {}
