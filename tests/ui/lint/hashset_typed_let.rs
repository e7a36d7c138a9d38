//! A `let` typed as `HashSet`, iterated with `.iter()` in a method chain.
use duractor::prelude::*;
use std::collections::HashSet;

#[activity]
async fn notify(_ctx: ActivityContext, _user: String) -> Result<(), duractor::Error> {
    Ok(())
}

#[orchestrator]
async fn announce(ctx: OrchestrationContext, users: Vec<String>) -> Result<(), duractor::Error> {
    let unique: HashSet<String> = users.into_iter().collect();
    let calls: Vec<_> = unique
        .iter()
        .map(|user| ctx.call_activity(Notify, user.clone()))
        .collect();
    for result in ctx.join_all(calls).await {
        result?;
    }
    Ok(())
}

fn main() {}
