//! Cancellation: what a `select` lost, what the code cancels itself and what a scope (a retry
//! loop's future) holds open become `CallCancelled` decisions with the effect each call needs;
//! the completion of a cancelled call is skipped; replays cancel at the same point, and a
//! history recorded before cancellations were recorded still replays.

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::orchestration::actions::CancelTarget;
use crate::orchestration::{Either, OrchestrationContext};
use crate::retry::RetryPolicy;
use crate::timeouts::ActivityOptions;

#[crate::activity]
async fn report(_ctx: crate::ActivityContext, _: ()) -> Result<String, Error> {
    Ok(String::new())
}

#[crate::orchestrator]
async fn child(_ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    Ok(String::new())
}

/// The report, unless a minute passes first.
#[crate::orchestrator]
async fn report_or_timeout(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let report = ctx.call_activity(Report, ());
    match ctx.select(report, ctx.sleep(Duration::from_secs(60))).await {
        Either::Left(report) => report,
        Either::Right(()) => Ok("timed out".to_owned()),
    }
}

/// A retried report (a scope), unless an event comes first.
#[crate::orchestrator]
async fn retried_or_stopped(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let options = ActivityOptions::new().retry(RetryPolicy::new(5, Duration::from_secs(10)));
    let report = ctx.call_activity_with(Report, (), &options);
    match ctx.select(report, ctx.wait_for_event::<()>("stop")).await {
        Either::Left(report) => report,
        Either::Right(_) => Ok("stopped".to_owned()),
    }
}

/// Starts a child and a timer, cancels both at once, then returns.
#[crate::orchestrator]
async fn cancels_its_own(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let child = ctx.call_sub_orchestrator(Child, ());
    let timer = ctx.sleep(Duration::from_secs(60));
    child.cancel();
    timer.cancel();
    ctx.call_activity(Report, ()).await
}

/// A report bounded by a schedule-to-close timeout of 30 s, retried every 10 s.
#[crate::orchestrator]
async fn bounded_report(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let options = ActivityOptions::new()
        .schedule_to_close(Duration::from_secs(30))
        .retry(RetryPolicy::new(5, Duration::from_secs(10)));
    ctx.call_activity_with(Report, (), &options).await
}

/// A report whose activity bounds every call to 30 s.
#[crate::activity(schedule_to_close = "30s")]
async fn bounded_by_default(_ctx: crate::ActivityContext, _: ()) -> Result<String, Error> {
    Ok(String::new())
}

/// A plain call (no options, no retry loop) of an activity with a default schedule-to-close.
#[crate::orchestrator]
async fn plain_bounded(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    ctx.call_activity(BoundedByDefault, ()).await
}

