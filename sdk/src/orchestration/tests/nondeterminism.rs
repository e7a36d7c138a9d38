//! Nondeterminism detection: replaying a history with code that makes different durable
//! calls fails, with a message that says where, what history recorded and what the code
//! does now.

use std::time::Duration;

use super::*;
use crate::activity::ActivityContext;
use crate::error::Error;
use crate::orchestration::{OrchestrationContext, check_history};

#[crate::activity]
async fn double(_ctx: ActivityContext, n: i64) -> Result<i64, Error> {
    Ok(n * 2)
}

#[crate::activity]
async fn triple(_ctx: ActivityContext, n: i64) -> Result<i64, Error> {
    Ok(n * 3)
}

#[crate::orchestrator]
async fn one_call(ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    ctx.call_activity(Double, n).await
}

#[crate::orchestrator]
async fn renamed_call(ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    ctx.call_activity(Triple, n).await
}

#[crate::orchestrator]
async fn timer_instead(ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(n)
}

#[crate::orchestrator]
async fn no_call(_ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    Ok(n)
}

#[crate::orchestrator]
async fn waits_instead(ctx: OrchestrationContext, _: i64) -> Result<i64, Error> {
    ctx.wait_for_event("go").await
}

#[crate::orchestrator]
async fn two_calls(ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    let once = ctx.call_activity(Double, n).await?;
    ctx.call_activity(Double, once).await
}

const ADVICE: &str = "The code changed in a way that is not compatible with running instances, \
     or it depends on a nondeterministic value; keep the old code path for old instances \
     (versioning) or restart the instance";

/// The history of `one_call` after its first turn: the call is at position 2.
fn one_call_history() -> Vec<Event> {
    let (instance, _) = Instance::start(OneCall, 4);
    instance.history
}

fn replay_with<O: OrchestratorBody>(_orchestrator: O, history: &[Event]) -> Failure {
    match replay(OrchestratorEntry::of::<O>(), history) {
        Ok(_) => panic!("the replay was expected to fail"),
        Err(failure) => failure,
    }
}

#[test]
fn the_same_code_replays() {
    let history = one_call_history();
    assert!(replay(OrchestratorEntry::of::<OneCall>(), &history).is_ok());
    assert!(check_history(&OrchestratorEntry::of::<OneCall>(), ID, &history).is_ok());
}

#[test]
fn a_call_to_another_activity_is_reported_with_both_names() {
    let failure = replay_with(RenamedCall, &one_call_history());
    assert_eq!(failure.kind, "nondeterminism");
    assert_eq!(
        failure.message,
        format!(
            "nondeterminism in instance `{ID}` at history position 2: history recorded a call to \
             activity `double` (TaskScheduled #0), but the orchestrator code now calls activity \
             `triple` as durable call #0. {ADVICE}"
        )
    );
}

#[test]
fn a_timer_where_history_has_an_activity_is_reported() {
    let failure = replay_with(TimerInstead, &one_call_history());
    assert_eq!(
        failure.message,
        format!(
            "nondeterminism in instance `{ID}` at history position 2: history recorded a call to \
             activity `double` (TaskScheduled #0), but the orchestrator code now creates a durable \
             timer as durable call #0. {ADVICE}"
        )
    );
}

#[test]
fn code_that_returns_or_waits_where_history_has_a_call_is_reported() {
    let failure = replay_with(NoCall, &one_call_history());
    assert!(
        failure.message.contains(
            "history recorded a call to activity `double` (TaskScheduled #0), but the \
             orchestrator code now returned before making it."
        ),
        "{}",
        failure.message
    );
    let failure = replay_with(WaitsInstead, &one_call_history());
    assert!(
        failure.message.contains(
            "history recorded a call to activity `double` (TaskScheduled #0), but the \
             orchestrator code now makes no durable call at this point."
        ),
        "{}",
        failure.message
    );
}

#[test]
fn a_call_history_does_not_have_is_reported_at_the_end_of_history() {
    // `one_call` completed: its history ends after the result (position 5).
    let (mut instance, _) = Instance::start(OneCall, 4);
    instance.turn(1, vec![task_completed(0, 8)]);
    let history = instance.unfinished_history();
    assert_eq!(history.len(), 5);
    let failure = replay_with(TwoCalls, &history);
    assert_eq!(
        failure.message,
        format!(
            "nondeterminism in instance `{ID}` at history position 5: history recorded no further \
             durable call, but the orchestrator code now calls activity `double` as durable call \
             #1. {ADVICE}"
        )
    );
}

#[test]
fn check_history_reports_the_same_failure() {
    let history = one_call_history();
    let failure = check_history(&OrchestratorEntry::of::<RenamedCall>(), ID, &history).unwrap_err();
    assert_eq!(failure.message, replay_with(RenamedCall, &history).message);
}
