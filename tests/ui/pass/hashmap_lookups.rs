//! A `HashMap` used for lookups only (no iteration), order-free queries, and a map with a
//! deterministic hasher, are all fine.
use duractor::prelude::*;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

#[activity]
async fn price(_ctx: ActivityContext, _sku: String) -> Result<u64, duractor::Error> {
    Ok(100)
}

#[orchestrator]
async fn quote(ctx: OrchestrationContext, skus: Vec<String>) -> Result<u64, duractor::Error> {
    let mut cache: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for sku in &skus {
        if !cache.contains_key(sku) {
            let price = ctx.call_activity(Price, sku.clone()).await?;
            cache.insert(sku.clone(), price);
        }
        total += cache.get(sku).copied().unwrap_or(0);
        *cache.entry(sku.clone()).or_default() += 0;
    }
    let distinct = cache.keys().count() + cache.len();
    let most = cache.values().max().copied().unwrap_or(0);
    let mut stable: HashMap<u8, u8, BuildHasherDefault<DefaultHasher>> = HashMap::default();
    stable.insert(1, 2);
    for (k, v) in &stable {
        total += u64::from(*k + *v);
    }
    Ok(total + distinct as u64 + most)
}

fn main() {}
