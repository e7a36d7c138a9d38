//! Globals an orchestrator may read: constants (free, associated, of primitive types) and
//! statics without interior mutability, in the body, a helper and a nested function.
use duractor::prelude::*;
use std::collections::BTreeMap;
use std::sync::LazyLock;

const MAX_RETRIES: u32 = 3;
const NO_ITEMS: Vec<u32> = Vec::new();
static NAMES: [&str; 3] = ["ada", "grace", "linus"];
static GREETING: &str = "hello";
static PRICES: LazyLock<BTreeMap<&str, u32>> = LazyLock::new(|| BTreeMap::from([("tea", 3)]));

mod limits {
    pub const PER_ORDER: u32 = 10;
}

#[derive(Clone, Copy)]
#[allow(clippy::upper_case_acronyms)]
enum Priority {
    LOW,
    HIGH,
}

struct Budget {
    cents: u32,
}

impl Budget {
    const LIMIT: u32 = 500;

    #[orchestration_helper]
    async fn spend(&self, ctx: &OrchestrationContext, cents: u32) -> Result<u32, duractor::Error> {
        let allowed = cents.min(Self::LIMIT).min(self.cents);
        ctx.call_activity(Charge, allowed).await
    }
}

#[activity]
async fn charge(_ctx: ActivityContext, cents: u32) -> Result<u32, duractor::Error> {
    Ok(cents)
}

#[orchestrator]
async fn shop(ctx: OrchestrationContext, names: Vec<String>) -> Result<u64, duractor::Error> {
    fn capped(n: u32) -> u32 {
        n.min(limits::PER_ORDER)
    }
    let mut total = 0;
    let headroom = u32::MAX - total;
    for attempt in 0..MAX_RETRIES {
        total += attempt;
    }
    let known = names.iter().filter(|n| NAMES.contains(&n.as_str())).count();
    let greeting = format!("{GREETING}, {}", NAMES[0]);
    let tea = PRICES.get("tea").copied().unwrap_or(0);
    let mut items = NO_ITEMS;
    items.push(capped(crate::limits::PER_ORDER));
    let priority = if known > 1 { Priority::HIGH } else { Priority::LOW };
    let weight = match priority {
        Priority::LOW => 1,
        Priority::HIGH => 2,
    };
    let spent = Budget { cents: 100 }.spend(&ctx, tea).await?;
    tracing::info!(max = MAX_RETRIES, "{greeting}");
    assert!(!NAMES.is_empty(), "{}", i64::MIN);
    let pi = std::f64::consts::PI.round() as u64;
    Ok(u64::from(total + tea + weight + spent + headroom) + items.len() as u64 + pi)
}

fn main() {}
