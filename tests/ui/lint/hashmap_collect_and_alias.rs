//! A map from `collect::<HashMap<..>>()` and one through `use … as …`: `.into_keys()`, `.drain()`.
use duractor::prelude::*;

#[orchestrator]
async fn regroup(_ctx: OrchestrationContext, pairs: Vec<(String, u32)>) -> Result<Vec<String>, duractor::Error> {
    use std::collections::HashMap as Map;
    let by_name = pairs.iter().cloned().collect::<std::collections::HashMap<_, _>>();
    let mut scratch = Map::new();
    scratch.insert(1u8, 2u8);
    let drained: Vec<(u8, u8)> = scratch.drain().collect();
    let mut names: Vec<String> = by_name.into_keys().collect();
    names.truncate(drained.len());
    Ok(names)
}

fn main() {}
