//! End-to-end orchestration patterns through the client, on real SQLite files.

use std::time::{Duration, Instant};

use duractor::prelude::*;
use duractor::{Event, Store, client::ListQuery};
use duractor_tests::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(30);

#[activity]
async fn add_one(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x + 1)
}

#[orchestrator]
async fn chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, duractor::Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(AddOne, value).await?;
    }
    Ok(value)
}

#[tokio::test]
async fn chaining_runs_activities_in_sequence() {
    let app = TestApp::start("chaining").await;
    let id = app.client.start(Chain, 10).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output::<u64>().unwrap(), 10);

    let history = app.client.history(&id).await.unwrap();
    let scheduled: Vec<u64> = history
        .iter()
        .filter_map(|e| match e {
            Event::TaskScheduled { seq, name, .. } if name == "add_one" => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(scheduled, (0..10).collect::<Vec<_>>());
    assert!(matches!(
        history.last(),
        Some(Event::ExecutionCompleted { .. })
    ));
    app.stop().await;
}

#[activity]
async fn slow_add_one(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    tokio::time::sleep(Duration::from_millis(40)).await;
    Ok(x + 1)
}

#[orchestrator]
async fn slow_chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, duractor::Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(SlowAddOne, value).await?;
    }
    Ok(value)
}

/// Asserts that `history` is that of a chain of `steps` calls of `name`, as recorded step by
/// step.
fn assert_chain_history(history: &[Event], name: &str, steps: u64) {
    let kinds: Vec<String> = history
        .iter()
        .filter(|e| !matches!(e, Event::OrchestratorStarted { .. }))
        .map(|e| match e {
            Event::ExecutionStarted { .. } => "started".to_owned(),
            Event::TaskScheduled { seq, name: of, .. } if of == name => format!("scheduled {seq}"),
            Event::TaskCompleted { seq, .. } => format!("completed {seq}"),
            Event::ExecutionCompleted { .. } => "completed".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    let mut expected = vec!["started".to_owned()];
    for seq in 0..steps {
        expected.push(format!("scheduled {seq}"));
        expected.push(format!("completed {seq}"));
    }
    expected.push("completed".to_owned());
    assert_eq!(kinds, expected);
}

/// One step at a time, a turn whose call runs in memory holds its commit for the result: a
/// call that answers at once joins the next turn's commit, so steps share commits (at most
/// four turns each), and the history records every step as committing them one by one
/// would. A call slower than the hold (about a millisecond) lets its turn commit alone.
#[tokio::test]
async fn fast_calls_share_commits_and_slow_ones_do_not() {
    let app = TestApp::start("held-turns").await;
    let id = app.client.start(Chain, 12).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 12);
    assert_chain_history(&app.client.history(&id).await.unwrap(), "add_one", 12);
    // The waiter hears of the completion from the store, the metrics when the commit's
    // answer is back in the instance's actor.
    let counted = |instances: u64| {
        let runtime = &app.runtime;
        eventually(
            "the metrics of the finished instance",
            WAIT,
            move || async move {
                let metrics = runtime.metrics();
                (metrics.instances_completed == instances).then_some(metrics)
            },
        )
    };
    let fast = counted(1).await;
    // The start's turn, one turn per result (the last one completes).
    assert_eq!(fast.turns, 13, "{fast:?}");
    assert!(
        fast.turn_commits < fast.turns && fast.turn_commits >= fast.turns.div_ceil(4),
        "{} commits for {} turns",
        fast.turn_commits,
        fast.turns
    );
    assert_eq!(app.store.stats().await.unwrap().unwrap().activity_items, 0);

    let id = app.client.start(SlowChain, 3).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 3);
    assert_chain_history(&app.client.history(&id).await.unwrap(), "slow_add_one", 3);
    let slow = counted(2).await;
    assert_eq!(slow.turns - fast.turns, 4, "{slow:?}");
    assert_eq!(
        slow.turn_commits - fast.turn_commits,
        4,
        "a turn waited for a call slower than the hold"
    );
    app.stop().await;
}

/// A SQLite file, and the store in front of it whose turn commits a test makes fail.
async fn failing_commits(
    name: &str,
) -> (
    duractor_tests::TempDir,
    duractor_sqlx::SqliteStore,
    duractor_tests::slow_starts::SlowStarts,
) {
    let dir = duractor_tests::TempDir::new(name);
    let sqlite = duractor_sqlx::SqliteStore::open(dir.file("app.db"))
        .await
        .unwrap();
    let store = duractor_tests::slow_starts::SlowStarts::new(sqlite.clone(), Duration::ZERO);
    (dir, sqlite, store)
}

