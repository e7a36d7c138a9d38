//! Human interaction: an approval that waits for a person, with a timeout and an escalation.
//! The approver is asked; without an answer in time the manager is asked; without an answer
//! from them either the request is rejected.
//!
//! ```text
//! cargo run --example human_interaction -- serve &
//! cargo run --example human_interaction -- start approval --id po-1001 \
//!     --input '{"request": "PO-1001", "amount": 1200, "approver": "ana", "manager": "ben", "timeout_secs": 300}'
//! cargo run --example human_interaction -- raise po-1001 approval --data '{"approved": true, "by": "ana"}'
//! cargo run --example human_interaction -- status po-1001
//! ```

use std::time::Duration;

use duractor::prelude::*;

/// What needs approving, and who decides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// What is requested, e.g. a purchase order number.
    pub request: String,
    /// The amount.
    pub amount: u64,
    /// Who is asked first.
    pub approver: String,
    /// Who is asked when the approver does not answer in time.
    pub manager: String,
    /// How long each of them has, in seconds (default one day).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    24 * 60 * 60
}

/// A decision, raised as the `approval` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Approved or rejected.
    pub approved: bool,
    /// Who decided.
    pub by: String,
}

/// How the request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    /// Whether it was approved.
    pub approved: bool,
    /// Who decided (`timeout` if nobody did).
    pub decided_by: String,
    /// Whether it went to the manager.
    pub escalated: bool,
}

/// Asks someone to decide (here: prints the message on stderr).
#[activity]
async fn notify(
    _ctx: ActivityContext,
    (to, message): (String, String),
) -> Result<String, duractor::Error> {
    eprintln!("to {to}: {message}");
    Ok(format!("notified {to}"))
}

/// Asks the approver, escalates to the manager after the timeout, rejects after another.
#[orchestrator]
async fn approval(
    ctx: OrchestrationContext,
    request: ApprovalRequest,
) -> Result<ApprovalOutcome, duractor::Error> {
    let timeout = Duration::from_secs(request.timeout_secs.max(1));
    let ask = format!(
        "please approve {} for {} (raise `approval` to instance {})",
        request.request,
        request.amount,
        ctx.instance_id()
    );
    ctx.call_activity(Notify, (request.approver.clone(), ask.clone()))
        .await?;
    ctx.set_custom_status(&format!("waiting for {}", request.approver));
    if let Some(decision) = ctx
        .wait_for_event_timeout::<Decision>("approval", timeout)
        .await?
    {
        return Ok(ApprovalOutcome {
            approved: decision.approved,
            decided_by: decision.by,
            escalated: false,
        });
    }

    let escalation = format!("{} did not answer in time: {ask}", request.approver);
    ctx.call_activity(Notify, (request.manager.clone(), escalation))
        .await?;
    ctx.set_custom_status(&format!("escalated to {}", request.manager));
    match ctx
        .wait_for_event_timeout::<Decision>("approval", timeout)
        .await?
    {
        Some(decision) => Ok(ApprovalOutcome {
            approved: decision.approved,
            decided_by: decision.by,
            escalated: true,
        }),
        None => Ok(ApprovalOutcome {
            approved: false,
            decided_by: "timeout".to_owned(),
            escalated: true,
        }),
    }
}

#[duractor::main]
async fn main() {}
