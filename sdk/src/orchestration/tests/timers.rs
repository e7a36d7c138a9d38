//! Durable timers: due at the turn's time plus the duration, completed by their
//! `TimerFired`, and the clock the code reads is the time of the turn it runs in.

use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::orchestrator]
async fn nap(ctx: OrchestrationContext, seconds: u64) -> Result<(String, String), Error> {
    let before = ctx.now().to_rfc3339();
    ctx.sleep(Duration::from_secs(seconds)).await;
    Ok((before, ctx.now().to_rfc3339()))
}

#[crate::orchestrator]
async fn two_naps(ctx: OrchestrationContext, _: ()) -> Result<(), Error> {
    let short = ctx.sleep(Duration::from_secs(5));
    let long = ctx.sleep(Duration::from_secs(50));
    ctx.join(short, long).await;
    Ok(())
}

#[test]
fn a_timer_is_due_after_its_duration_from_the_turn_that_made_it() {
    let (mut instance, first) = Instance::start(Nap, 30);
    assert_eq!(timers(&first), [(0, at(30))]);
    assert!(matches!(
        first.new_events.last(),
        Some(Event::TimerCreated { seq: 0, fire_at }) if *fire_at == at(30)
    ));
    // Nothing but the timer completes it.
    let early = instance.turn(10, vec![raised("unrelated", 1)]);
    assert!(early.finished.is_none());
    let out = instance.turn(31, vec![timer_fired(0, at(30))]);
    let (before, after): (String, String) = completed(&out);
    assert_eq!(before, at(0).to_rfc3339());
    assert_eq!(after, at(31).to_rfc3339(), "ctx.now() is the turn's time");
}

#[test]
fn the_clock_replays_to_the_recorded_times() {
    let (mut instance, _) = Instance::start(Nap, 30);
    let out = instance.turn(31, vec![timer_fired(0, at(30))]);
    let live: (String, String) = completed(&out);
    // The completed history, replayed much later, gives the code the same times.
    let entry = instance.entry;
    let unfinished = instance.unfinished_history();
    let mut executor = replay(entry, &unfinished).expect("the history replays");
    assert!(executor.has_unrecorded_outcome());
    let again = executor.run_turn(at(9_999), Vec::new());
    assert_eq!(completed::<(String, String)>(&again), live);
}

#[test]
fn timers_fire_independently_and_a_second_firing_is_ignored() {
    let (mut instance, first) = Instance::start(TwoNaps, ());
    assert_eq!(timers(&first), [(0, at(5)), (1, at(50))]);
    let out = instance.turn(6, vec![timer_fired(0, at(5)), timer_fired(0, at(5))]);
    assert!(out.finished.is_none());
    let fired = out
        .new_events
        .iter()
        .filter(|event| matches!(event, Event::TimerFired { .. }))
        .count();
    assert_eq!(fired, 1, "the duplicate is not recorded");
    let out = instance.turn(51, vec![timer_fired(1, at(50))]);
    completed::<()>(&out);
}