/// One step at a time, a turn's calls kept in memory start before its commit; a commit that
/// fails (the database went away for a moment) runs the turn again with the results that
/// came meanwhile. Every second commit fails here: the history still records each step once,
/// and nothing of the calls stays behind.
#[tokio::test]
async fn steps_survive_failed_commits_of_the_turns_that_started_them() {
    let (_dir, sqlite, store) = failing_commits("failing-turns").await;
    let store = store.failing_turns(2);
    let runtime = Runtime::builder(store).start().await.unwrap();
    let client = runtime.client();
    // Enough steps for several failed commits though fast steps share commits (up to four
    // turns each): a failed commit of held turns runs all of them again.
    let id = client.start(Chain, 40).await.unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 40);
    let history = client.history(&id).await.unwrap();
    let seqs = |completed: bool| -> Vec<u64> {
        history
            .iter()
            .filter_map(|e| match e {
                Event::TaskScheduled { seq, .. } if !completed => Some(*seq),
                Event::TaskCompleted { seq, .. } if completed => Some(*seq),
                _ => None,
            })
            .collect()
    };
    assert_eq!(seqs(false), (0..40).collect::<Vec<_>>(), "{history:?}");
    assert_eq!(seqs(true), (0..40).collect::<Vec<_>>(), "{history:?}");
    let failures = runtime.metrics().turn_commit_failures;
    assert!(failures >= 4, "{failures} failed commits");
    let stats = sqlite.stats().await.unwrap().unwrap();
    assert_eq!(
        stats.activity_items,
        0,
        "{stats:?} {:?}",
        sqlite.list_activities(&id).await
    );
    runtime.shutdown().await.unwrap();
}

/// The first turn of an instance started by a client of the store (its start queued, not
/// handed over in memory) starts its first call before its commit like any other turn once
/// it has a history; a first turn that fails to commit must not have started it: the turn
/// runs again without an executor's history, where a result that came meanwhile is stale,
/// and the call would be recorded as scheduled but kept nowhere (found by review: an
/// instance stuck after its first `TaskScheduled` in the PostgreSQL outage test).
#[tokio::test]
async fn a_first_turn_whose_commit_fails_still_runs_its_first_call() {
    let (_dir, sqlite, store) = failing_commits("failing-first-turns").await;
    let store = store.failing_first_turns();
    let runtime = Runtime::builder(store).start().await.unwrap();
    let client = duractor::Client::new(sqlite.clone());
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .start(Chain, 3)
                .instance_id(format!("first-{i}"))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let status = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 3, "{id}");
        let history = client.history(id).await.unwrap();
        let scheduled = history
            .iter()
            .filter(|e| matches!(e, Event::TaskScheduled { .. }))
            .count();
        assert_eq!(scheduled, 3, "{history:?}");
    }
    assert!(runtime.metrics().turn_commit_failures >= 20);
    let stats = sqlite.stats().await.unwrap().unwrap();
    assert_eq!(stats.activity_items, 0, "{stats:?}");
    runtime.shutdown().await.unwrap();
}

/// One at a time, the first turn of an instance a client created in the store starts its
/// first call before its commit, and holds the commit for the result (the instance exists:
/// its start was queued). When that commit fails, the turn runs again without the result
/// (stale to a new executor) and the call runs again: every instance still completes with
/// each call recorded once and nothing left behind.
#[tokio::test]
async fn a_held_first_turn_whose_commit_fails_runs_its_calls_again() {
    duractor_tests::init_tracing();
    let (_dir, sqlite, store) = failing_commits("failing-held-first-turns").await;
    let store = store.failing_first_turns();
    let runtime = Runtime::builder(store).start().await.unwrap();
    let client = duractor::Client::new(sqlite.clone());
    for i in 0..10 {
        let id = client
            .start(Chain, 3)
            .instance_id(format!("held-first-{i}"))
            .await
            .unwrap();
        let status = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 3, "{id}");
        assert_chain_history(&client.history(&id).await.unwrap(), "add_one", 3);
    }
    let metrics = runtime.metrics();
    assert!(metrics.turn_commit_failures >= 10, "{metrics:?}");
    assert_eq!(sqlite.stats().await.unwrap().unwrap().activity_items, 0);
    runtime.shutdown().await.unwrap();
}

