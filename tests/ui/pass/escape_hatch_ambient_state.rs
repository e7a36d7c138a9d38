//! The escape hatch silences the ambient-state rules: a global with interior mutability, an
//! `unsafe` block, a nested function's clock (on its statement, or on the whole function).
use duractor::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static mut LAST: u64 = 0;

#[orchestrator]
async fn measured(_ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    fn started() -> Instant {
        #[duractor::allow_nondeterminism(reason = "only feeds a log line")]
        Instant::now()
    }
    #[duractor::allow_nondeterminism(reason = "a metrics counter, never read back here")]
    fn count() {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let _ = Instant::now();
    }
    count();
    #[duractor::allow_nondeterminism(reason = "a metrics counter, never read back here")]
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    #[duractor::allow_nondeterminism(reason = "written, never read back")]
    unsafe {
        LAST = n;
    }
    tracing::debug!(elapsed = ?started().elapsed(), "measured");
    Ok(n)
}

fn main() {}
