//! A `OnceLock` set by the rest of the program, and a `LazyLock` around a `Mutex`.
use duractor::prelude::*;
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, OnceLock};

static REGION: OnceLock<String> = OnceLock::new();
static SEEN: LazyLock<Mutex<BTreeMap<String, u32>>> = LazyLock::new(Default::default);

#[orchestrator]
async fn regional(_ctx: OrchestrationContext, user: String) -> Result<String, duractor::Error> {
    let region = REGION.get().cloned().unwrap_or_default();
    if let Ok(mut seen) = SEEN.lock() {
        *seen.entry(user.clone()).or_default() += 1;
    }
    Ok(format!("{user}@{region}"))
}

fn main() {}
