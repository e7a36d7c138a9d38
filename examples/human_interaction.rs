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

/// The approval's paths, tested on the test kit: the timeouts are three days each, and each
/// test takes milliseconds.
#[cfg(test)]
mod tests {
    use super::*;
    use duractor::testing::TestRuntime;

    const DAY: Duration = Duration::from_secs(86_400);

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            request: "PO-1001".into(),
            amount: 1200,
            approver: "ana".into(),
            manager: "ben".into(),
            timeout_secs: 3 * DAY.as_secs(),
        }
    }

    #[duractor::test]
    async fn nobody_answers_so_it_escalates_then_rejects(t: TestRuntime) {
        let notify = t.mock_activity(Notify, |(to, _)| Ok(format!("notified {to}")));
        let id = t.start(Approval, request()).await;

        let outcome = t.output(Approval, &id).await;

        assert_eq!(
            outcome,
            ApprovalOutcome {
                approved: false,
                decided_by: "timeout".into(),
                escalated: true,
            }
        );
        let asked: Vec<String> = notify.calls().into_iter().map(|(to, _)| to).collect();
        assert_eq!(asked, ["ana", "ben"]);
        assert_eq!(t.timers(&id).await, [3 * DAY, 6 * DAY]);
        assert_eq!(t.elapsed(), 6 * DAY);
    }

    #[duractor::test]
    async fn the_manager_decides_after_the_escalation(t: TestRuntime) {
        t.mock_activity(Notify, |(to, _)| Ok(format!("notified {to}")));
        let id = t.start(Approval, request()).await;

        t.advance(3 * DAY).await;
        let status = t.status(&id).await;
        assert_eq!(
            status.custom_status::<String>().unwrap().as_deref(),
            Some("escalated to ben")
        );
        t.raise_event(
            &id,
            "approval",
            &Decision {
                approved: true,
                by: "ben".into(),
            },
        )
        .await;

        assert_eq!(
            t.output(Approval, &id).await,
            ApprovalOutcome {
                approved: true,
                decided_by: "ben".into(),
                escalated: true,
            }
        );
        assert_eq!(t.elapsed(), 3 * DAY, "decided the moment the event arrived");
    }

    #[duractor::test]
    async fn the_approver_answers_in_time(t: TestRuntime) {
        // `notify` runs for real here: it prints to stderr.
        let id = t.start(Approval, request()).await;
        t.advance(DAY).await;
        let decision = Decision {
            approved: true,
            by: "ana".into(),
        };
        t.raise_event(&id, "approval", &decision).await;

        let outcome = t.output(Approval, &id).await;

        assert!(outcome.approved && !outcome.escalated, "{outcome:?}");
        t.assert_activities(&id, &["notify"]).await;
    }
}
