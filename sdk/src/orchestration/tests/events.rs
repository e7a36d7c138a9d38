//! External events: received by name, typed; raised before the code waits they are kept
//! until it does; with a timeout, whichever comes first in history wins.

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::orchestrator]
async fn approval(ctx: OrchestrationContext, _: ()) -> Result<(bool, String), Error> {
    let approved: bool = ctx.wait_for_event("approved").await?;
    let by: String = ctx.wait_for_event("signed").await?;
    Ok((approved, by))
}

#[crate::orchestrator]
async fn approval_with_deadline(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    match ctx
        .wait_for_event_timeout::<String>("approved", Duration::from_secs(60))
        .await?
    {
        Some(by) => Ok(format!("approved by {by}")),
        None => Ok("no answer".to_owned()),
    }
}

#[crate::orchestrator]
async fn two_votes(ctx: OrchestrationContext, _: ()) -> Result<Vec<u32>, Error> {
    let first: u32 = ctx.wait_for_event("vote").await?;
    let second: u32 = ctx.wait_for_event("vote").await?;
    Ok(vec![first, second])
}

#[test]
fn events_are_received_by_name_in_the_order_the_code_waits() {
    let (mut instance, first) = Instance::start(Approval, ());
    assert!(first.actions.is_empty(), "waiting schedules nothing");
    // `signed` arrives first: it is kept until the code waits for it.
    let out = instance.turn(1, vec![raised("signed", "ada")]);
    assert!(out.finished.is_none());
    let out = instance.turn(2, vec![raised("approved", true)]);
    assert_eq!(completed::<(bool, String)>(&out), (true, "ada".to_owned()));
}

#[test]
fn events_of_one_name_are_received_in_arrival_order() {
    let (mut instance, _) = Instance::start(TwoVotes, ());
    let out = instance.turn(1, vec![raised("vote", 7), raised("vote", 3)]);
    assert_eq!(completed::<Vec<u32>>(&out), [7, 3]);
}

#[test]
fn an_event_that_does_not_decode_is_an_error_naming_the_event() {
    let (mut instance, _) = Instance::start(TwoVotes, ());
    let out = instance.turn(1, vec![raised("vote", "seven")]);
    let failure = failed(&out);
    assert!(
        failure.message.contains("vote"),
        "the error names the event: {failure:?}"
    );
}

#[test]
fn an_event_before_the_deadline_wins() {
    let (mut instance, first) = Instance::start(ApprovalWithDeadline, ());
    assert_eq!(timers(&first), [(0, at(60))]);
    let out = instance.turn(10, vec![raised("approved", "ada")]);
    assert_eq!(completed::<String>(&out), "approved by ada");
}

#[test]
fn the_deadline_wins_when_it_fires_first_even_in_the_same_turn() {
    let (mut instance, _) = Instance::start(ApprovalWithDeadline, ());
    let out = instance.turn(61, vec![timer_fired(0, at(60)), raised("approved", "ada")]);
    assert_eq!(completed::<String>(&out), "no answer");
}