fn cancellations(out: &TurnOutput) -> Vec<(u64, CancelTarget)> {
    out.actions
        .iter()
        .filter_map(|action| match action {
            Action::CancelCall { seq, target, .. } => Some((*seq, target.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_loser_of_a_select_is_cancelled_and_its_late_result_skipped() {
    let (mut instance, first) = Instance::start(ReportOrTimeout, ());
    assert_eq!(activity_calls(&first).len(), 1);
    let out = instance.turn(61, vec![timer_fired(1, at(60))]);
    assert_eq!(completed::<String>(&out), "timed out");
    assert_eq!(cancellations(&out), [(0, CancelTarget::Activity)]);
    assert!(out.new_events.iter().any(|e| matches!(
        e,
        Event::CallCancelled { seq: 0, reason } if reason == "lost a select"
    )));
    // The history replays, cancellation included.
    instance.replayed().expect("the history replays");
}

#[test]
fn a_late_result_of_a_cancelled_call_is_not_recorded() {
    let (mut instance, _) = Instance::start(RetriedOrStopped, ());
    let out = instance.turn(1, vec![raised("stop", ())]);
    assert_eq!(completed::<String>(&out), "stopped");
    // The attempt in flight inside the retry loop (a scope) was cancelled.
    assert_eq!(cancellations(&out), [(0, CancelTarget::Activity)]);
    let mut executor = replay(instance.entry, &instance.unfinished_history()).unwrap();
    let late = executor.run_turn(at(2), vec![task_completed(0, "late")]);
    assert!(
        !late
            .new_events
            .iter()
            .any(|e| matches!(e, Event::TaskCompleted { .. })),
        "{:?}",
        late.new_events
    );
    assert!(executor.is_cancelled(0));
}

#[test]
fn cancelling_a_child_terminates_it_and_a_timer_is_dropped() {
    let (_, first) = Instance::start(CancelsItsOwn, ());
    assert_eq!(
        cancellations(&first),
        [
            (0, CancelTarget::SubOrchestration(format!("{ID}:0"))),
            (1, CancelTarget::Timer)
        ]
    );
    // The activity after them is still made.
    assert_eq!(activity_calls(&first).len(), 1);
}

#[test]
fn a_history_without_the_cancellation_replays_as_it_ran() {
    let (mut instance, _) = Instance::start(ReportOrTimeout, ());
    instance.turn(61, vec![timer_fired(1, at(60))]);
    let older: Vec<Event> = instance
        .history
        .iter()
        .filter(|e| !matches!(e, Event::CallCancelled { .. }))
        .cloned()
        .collect();
    assert_eq!(older.len() + 1, instance.history.len());
    let executor = replay(instance.entry, &older).expect("an older history replays");
    // Without the recorded cancellation, the call stays open, as it was then.
    assert!(!executor.is_cancelled(0));
}

#[test]
fn a_cancellation_the_code_no_longer_makes_is_nondeterminism() {
    let (mut instance, _) = Instance::start(ReportOrTimeout, ());
    instance.turn(61, vec![timer_fired(1, at(60))]);
    // Recorded by code that cancelled call 0; the code now cancels nothing there.
    let mut history = instance.history.clone();
    for event in &mut history {
        if let Event::CallCancelled { seq, .. } = event {
            *seq = 1;
        }
    }
    let failure = replay(instance.entry, &history).err().expect("a mismatch");
    assert_eq!(failure.kind, "nondeterminism");
    assert!(
        failure
            .message
            .contains("the cancellation of durable call #1"),
        "{}",
        failure.message
    );
}

#[test]
fn a_schedule_to_close_deadline_is_a_timer_that_cancels_the_attempt_in_flight() {
    let (mut instance, first) = Instance::start(BoundedReport, ());
    // The first attempt, then the deadline as a durable timer: it fires even if no worker
    // ever starts the attempt.
    assert_eq!(activity_calls(&first).len(), 1);
    assert_eq!(timers(&first), [(1, at(30))]);
    let out = instance.turn(30, vec![timer_fired(1, at(30))]);
    let failure = failed(&out);
    let cause = failure.cause.as_deref().expect("the activity's failure");
    assert_eq!(cause.kind, "schedule_to_close_timeout");
    assert!(cause.non_retriable);
    assert!(
        cause
            .message
            .contains("attempt 1 was still waiting for a worker or running"),
        "{}",
        cause.message
    );
    assert_eq!(cancellations(&out), [(0, CancelTarget::Activity)]);
    instance.replayed().expect("the history replays");
}

#[test]
fn a_call_that_ends_before_its_deadline_cancels_the_deadline_timer() {
    let (mut instance, _) = Instance::start(BoundedReport, ());
    // A failed attempt, a retry 10 s later: the same timer still bounds it.
    let out = instance.turn(1, vec![task_failed(0, "flaky")]);
    assert_eq!(timers(&out), [(2, at(11))]);
    let out = instance.turn(11, vec![timer_fired(2, at(11))]);
    assert_eq!(activity_calls(&out).len(), 1);
    assert!(timers(&out).is_empty(), "one deadline timer per call");
    let out = instance.turn(12, vec![task_completed(3, "done")]);
    assert_eq!(completed::<String>(&out), "done");
    assert_eq!(cancellations(&out), [(1, CancelTarget::Timer)]);
    instance.replayed().expect("the history replays");
}

#[test]
fn a_result_and_the_deadline_in_one_turn_are_decided_by_their_order_in_history() {
    let (mut late, _) = Instance::start(BoundedReport, ());
    let out = late.turn(30, vec![timer_fired(1, at(30)), task_completed(0, "late")]);
    assert_eq!(
        failed(&out).cause.as_deref().unwrap().kind,
        "schedule_to_close_timeout"
    );
    late.replayed().expect("the history replays");
    let (mut in_time, _) = Instance::start(BoundedReport, ());
    let out = in_time.turn(
        30,
        vec![task_completed(0, "in time"), timer_fired(1, at(30))],
    );
    assert_eq!(completed::<String>(&out), "in time");
    in_time.replayed().expect("the history replays");
}

#[test]
fn a_plain_call_is_bounded_by_its_activitys_default_deadline_too() {
    let (mut late, first) = Instance::start(PlainBounded, ());
    assert_eq!(activity_calls(&first).len(), 1);
    assert_eq!(timers(&first), [(1, at(30))]);
    let out = late.turn(30, vec![timer_fired(1, at(30))]);
    let failure = failed(&out);
    let cause = failure.cause.as_deref().expect("the activity's failure");
    assert_eq!(cause.kind, "schedule_to_close_timeout");
    assert_eq!(cancellations(&out), [(0, CancelTarget::Activity)]);
    late.replayed().expect("the history replays");

    let (mut in_time, _) = Instance::start(PlainBounded, ());
    let out = in_time.turn(1, vec![task_completed(0, "done")]);
    assert_eq!(completed::<String>(&out), "done");
    assert_eq!(cancellations(&out), [(1, CancelTarget::Timer)]);
    in_time.replayed().expect("the history replays");
}

/// A history recorded by a build before calls armed their deadline timer: the same run
/// without the `TimerCreated` and its `CallCancelled`.
fn without_deadline_timer(history: &[Event]) -> Vec<Event> {
    history
        .iter()
        .filter(|e| !matches!(e, Event::TimerCreated { .. } | Event::CallCancelled { .. }))
        .cloned()
        .collect()
}

#[test]
fn histories_from_before_deadline_timers_replay_as_they_ran() {
    // The retry loop's call and a plain call of an activity with a default.
    let (mut retried, _) = Instance::start(BoundedReport, ());
    retried.turn(1, vec![task_completed(0, "done")]);
    let (mut plain, _) = Instance::start(PlainBounded, ());
    plain.turn(1, vec![task_completed(0, "done")]);
    for instance in [retried, plain] {
        let older = without_deadline_timer(&instance.history);
        assert_eq!(older.len() + 2, instance.history.len());
        replay(instance.entry, &older).expect("a finished older history replays");
        // Still running at the call: replays without a timer, and makes none later.
        let scheduled = older
            .iter()
            .position(|e| matches!(e, Event::TaskScheduled { .. }))
            .unwrap();
        let mut executor = replay(instance.entry, &older[..=scheduled]).expect("it replays");
        let out = executor.run_turn(at(1), vec![task_completed(0, "done")]);
        assert_eq!(completed::<String>(&out), "done");
        assert!(out.actions.is_empty(), "{:?}", out.actions);
    }
}
