//! An actor-like loop over external events that ends on a "stop" command.
use duractor::prelude::*;

#[derive(Serialize, Deserialize)]
enum Command {
    Add(u64),
    Stop,
}

#[orchestrator]
async fn counter(ctx: OrchestrationContext, start: u64) -> Result<u64, duractor::Error> {
    let mut total = start;
    loop {
        match ctx.wait_for_event::<Command>("command").await? {
            Command::Add(n) => total += n,
            Command::Stop => break,
        }
        ctx.set_custom_status(&total);
    }
    Ok(total)
}

fn main() {}
