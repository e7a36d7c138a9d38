//! Activities: scheduled when called, in code order; results complete them; failures are
//! errors the code can handle; duplicates are skipped; replay reaches the same place.

use super::*;
use crate::activity::ActivityContext;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::activity]
async fn double(_ctx: ActivityContext, n: i64) -> Result<i64, Error> {
    Ok(n * 2)
}

#[crate::orchestrator]
async fn chain(ctx: OrchestrationContext, n: i64) -> Result<i64, Error> {
    let once = ctx.call_activity(Double, n).await?;
    ctx.call_activity(Double, once).await
}

#[crate::orchestrator]
async fn fan_out(ctx: OrchestrationContext, inputs: Vec<i64>) -> Result<i64, Error> {
    let calls = inputs.into_iter().map(|n| ctx.call_activity(Double, n));
    let results = ctx.join_all(calls).await;
    results.into_iter().sum()
}

#[crate::orchestrator]
async fn with_fallback(ctx: OrchestrationContext, n: i64) -> Result<String, Error> {
    match ctx.call_activity(Double, n).await {
        Ok(doubled) => Ok(format!("doubled {doubled}")),
        Err(error) => Ok(format!("fell back: {error}")),
    }
}

/// Turns held for their calls' results share one commit: their outputs appended are what
/// the turns produced one by one, events and calls in order, ending with the last ending.
#[test]
fn appended_turns_carry_every_event_and_call_in_order_and_the_last_ending() {
    let (mut instance, _) = Instance::start(Chain, 5);
    let mut held = instance.turn(1, vec![task_completed(0, 10)]);
    let second = held.clone();
    let third = instance.turn(2, vec![task_completed(1, 20)]);
    held.append(third.clone());
    let events: Vec<Event> = second
        .new_events
        .iter()
        .chain(&third.new_events)
        .cloned()
        .collect();
    assert_eq!(held.new_events, events);
    assert!(matches!(
        &held.new_events[..],
        [
            Event::OrchestratorStarted { .. },
            Event::TaskCompleted { seq: 0, .. },
            Event::TaskScheduled { seq: 1, .. },
            Event::OrchestratorStarted { .. },
            Event::TaskCompleted { seq: 1, .. },
            Event::ExecutionCompleted { .. },
        ]
    ));
    assert_eq!(activity_calls(&held), [(1, "double".to_owned(), json(10))]);
    assert_eq!(completed::<i64>(&held), 20);
}

#[test]
fn a_chain_schedules_one_call_per_turn_and_completes_with_the_last_result() {
    let (mut instance, first) = Instance::start(Chain, 5);
    assert_eq!(activity_calls(&first), [(0, "double".to_owned(), json(5))]);
    assert!(first.finished.is_none());
    assert!(matches!(
        &first.new_events[..],
        [
            Event::OrchestratorStarted { .. },
            Event::ExecutionStarted { .. },
            Event::TaskScheduled { seq: 0, .. }
        ]
    ));

    let second = instance.turn(1, vec![task_completed(0, 10)]);
    assert_eq!(
        activity_calls(&second),
        [(1, "double".to_owned(), json(10))]
    );
    let third = instance.turn(2, vec![task_completed(1, 20)]);
    assert!(activity_calls(&third).is_empty());
    assert_eq!(completed::<i64>(&third), 20);
    assert!(matches!(
        third.new_events.last(),
        Some(Event::ExecutionCompleted { .. })
    ));
}

#[test]
fn calls_made_before_awaiting_are_scheduled_together_in_code_order() {
    let (mut instance, first) = Instance::start(FanOut, vec![1, 2, 3]);
    let calls = activity_calls(&first);
    assert_eq!(
        calls,
        [
            (0, "double".to_owned(), json(1)),
            (1, "double".to_owned(), json(2)),
            (2, "double".to_owned(), json(3)),
        ]
    );
    // Results arrive in any order, over several turns.
    let partial = instance.turn(1, vec![task_completed(2, 6), task_completed(0, 2)]);
    assert!(partial.finished.is_none());
    let done = instance.turn(2, vec![task_completed(1, 4)]);
    assert_eq!(completed::<i64>(&done), 12);
}

#[test]
fn a_failed_activity_is_an_error_the_code_handles() {
    let (mut instance, _) = Instance::start(WithFallback, 1);
    let out = instance.turn(1, vec![task_failed(0, "disk full")]);
    assert_eq!(
        completed::<String>(&out),
        "fell back: activity `double` failed: disk full"
    );
}

#[test]
fn a_failure_the_code_propagates_fails_the_orchestration() {
    let (mut instance, _) = Instance::start(Chain, 1);
    let out = instance.turn(1, vec![task_failed(0, "disk full")]);
    let failure = failed(&out);
    assert!(
        failure.message.contains("disk full"),
        "the failure names its cause: {failure:?}"
    );
    assert!(matches!(
        out.new_events.last(),
        Some(Event::ExecutionFailed { .. })
    ));
}

#[test]
fn a_result_delivered_twice_is_recorded_once() {
    let (mut instance, _) = Instance::start(FanOut, vec![1, 2]);
    let out = instance.turn(1, vec![task_completed(0, 2), task_completed(0, 2)]);
    let results: Vec<&Event> = out
        .new_events
        .iter()
        .filter(|event| matches!(event, Event::TaskCompleted { .. }))
        .collect();
    assert_eq!(results.len(), 1, "{:?}", out.new_events);
    // A result for a call that was never made is skipped too.
    let out = instance.turn(2, vec![task_completed(7, 0), task_completed(1, 4)]);
    assert_eq!(completed::<i64>(&out), 6);
    assert!(
        !out.new_events
            .iter()
            .any(|event| matches!(event, Event::TaskCompleted { seq: 7, .. }))
    );
}

#[test]
fn replaying_the_recorded_history_resumes_where_the_instance_was() {
    let (mut instance, _) = Instance::start(Chain, 5);
    instance.turn(1, vec![task_completed(0, 10)]);
    // A restart: a fresh executor replays the two turns, then takes the next result.
    let mut executor = instance.replayed().expect("the history replays");
    let out = executor.run_turn(at(2), vec![task_completed(1, 20)]);
    assert!(
        activity_calls(&out).is_empty(),
        "replay schedules nothing again"
    );
    assert_eq!(completed::<i64>(&out), 20);
}
