//! A worker process for the entity crash tests.
//!
//! * `entity_worker serve DB`: runs a worker until killed.
//! * `entity_worker bank DB`: seeds 10 accounts with 100 each (once), runs 50 transfer
//!   orchestrations among them in critical sections, and exits 0 when all have completed.

use std::time::Duration;

use duractor::prelude::*;
use duractor_sqlx::SqliteStore;

/// A counter that checks in-order delivery per sender.
#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub total: u64,
    pub applied: u64,
    /// Last sequence number seen per sender.
    pub last: std::collections::BTreeMap<u32, u64>,
    /// Messages that arrived out of order (or twice).
    pub violations: u64,
}

#[entity]
impl Tally {
    fn record(&mut self, (sender, seq, amount): (u32, u64, u64)) {
        let last = self.last.entry(sender).or_insert(0);
        if seq != *last + 1 {
            self.violations += 1;
        }
        *last = seq;
        self.total += amount;
        self.applied += 1;
    }
}

#[entity]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    pub balance: i64,
}

#[entity]
impl Account {
    fn deposit(&mut self, amount: i64) -> Result<i64, duractor::Error> {
        if self.balance + amount < 0 {
            return Err(duractor::Error::non_retriable("insufficient funds"));
        }
        self.balance += amount;
        Ok(self.balance)
    }

    fn balance(&self) -> i64 {
        self.balance
    }
}

#[orchestrator]
async fn seed_accounts(ctx: OrchestrationContext, count: u32) -> Result<(), duractor::Error> {
    for i in 0..count {
        ctx.signal_entity::<Account>(format!("acct-{i}"))
            .deposit(100);
    }
    Ok(())
}

#[orchestrator]
async fn move_money(
    ctx: OrchestrationContext,
    (from, to, amount): (String, String, i64),
) -> Result<bool, duractor::Error> {
    let _section = ctx
        .lock([
            EntityId::of::<Account>(from.clone()),
            EntityId::of::<Account>(to.clone()),
        ])
        .await?;
    let source = ctx.call_entity::<Account>(from);
    if source.balance().await? < amount {
        return Ok(false);
    }
    // Hold the locks across a durable wait (and give crashes a chance to land here).
    ctx.sleep(Duration::from_millis(30)).await;
    source.deposit(-amount).await?;
    ctx.call_entity::<Account>(to).deposit(amount).await?;
    Ok(true)
}

#[tokio::main]
async fn main() -> Result<(), duractor::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, db) = match args.as_slice() {
        [mode, db] => (mode.as_str(), db.as_str()),
        _ => {
            eprintln!("usage: entity_worker serve|bank DATABASE");
            std::process::exit(2);
        }
    };
    let store = SqliteStore::open(db).await?;
    let runtime = Runtime::builder(store)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await?;
    let client = runtime.client();
    match mode {
        "serve" => loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        },
        "bank" => {
            // Start each instance once: a finished instance with the same id would be
            // replaced by a new run, so look first.
            let exists = async |id: &str| client.status(id).await.is_ok();
            if !exists("seed").await {
                client.start(SeedAccounts, 10).instance_id("seed").await?;
            }
            client
                .wait_for_completion("seed", Duration::from_secs(60))
                .await?;
            for i in 0..50u32 {
                let from = format!("acct-{}", i % 10);
                let to = format!("acct-{}", (i * 7 + 3) % 10);
                let to = if to == from {
                    format!("acct-{}", (i + 1) % 10)
                } else {
                    to
                };
                let id = format!("transfer-{i}");
                if !exists(&id).await {
                    client
                        .start(MoveMoney, (from, to, 10 + i64::from(i % 5) * 15))
                        .instance_id(id)
                        .await?;
                }
            }
            for i in 0..50 {
                let status = client
                    .wait_for_completion(&format!("transfer-{i}"), Duration::from_secs(120))
                    .await?;
                if status.status != RuntimeStatus::Completed {
                    eprintln!("transfer-{i} is {}: {:?}", status.status, status.failure);
                    std::process::exit(1);
                }
            }
            // Apply the lock releases the last transfers sent before stopping.
            assert!(runtime.wait_idle(Duration::from_secs(30)).await, "not idle");
            runtime.shutdown().await
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}