/// A runtime's client watches the finish of every instance it starts from before the
/// instance exists, so its first wait for one takes the row the finishing commit handed
/// over and reads nothing (the read cost a one-at-a-time start-to-finish a quarter of its
/// time), and a run of the same id started again is waited for as that run. Both ways a
/// worker's own start goes: created with its first turn, or created first and then run.
/// A row of more than 8 KiB of payloads is not kept for the wait, which reads it. (The
/// waits here begin after the finish, which makes "no read" certain; a wait that begins
/// earlier reads nothing either when the finish comes within 5 ms.)
#[tokio::test]
async fn a_wait_for_a_run_this_client_started_needs_no_status_read() {
    for with_turns in [true, false] {
        let (_dir, sqlite, store) = failing_commits(&format!("started-{with_turns}")).await;
        let store = if with_turns {
            store.creating_with_turns()
        } else {
            store
        };
        let runtime = Runtime::builder(store.clone()).start().await.unwrap();
        let client = runtime.client();
        let finished = |id: &'static str, output: u64| {
            let sqlite = sqlite.clone();
            async move {
                eventually("the run to finish", WAIT, || async {
                    let status = sqlite.get_instance(id).await.unwrap()?;
                    (status.output.as_ref()?.decode::<u64>().ok()? == output).then_some(())
                })
                .await;
            }
        };

        client.start(Chain, 2).instance_id("again").await.unwrap();
        finished("again", 2).await;
        let reads = store.status_reads();
        let status = client.wait_for_completion("again", WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 2);
        assert_eq!(store.status_reads(), reads, "the first wait reads nothing");
        // The watch served one wait; the next one reads, and finds the same run.
        let status = client.wait_for_completion("again", WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 2);
        assert!(store.status_reads() > reads, "a second wait reads");

        // The finished instance replaced by a new run under the same id.
        client.start(Chain, 5).instance_id("again").await.unwrap();
        finished("again", 5).await;
        let reads = store.status_reads();
        let status = client.wait_for_completion("again", WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 5, "the new run's output");
        assert_eq!(store.status_reads(), reads, "a wait for the new run");

        // A watch keeps no large row (8 KiB of payloads at most): that wait reads.
        client
            .start(duractor_tests::scale::SizedOutput, 9_000)
            .instance_id("large")
            .await
            .unwrap();
        eventually("the large run to finish", WAIT, || async {
            let status = sqlite.get_instance("large").await.unwrap()?;
            status.is_finished().then_some(())
        })
        .await;
        let reads = store.status_reads();
        let status = client.wait_for_completion("large", WAIT).await.unwrap();
        assert_eq!(status.output::<String>().unwrap().len(), 9_000);
        assert!(store.status_reads() > reads, "the wait read the large row");

        // A wait that begins at once finds the run whenever it finishes.
        let id = client.start(Chain, 3).await.unwrap();
        let status = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), 3);
        runtime.shutdown().await.unwrap();
    }
}

/// A start this client makes under an id it started before replaces what it watched: a
/// wait then answers for the new run, also when the new start is one the client does not
/// watch (held by flow control, here) and the earlier run finished long ago.
#[tokio::test]
async fn a_wait_answers_for_the_run_this_client_started_last() {
    let app = TestApp::start_with("started-last", |builder| {
        builder.orchestrator_flow_control(Nap, duractor::flow::FlowControl::new().concurrency(4))
    })
    .await;
    let client = &app.client;
    client.start(Chain, 2).instance_id("twice").await.unwrap();
    eventually("the first run to finish", WAIT, || async {
        let status = app.store.get_instance("twice").await.unwrap()?;
        status.is_finished().then_some(())
    })
    .await;
    client.start(Nap, 5).instance_id("twice").await.unwrap();
    let status = client.wait_for_completion("twice", WAIT).await.unwrap();
    assert_eq!(status.name, "nap", "the second run: {status:?}");
    assert!(status.output::<i64>().unwrap() >= 5, "{status:?}");
    app.stop().await;
}

/// A client's watches of its starts go with its last clone: the store is left watching
/// nothing for it.
#[tokio::test]
async fn a_clients_start_watches_go_with_its_last_clone() {
    let store = std::sync::Arc::new(duractor::testing::MemoryStore::new());
    let client = duractor::Client::new_dyn(store.clone());
    let id = client.start(Chain, 1).await.unwrap();
    assert!(store.events().is_watched(&id), "a start is watched");
    let clone = client.clone();
    drop(client);
    assert!(store.events().is_watched(&id), "a clone keeps the watch");
    drop(clone);
    assert!(
        !store.events().is_watched(&id),
        "the last clone takes it along"
    );
}

