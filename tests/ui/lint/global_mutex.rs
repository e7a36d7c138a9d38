//! Global locks: a `Mutex` and an `RwLock` of std, a `Mutex` of tokio.
use duractor::prelude::*;
use std::sync::{Mutex, RwLock};

static CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SETTINGS: RwLock<u32> = RwLock::new(3);
static QUEUE: tokio::sync::Mutex<Vec<u32>> = tokio::sync::Mutex::const_new(Vec::new());

#[orchestrator]
async fn cached(_ctx: OrchestrationContext, key: String) -> Result<usize, duractor::Error> {
    let mut cache = CACHE.lock().map_err(|_| duractor::Error::msg("poisoned"))?;
    cache.push(key);
    let limit = SETTINGS.read().map(|s| *s).unwrap_or(0);
    let queued = QUEUE.try_lock().map(|q| q.len()).unwrap_or(0);
    Ok(cache.len() + limit as usize + queued)
}

fn main() {}
