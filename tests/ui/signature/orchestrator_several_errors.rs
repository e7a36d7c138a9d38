use duractor::prelude::*;

#[orchestrator(version = 2)]
fn flow<T>(ctx: OrchestrationContext) {}

fn main() {}