/// The watches a client keeps for its starts do not get in the way of what waits rely on:
/// a start refused (its id is running) leaves the running instance waited for as before; a
/// start that terminates the running one waits for that end and then for its own run; and
/// past the thousand watches a client keeps, the oldest starts' runs (their watches
/// dropped) are still found.
#[tokio::test]
async fn waits_find_their_runs_past_refused_starts_replaced_runs_and_many_starts() {
    let app = TestApp::start("started-watches").await;
    let client = &app.client;
    let id = client
        .start(Approval, ())
        .instance_id("asked")
        .await
        .unwrap();
    let refused = client.start(Chain, 1).instance_id("asked").await;
    assert!(
        matches!(refused, Err(duractor::Error::InstanceExists { .. })),
        "{refused:?}"
    );
    wait_for_custom_status(client, &id, "waiting for approval").await;
    let decision = Decision {
        by: "ada".into(),
        approved: true,
    };
    client
        .raise_event(&id, "approval", &decision)
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<Decision>().unwrap(), decision);

    let id = client
        .start(Approval, ())
        .instance_id("replaced")
        .await
        .unwrap();
    wait_for_custom_status(client, &id, "waiting for approval").await;
    client
        .start(Chain, 4)
        .instance_id("replaced")
        .if_exists(duractor::client::IfExists::TerminateRunning)
        .await
        .unwrap();
    let status = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output::<u64>().unwrap(), 4);

    let mut ids = Vec::new();
    for steps in 0..1100u64 {
        ids.push(client.start(Chain, steps % 3).await.unwrap());
    }
    for (steps, id) in ids.iter().enumerate().step_by(97) {
        let status = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(status.output::<u64>().unwrap(), steps as u64 % 3, "{id}");
    }
    app.stop().await;
}

#[orchestrator]
async fn fan_out(ctx: OrchestrationContext, count: u64) -> Result<u64, duractor::Error> {
    let results = ctx
        .join_all((0..count).map(|i| ctx.call_activity(AddOne, i)))
        .await;
    let mut sum = 0;
    for result in results {
        sum += result?;
    }
    Ok(sum)
}

#[tokio::test]
async fn fan_out_fan_in_of_a_thousand_activities() {
    let app = TestApp::start("fan-out").await;
    let id = app.client.start(FanOut, 1000).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    // sum of (i + 1) for i in 0..1000
    assert_eq!(status.output::<u64>().unwrap(), 500_500);
    let history = app.client.history(&id).await.unwrap();
    let completed = history
        .iter()
        .filter(|e| matches!(e, Event::TaskCompleted { .. }))
        .count();
    assert_eq!(completed, 1000);
    app.stop().await;
}

#[orchestrator]
async fn nap(ctx: OrchestrationContext, millis: u64) -> Result<i64, duractor::Error> {
    let before = ctx.now();
    ctx.sleep(Duration::from_millis(millis)).await;
    Ok((ctx.now() - before).num_milliseconds())
}

#[tokio::test]
async fn a_durable_timer_fires_after_its_delay() {
    let app = TestApp::start("timer").await;
    let started = Instant::now();
    let id = app.client.start(Nap, 700).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
    let slept = status.output::<i64>().unwrap();
    assert!(slept >= 700, "orchestration time advanced {slept} ms");
    let history = app.client.history(&id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e, Event::TimerCreated { seq: 0, .. }))
    );
    assert!(
        history
            .iter()
            .any(|e| matches!(e, Event::TimerFired { seq: 0, .. }))
    );
    app.stop().await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Decision {
    by: String,
    approved: bool,
}

#[orchestrator]
async fn approval(ctx: OrchestrationContext, _: ()) -> Result<Decision, duractor::Error> {
    ctx.set_custom_status("waiting for approval");
    let decision: Decision = ctx.wait_for_event("approval").await?;
    ctx.set_custom_status("approved");
    Ok(decision)
}

