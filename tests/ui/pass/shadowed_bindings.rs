//! A name that once held a `HashMap` and is shadowed by something else is not a map any more.
use duractor::prelude::*;
use std::collections::HashMap;

#[orchestrator]
async fn regroup(_ctx: OrchestrationContext, words: Vec<String>) -> Result<usize, duractor::Error> {
    let counts: HashMap<&str, usize> = HashMap::new();
    let _ = counts.len();
    let counts: Vec<(&str, usize)> = words.iter().map(|w| (w.as_str(), w.len())).collect();
    let mut total = 0;
    for (_, n) in &counts {
        total += n;
    }
    let map = HashMap::<u8, u8>::new();
    let _ = map.get(&1);
    for map in [vec![1u8], vec![2]] {
        total += map.iter().count();
    }
    let lengths = words.iter().map(|map| map.len());
    total += lengths.sum::<usize>();
    Ok(total)
}

fn main() {}
