//! `select` and `when_any`: the first completion *in history* wins — in a live turn, in the
//! order the messages were applied; on replay, the same one; and among children that were
//! already complete when the combinator was made, the one whose completion came first.

use std::time::Duration;

use super::*;
use crate::activity::ActivityContext;
use crate::error::Error;
use crate::orchestration::{Either, OrchestrationContext};

#[crate::activity]
async fn fetch(_ctx: ActivityContext, source: String) -> Result<String, Error> {
    Ok(source)
}

#[crate::orchestrator]
async fn race(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let answer = ctx.call_activity(Fetch, "server".to_owned());
    let deadline = ctx.sleep(Duration::from_secs(10));
    match ctx.select(answer, deadline).await {
        Either::Left(answer) => answer,
        Either::Right(()) => Ok("timed out".to_owned()),
    }
}

#[crate::orchestrator]
async fn first_of_three(ctx: OrchestrationContext, _: ()) -> Result<(usize, String), Error> {
    let calls = ["a", "b", "c"].map(|source| ctx.call_activity(Fetch, source.to_owned()));
    let (index, result) = ctx.when_any(calls).await;
    Ok((index, result?))
}

#[crate::orchestrator]
async fn late_select(ctx: OrchestrationContext, _: ()) -> Result<String, Error> {
    let b = ctx.call_activity(Fetch, "b".to_owned());
    let c = ctx.call_activity(Fetch, "c".to_owned());
    // Both may complete while the code waits for `a`; the select is made only afterwards.
    ctx.call_activity(Fetch, "a".to_owned()).await?;
    match ctx.select(b, c).await {
        Either::Left(b) => b,
        Either::Right(c) => c,
    }
}

#[test]
fn the_completion_applied_first_wins_a_select() {
    let (mut instance, _) = Instance::start(Race, ());
    let out = instance.turn(11, vec![timer_fired(1, at(10)), task_completed(0, "late")]);
    assert_eq!(completed::<String>(&out), "timed out");

    let (mut instance, _) = Instance::start(Race, ());
    let out = instance.turn(11, vec![task_completed(0, "fast"), timer_fired(1, at(10))]);
    assert_eq!(completed::<String>(&out), "fast");
}

#[test]
fn when_any_reports_the_first_completion_in_history_and_its_index() {
    let (mut instance, first) = Instance::start(FirstOfThree, ());
    assert_eq!(activity_calls(&first).len(), 3);
    let out = instance.turn(
        1,
        vec![
            task_completed(2, "c"),
            task_completed(0, "a"),
            task_completed(1, "b"),
        ],
    );
    assert_eq!(completed::<(usize, String)>(&out), (2, "c".to_owned()));
}

#[test]
fn among_children_already_complete_the_earlier_completion_wins() {
    let (mut instance, _) = Instance::start(LateSelect, ());
    // c completes before b; a completes last, and only then is the select made.
    let out = instance.turn(
        1,
        vec![
            task_completed(1, "c"),
            task_completed(0, "b"),
            task_completed(2, "a"),
        ],
    );
    assert_eq!(completed::<String>(&out), "c");

    let (mut instance, _) = Instance::start(LateSelect, ());
    let out = instance.turn(
        1,
        vec![
            task_completed(0, "b"),
            task_completed(1, "c"),
            task_completed(2, "a"),
        ],
    );
    assert_eq!(completed::<String>(&out), "b");
}

#[test]
fn replay_picks_the_same_winner() {
    let (mut instance, _) = Instance::start(FirstOfThree, ());
    let live = instance.turn(1, vec![task_completed(1, "b")]);
    assert_eq!(completed::<(usize, String)>(&live), (1, "b".to_owned()));
    // Later results for the finished execution change nothing.
    let late = instance.turn(2, vec![task_completed(0, "a"), task_completed(2, "c")]);
    assert!(
        !late
            .new_events
            .iter()
            .any(|event| matches!(event, Event::TaskCompleted { .. }))
    );
    let unfinished = instance.unfinished_history();
    let mut executor = replay(instance.entry, &unfinished).expect("the history replays");
    let again = executor.run_turn(at(3), Vec::new());
    assert_eq!(completed::<(usize, String)>(&again), (1, "b".to_owned()));
}