async fn wait_for_custom_status(client: &Client, id: &str, expected: &str) {
    eventually("the custom status", WAIT, || async {
        let status = client.status(id).await.ok()?;
        (status.custom_status::<String>().ok()?? == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn external_event_is_delivered_to_the_waiting_orchestrator() {
    let app = TestApp::start("event").await;
    let id = app.client.start(Approval, ()).await.unwrap();
    wait_for_custom_status(&app.client, &id, "waiting for approval").await;
    assert_eq!(
        app.client.status(&id).await.unwrap().status,
        RuntimeStatus::Running
    );

    let decision = Decision {
        by: "ada".into(),
        approved: true,
    };
    app.client
        .raise_event(&id, "approval", &decision)
        .await
        .unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<Decision>().unwrap(), decision);
    assert_eq!(
        status.custom_status::<String>().unwrap().as_deref(),
        Some("approved")
    );
    app.stop().await;
}

#[orchestrator]
async fn approval_with_deadline(
    ctx: OrchestrationContext,
    deadline_ms: u64,
) -> Result<String, duractor::Error> {
    ctx.set_custom_status("waiting");
    let decision = ctx
        .wait_for_event_timeout::<Decision>("approval", Duration::from_millis(deadline_ms))
        .await?;
    Ok(match decision {
        Some(decision) => format!("decided by {}", decision.by),
        None => "escalated".to_owned(),
    })
}

/// A timer of a loaded instance is held for its worker, which delivers it from memory; an
/// instance unloaded before its timer is due hands the timer back to the queue, and it still
/// fires on time (not when the worker's lease on it would have lapsed, 30 s by default).
#[tokio::test]
async fn a_durable_timer_fires_on_time_after_its_instance_is_unloaded() {
    let app = TestApp::start_with("timer-unloaded", |b| {
        b.idle_unload_after(Duration::from_millis(20))
    })
    .await;
    let started = Instant::now();
    let id = app.client.start(Nap, 800).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the timer fired late: {took:?}"
    );
    assert!(status.output::<i64>().unwrap() >= 800);
    app.stop().await;
}

#[orchestrator]
async fn race_then_wait(
    ctx: OrchestrationContext,
    timeout_ms: u64,
) -> Result<String, duractor::Error> {
    let timer = ctx.sleep(Duration::from_millis(timeout_ms));
    let go = ctx.wait_for_event::<String>("go");
    let first = match ctx.select(timer, go).await {
        Either::Left(()) => "timer".to_owned(),
        Either::Right(data) => data?,
    };
    ctx.set_custom_status(&first);
    let done: String = ctx.wait_for_event("done").await?;
    Ok(format!("{first} {done}"))
}

/// A timer that lost its race is dropped with the turn that cancels it: nothing stays queued
/// to wake the instance later (held for the worker or not).
#[tokio::test]
async fn a_cancelled_timer_leaves_nothing_queued() {
    let app = TestApp::start("timer-cancelled").await;
    let id = app.client.start(RaceThenWait, 60_000).await.unwrap();
    eventually("the timer to be queued", WAIT, || async {
        let stats = app.store.stats().await.ok()??;
        (stats.messages_delayed == 1).then_some(())
    })
    .await;
    app.client.raise_event(&id, "go", "go").await.unwrap();
    eventually("the event to win", WAIT, || async {
        let status = app.client.status(&id).await.ok()?;
        (status.custom_status::<String>().ok()?.as_deref() == Some("go")).then_some(())
    })
    .await;
    let stats = app.store.stats().await.unwrap().unwrap();
    assert_eq!(stats.messages_delayed, 0, "{stats:?}");
    app.client.raise_event(&id, "done", "done").await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "go done");
    app.stop().await;
}

#[tokio::test]
async fn event_with_timeout_arrives_in_time() {
    let app = TestApp::start("event-in-time").await;
    let id = app
        .client
        .start(ApprovalWithDeadline, 60_000)
        .await
        .unwrap();
    wait_for_custom_status(&app.client, &id, "waiting").await;
    let decision = Decision {
        by: "grace".into(),
        approved: false,
    };
    app.client
        .raise_event(&id, "approval", &decision)
        .await
        .unwrap();
    let started = Instant::now();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "decided by grace");
    // The losing 60 s timer did not keep the instance from completing.
    assert!(started.elapsed() < Duration::from_secs(10));
    app.stop().await;
}

#[tokio::test]
async fn event_with_timeout_times_out() {
    let app = TestApp::start("event-timeout").await;
    let started = Instant::now();
    let id = app.client.start(ApprovalWithDeadline, 300).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "escalated");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // An event raised after the timeout finds the instance finished: refused, not stored.
    let err = app
        .client
        .raise_event(
            &id,
            "approval",
            &Decision {
                by: "late".into(),
                approved: true,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, duractor::Error::InstanceFinished { .. }),
        "{err:?}"
    );
    let status = app.client.status(&id).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "escalated");
    app.stop().await;
}

