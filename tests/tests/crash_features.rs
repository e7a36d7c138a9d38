//! SIGKILL during a retry backoff and during continue-as-new: the instance resumes where it
//! was and completes with the right result, with no step duplicated in history.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duractor::store::Store;
use duractor::{Event, RuntimeStatus};
use duractor_sqlx::SqliteStore;
use duractor_tests::TempDir;

fn spawn(args: &[&std::path::Path]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_feature_worker"));
    for arg in args {
        command.arg(arg);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start feature_worker")
}

/// Polls the history (read-only) until `condition` holds.
async fn wait_for_history(store: &SqliteStore, what: &str, condition: impl Fn(&[Event]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = store.load_history("the-instance").await.unwrap_or_default();
        if condition(&history) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that a kill landed in a backoff: every attempt the counter file saw has its
/// failure in history (none was running).
async fn in_backoff(store: &SqliteStore, counter: &std::path::Path) {
    let history = store.load_history("the-instance").await.unwrap();
    let failed = history
        .iter()
        .filter(|e| matches!(e, Event::TaskFailed { .. }))
        .count();
    let attempts = std::fs::read_to_string(counter)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(
        attempts, failed,
        "the kill caught an attempt that had not recorded its result (history: {history:?})"
    );
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn finish(mut child: Child) {
    let status = child.wait().expect("wait for the worker");
    assert!(status.success(), "worker failed: {status}");
}

#[tokio::test]
async fn sigkill_during_a_retry_backoff_resumes_the_backoff() {
    let dir = TempDir::new("crash-retry");
    let db = dir.file("app.db");
    let counter = dir.file("attempts");
    let mode = std::path::Path::new("retry");

    // The observer opens the store first, so it watches from the first event on: each kill
    // must land well inside a backoff (1 s), far from the timer's due time. A kill just as
    // the timer fires can catch an attempt that started before its turn committed: the
    // attempt counts in the file but not in history, and the retry then ends an attempt
    // early (at least once allows it; this test's count would not).
    let observer = SqliteStore::open(&db).await.unwrap();
    let worker = spawn(&[mode, &db, &counter]);
    // Kill while a backoff timer is pending (after a failed attempt, before the next).
    wait_for_history(&observer, "the first backoff timer", |h| {
        h.iter().any(|e| matches!(e, Event::TimerCreated { .. }))
            && !h.iter().any(|e| matches!(e, Event::TimerFired { .. }))
    })
    .await;
    kill(worker);
    in_backoff(&observer, &counter).await;

    // Restart; kill again during the second backoff.
    let worker = spawn(&[mode, &db, &counter]);
    wait_for_history(&observer, "the second backoff timer", |h| {
        h.iter()
            .filter(|e| matches!(e, Event::TimerCreated { .. }))
            .count()
            == 2
            && h.iter()
                .filter(|e| matches!(e, Event::TimerFired { .. }))
                .count()
                == 1
    })
    .await;
    kill(worker);
    in_backoff(&observer, &counter).await;

    finish(spawn(&[mode, &db, &counter]));
    let status = observer
        .get_instance("the-instance")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output::<usize>().unwrap(), 4);
    let history = observer.load_history("the-instance").await.unwrap();
    let scheduled: Vec<u64> = history
        .iter()
        .filter_map(|e| match e {
            Event::TaskScheduled { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let timers: Vec<u64> = history
        .iter()
        .filter_map(|e| match e {
            Event::TimerFired { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    // attempt, timer, attempt, timer, attempt, timer, attempt: seq 0..=6, each once.
    assert_eq!(scheduled, [0, 2, 4, 6]);
    assert_eq!(timers, [1, 3, 5]);
    let attempts = std::fs::read_to_string(&counter).unwrap().lines().count();
    assert!(attempts >= 4, "{attempts} attempts");
}

#[tokio::test]
async fn sigkill_during_continue_as_new_loses_no_execution() {
    let dir = TempDir::new("crash-eternal");
    let db = dir.file("app.db");
    let mode = std::path::Path::new("eternal");

    let mut kills = 0;
    let observer = {
        let worker = spawn(&[mode, &db]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill(worker);
        kills += 1;
        SqliteStore::open(&db).await.unwrap()
    };
    // Kill right after an execution started, at several points of the count.
    for target in [5u32, 12, 20] {
        let worker = spawn(&[mode, &db]);
        wait_for_history(&observer, &format!("execution {target}"), |h| {
            h.iter().any(
                |e| matches!(e, Event::ExecutionStarted { execution, .. } if *execution >= target),
            )
        })
        .await;
        kill(worker);
        kills += 1;
    }
    finish(spawn(&[mode, &db]));
    assert_eq!(kills, 4);
    let status = observer
        .get_instance("the-instance")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output::<u32>().unwrap(), 30);
    let history = observer.load_history("the-instance").await.unwrap();
    // Only the last execution's history is kept, and it is whole.
    assert!(
        matches!(&history[1], Event::ExecutionStarted { execution: 30, .. }),
        "{:?}",
        history[1]
    );
    assert_eq!(history.iter().filter(|e| e.is_terminal()).count(), 1);
    assert!(history.len() <= 4, "{history:?}");
}
