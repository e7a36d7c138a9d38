//! Sub-orchestrations: scheduled with a deterministic child id (or the one given), their
//! output or failure completes the call.

use super::*;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::orchestrator(version = "3")]
async fn child(_ctx: OrchestrationContext, n: u32) -> Result<u32, Error> {
    Ok(n + 1)
}

#[crate::orchestrator]
async fn parent(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Error> {
    let generated = ctx.call_sub_orchestrator(Child, 1);
    let named = ctx.call_sub_orchestrator_with_id(Child, 2, "child-b".to_owned());
    let (generated, named) = ctx.join(generated, named).await;
    Ok(vec![
        format!("{:?}", generated.map_err(|e| e.to_string())),
        format!("{:?}", named.map_err(|e| e.to_string())),
    ])
}

fn children(out: &TurnOutput) -> Vec<(u64, String, String, String, Payload)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::CallSubOrchestrator {
                seq,
                name,
                version,
                instance_id,
                input,
            } => Some((
                *seq,
                name.clone(),
                version.clone(),
                instance_id.clone(),
                input.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn children_get_deterministic_ids_and_their_current_version() {
    let (_, first) = Instance::start(Parent, ());
    assert_eq!(
        children(&first),
        [
            (
                0,
                "child".to_owned(),
                "3".to_owned(),
                format!("{ID}:0"),
                json(1)
            ),
            (
                1,
                "child".to_owned(),
                "3".to_owned(),
                "child-b".to_owned(),
                json(2)
            ),
        ]
    );
}

#[test]
fn a_child_s_output_and_failure_complete_the_calls() {
    let (mut instance, _) = Instance::start(Parent, ());
    let out = instance.turn(
        1,
        vec![
            Event::SubOrchestrationFailed {
                seq: 1,
                failure: Failure::new("test", "child broke"),
            },
            Event::SubOrchestrationCompleted {
                seq: 0,
                output: json(2),
            },
        ],
    );
    let results: Vec<String> = completed(&out);
    assert_eq!(results[0], "Ok(2)");
    assert!(results[1].starts_with("Err("), "{results:?}");
    assert!(results[1].contains("child broke"), "{results:?}");
}

#[test]
fn a_child_id_that_breaks_the_id_rules_fails_before_anything_is_scheduled() {
    #[crate::orchestrator]
    async fn bad_child_id(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
        match ctx
            .call_sub_orchestrator_with_id(Child, 1, "@bad".to_owned())
            .await
        {
            Ok(_) => Ok("scheduled".to_owned()),
            Err(error) => Ok(error.to_string()),
        }
    }
    let (_, first) = Instance::start(BadChildId, ());
    assert!(children(&first).is_empty());
    let message: String = completed(&first);
    assert!(message.contains("@bad"), "{message}");
}