#[orchestrator]
async fn race(ctx: OrchestrationContext, timeout_ms: u64) -> Result<String, duractor::Error> {
    let timer = ctx.sleep(Duration::from_millis(timeout_ms));
    let event = ctx.wait_for_event::<String>("go");
    Ok(match ctx.select(timer, event).await {
        Either::Left(()) => "timer".to_owned(),
        Either::Right(data) => format!("event {}", data?),
    })
}

#[tokio::test]
async fn timer_versus_event_race_won_by_the_event() {
    let app = TestApp::start("race-event").await;
    let id = app.client.start(Race, 60_000).await.unwrap();
    eventually("the instance to run", WAIT, || async {
        let status = app.client.status(&id).await.ok()?;
        (status.status == RuntimeStatus::Running).then_some(())
    })
    .await;
    app.client.raise_event(&id, "go", "now").await.unwrap();
    let status = app
        .client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.output::<String>().unwrap(), "event now");
    app.stop().await;
}

#[tokio::test]
async fn timer_versus_event_race_won_by_the_timer() {
    let app = TestApp::start("race-timer").await;
    let id = app.client.start(Race, 200).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<String>().unwrap(), "timer");
    app.stop().await;
}

#[orchestrator]
async fn first_in_history(ctx: OrchestrationContext, _: ()) -> Result<String, duractor::Error> {
    // Both events are raised before the orchestrator looks: the one history recorded first
    // must win, whatever the argument order.
    ctx.wait_for_event::<()>("ready").await?;
    let a = ctx.wait_for_event::<String>("a");
    let b = ctx.wait_for_event::<String>("b");
    Ok(match ctx.select(a, b).await {
        Either::Left(a) => format!("a:{}", a?),
        Either::Right(b) => format!("b:{}", b?),
    })
}

#[tokio::test]
async fn select_is_won_by_the_completion_history_recorded_first() {
    let app = TestApp::start("select-order").await;
    let id = app.client.start(FirstInHistory, ()).await.unwrap();
    app.client
        .raise_event(&id, "b", "second arg, raised first")
        .await
        .unwrap();
    app.client
        .raise_event(&id, "a", "first arg, raised second")
        .await
        .unwrap();
    app.client.raise_event(&id, "ready", &()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        status.output::<String>().unwrap(),
        "b:second arg, raised first"
    );
    app.stop().await;
}

#[orchestrator]
async fn progress(ctx: OrchestrationContext, steps: u64) -> Result<u64, duractor::Error> {
    let mut done = 0;
    for step in 0..steps {
        ctx.set_custom_status(&serde_json::json!({ "step": step, "of": steps }));
        done = ctx.call_activity(AddOne, done).await?;
    }
    ctx.wait_for_event::<()>("finish").await?;
    Ok(done)
}

#[tokio::test]
async fn custom_status_is_visible_while_running_and_after() {
    let app = TestApp::start("custom-status").await;
    let id = app.client.start(Progress, 3).await.unwrap();
    let status = eventually("the last custom status", WAIT, || async {
        let status = app.client.status(&id).await.ok()?;
        let custom = status.custom_status::<serde_json::Value>().ok()??;
        (custom["step"] == 2).then_some(status)
    })
    .await;
    assert_eq!(status.status, RuntimeStatus::Running);
    app.client.raise_event(&id, "finish", &()).await.unwrap();
    let status = app.client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(status.output::<u64>().unwrap(), 3);
    assert_eq!(
        status.custom_status::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({ "step": 2, "of": 3 }))
    );
    app.stop().await;
}

#[tokio::test]
async fn list_filters_by_status() {
    let app = TestApp::start("list").await;
    let done = app
        .client
        .start(Chain, 1)
        .instance_id("list-done")
        .await
        .unwrap();
    app.client.wait_for_completion(&done, WAIT).await.unwrap();
    let waiting = app
        .client
        .start(Approval, ())
        .instance_id("list-waiting")
        .await
        .unwrap();
    wait_for_custom_status(&app.client, &waiting, "waiting for approval").await;

    let completed = app
        .client
        .list(ListQuery {
            statuses: vec![RuntimeStatus::Completed],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        completed
            .iter()
            .map(|s| s.instance_id.as_str())
            .collect::<Vec<_>>(),
        ["list-done"]
    );
    let all = app.client.list(ListQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    app.stop().await;
}
