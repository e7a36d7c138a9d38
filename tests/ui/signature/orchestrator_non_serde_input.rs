use duractor::prelude::*;

struct NotSerde;

#[orchestrator]
async fn flow(_ctx: OrchestrationContext, _input: NotSerde) -> Result<(), duractor::Error> {
    Ok(())
}

fn main() {}
