//! Durable `.await`s inside `format!` and `tracing` arguments compile (and are checked).
use duractor::prelude::*;

#[activity]
async fn greet(_ctx: ActivityContext, name: String) -> Result<String, duractor::Error> {
    Ok(format!("hello {name}"))
}

#[orchestrator]
async fn greetings(ctx: OrchestrationContext, name: String) -> Result<String, duractor::Error> {
    tracing::info!(greeting = %ctx.call_activity(Greet, name.clone()).await?, "greeted");
    let both = vec![
        ctx.call_activity(Greet, "a".to_owned()).await?,
        ctx.call_activity(Greet, "b".to_owned()).await?,
    ];
    Ok(format!("{} / {}", ctx.call_activity(Greet, name).await?, both.join(" ")))
}

fn main() {}
