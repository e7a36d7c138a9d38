use duractor::prelude::*;

#[orchestrator]
async fn flow(_ctx: ActivityContext, _: ()) -> Result<(), duractor::Error> {
    Ok(())
}

fn main() {}
