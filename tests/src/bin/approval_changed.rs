//! The `human_interaction` example's `approval` orchestrator as a careless next release
//! might write it: it now records an audit entry before asking the approver. Instances
//! started by the old build cannot replay on this one; `approval_changed replay` says so
//! before the deploy does.

use duractor::prelude::*;

/// Records that a request arrived.
#[activity]
async fn audit(_ctx: ActivityContext, request: serde_json::Value) -> Result<(), duractor::Error> {
    eprintln!("audit: {request}");
    Ok(())
}

/// Asks the approver (as before).
#[activity]
async fn notify(
    _ctx: ActivityContext,
    (to, message): (String, String),
) -> Result<String, duractor::Error> {
    eprintln!("to {to}: {message}");
    Ok(format!("notified {to}"))
}

/// The changed orchestrator: an audit call comes first now.
#[orchestrator]
async fn approval(
    ctx: OrchestrationContext,
    request: serde_json::Value,
) -> Result<bool, duractor::Error> {
    ctx.call_activity(Audit, request.clone()).await?;
    let approver = request["approver"].as_str().unwrap_or("nobody").to_owned();
    ctx.call_activity(Notify, (approver, "please approve".to_owned()))
        .await?;
    Ok(ctx.wait_for_event::<serde_json::Value>("approval").await?["approved"] == true)
}

#[duractor::main]
async fn main() {}
