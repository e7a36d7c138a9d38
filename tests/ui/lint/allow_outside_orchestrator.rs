//! The escape hatch only works on statements of orchestrators and helpers.
#[duractor::allow_nondeterminism(reason = "not in an orchestrator")]
fn plain() -> std::time::Instant {
    std::time::Instant::now()
}

fn main() {
    let _ = plain();
}
