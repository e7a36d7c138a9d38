//! Continue-as-new: the execution ends with the new input; events raised meanwhile are
//! dropped or carried over, as asked.

use super::*;
use crate::error::Error;
use crate::orchestration::OrchestrationContext;

#[crate::orchestrator]
async fn counter(ctx: OrchestrationContext, count: u32) -> Result<u32, Error> {
    let step: u32 = ctx.wait_for_event("add").await?;
    if count + step >= 10 {
        return Ok(count + step);
    }
    ctx.continue_as_new(count + step).await
}

#[crate::orchestrator]
async fn keeping_counter(ctx: OrchestrationContext, count: u32) -> Result<u32, Error> {
    let step: u32 = ctx.wait_for_event("add").await?;
    ctx.continue_as_new_preserving_events(count + step).await
}

fn continued(out: &TurnOutput) -> (Payload, Vec<(String, Payload)>) {
    match &out.finished {
        Some(Outcome::ContinuedAsNew { input, carried, .. }) => (input.clone(), carried.clone()),
        other => panic!("expected continue-as-new, got {other:?}"),
    }
}

#[test]
fn the_execution_ends_with_the_new_input_and_drops_unreceived_events() {
    let (mut instance, _) = Instance::start(Counter, 0);
    let out = instance.turn(1, vec![raised("add", 3), raised("add", 4)]);
    let (input, carried) = continued(&out);
    assert_eq!(input, json(3));
    assert!(
        carried.is_empty(),
        "the second `add` is dropped: {carried:?}"
    );
    assert!(
        !out.new_events.iter().any(Event::is_terminal),
        "no terminal event: a new execution replaces this history"
    );
}

#[test]
fn preserving_events_carries_them_to_the_next_execution_in_order() {
    let (mut instance, _) = Instance::start(KeepingCounter, 0);
    let out = instance.turn(
        1,
        vec![raised("add", 3), raised("add", 4), raised("other", "x")],
    );
    let (input, carried) = continued(&out);
    assert_eq!(input, json(3));
    assert_eq!(
        carried,
        [("add".to_owned(), json(4)), ("other".to_owned(), json("x"))]
    );
}

#[test]
fn a_later_execution_ends_normally() {
    let (mut instance, _) = Instance::start(Counter, 8);
    let out = instance.turn(1, vec![raised("add", 5)]);
    assert_eq!(completed::<u32>(&out), 13);
}
