//! Scale-out on PostgreSQL with real processes: several workers share one database, one is
//! SIGKILLed mid-run and another joins later; every instance completes exactly, every entity
//! ends exact, no history has a duplicated step. Also: dropped connections are survived.
//! Needs `DURACTOR_TEST_POSTGRES_URL` (CI sets it); without it the tests print a notice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duractor::client::{EntityQuery, ListQuery};
use duractor::prelude::*;
use duractor::{Event, Store};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
use duractor_tests::ChildGuard;
use duractor_tests::scale::{
    FiveSteps, Hits, SizedOutput, ThreeSteps, five_steps_output, three_steps_output,
};

fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("DURACTOR_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping `{test}`");
    }
    url
}

/// A store on a schema of its own (created and migrated).
async fn store_in(url: &str, schema: &str) -> PostgresStore {
    let options = PostgresStoreOptions {
        schema: schema.to_owned(),
        ..Default::default()
    };
    PostgresStore::connect_with(url, options).await.unwrap()
}

fn spawn_worker(url: &str, schema: &str, lease_ms: u64) -> ChildGuard {
    spawn_worker_polling(url, schema, lease_ms, 200)
}

/// A worker process whose fallback poll comes every `poll_ms`.
fn spawn_worker_polling(url: &str, schema: &str, lease_ms: u64, poll_ms: u64) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_pg_worker"))
            .args([url, schema, &lease_ms.to_string(), &poll_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pg_worker"),
    )
}

#[tokio::test]
async fn three_workers_one_killed_one_joining_later_lose_and_duplicate_nothing() {
    let Some(url) = postgres_url("three_workers_one_killed") else {
        return;
    };
    let schema = format!("scale_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let client = Client::new(store.clone());
    let lease_ms = 2_000;
    let mut workers: Vec<ChildGuard> = (0..3)
        .map(|_| spawn_worker(&url, &schema, lease_ms))
        .collect();

    const COUNT: u64 = 2_000;
    let started = Instant::now();
    let starts = (0..COUNT).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .start(FiveSteps, i)
                .instance_id(format!("scale-{i}"))
                .await
        })
    });
    for start in starts.collect::<Vec<_>>() {
        start.await.unwrap().expect("start");
    }

    // Kill one worker once a fifth of the instances completed; start another later.
    let wait_for = |done: u64| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                let completed = count_completed(&client).await;
                if completed >= done {
                    return completed;
                }
                assert!(Instant::now() < deadline, "stuck at {completed} completed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(COUNT / 5).await;
    workers.remove(0).kill();
    wait_for(COUNT / 2).await;
    workers.push(spawn_worker(&url, &schema, lease_ms));
    wait_for(COUNT).await;
    println!(
        "{COUNT} orchestrations on 3 workers (one killed, one added) in {:?}",
        started.elapsed()
    );

    // Exact outputs, whole histories, exact entities.
    for i in 0..COUNT {
        let id = format!("scale-{i}");
        let status = client.status(&id).await.unwrap();
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{id}: {:?}",
            status.failure
        );
        assert_eq!(
            status.output::<u64>().unwrap(),
            five_steps_output(i),
            "{id}"
        );
        let history = store.load_history(&id).await.unwrap();
        let scheduled: Vec<u64> = history
            .iter()
            .filter_map(|e| match e {
                Event::TaskScheduled { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        let mut completed: Vec<u64> = history
            .iter()
            .filter_map(|e| match e {
                Event::TaskCompleted { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        completed.sort_unstable();
        assert_eq!(scheduled, [0, 1, 2, 3, 4], "{id}");
        assert_eq!(completed, [0, 1, 2, 3, 4], "{id}");
        assert_eq!(
            history.iter().filter(|e| e.is_terminal()).count(),
            1,
            "{id}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hits = client
            .list_entities(&EntityQuery {
                name: Some("Hits".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let counts: Vec<u64> = hits
            .iter()
            .map(|e| e.state::<Hits>().unwrap().map_or(0, |h| h.count))
            .collect();
        if counts.len() == 20 && counts.iter().all(|c| *c == COUNT / 20) {
            break;
        }
        assert!(
            counts.iter().all(|c| *c <= COUNT / 20),
            "an entity signal was applied twice: {counts:?}"
        );
        assert!(
            Instant::now() < deadline,
            "entities did not catch up: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(workers);
    store.drop_schema().await.unwrap();
}

async fn count_completed(client: &Client) -> u64 {
    let mut done = 0;
    let mut after = None;
    loop {
        let page = client
            .list(ListQuery {
                statuses: vec![RuntimeStatus::Completed],
                limit: Some(10_000),
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            return done;
        }
        done += page.len() as u64;
        after = page.last().map(|s| s.instance_id.clone());
    }
}

#[activity]
async fn drop_step(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    Ok(x + 1)
}

#[orchestrator]
async fn drop_chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, duractor::Error> {
    let mut value = 0;
    for _ in 0..steps {
        value = ctx.call_activity(DropStep, value).await?;
    }
    Ok(value)
}

#[tokio::test]
async fn dropped_connections_are_retried_and_nothing_is_lost_or_doubled() {
    let Some(url) = postgres_url("dropped_connections") else {
        return;
    };
    let schema = format!("drops_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let runtime = Runtime::builder(store.clone())
        .poll_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = runtime.client();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            client
                .start(DropChain, 10)
                .instance_id(format!("drop-{i}"))
                .await
                .unwrap(),
        );
    }
    // Terminate every connection of this store several times while it works.
    let mut terminated = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        terminated += terminate_connections(&url, &format!("duractor:{schema}")).await;
    }
    assert!(terminated > 0, "no connection was terminated");
    for id in &ids {
        let status = client
            .wait_for_completion(id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{id}: {:?}",
            status.failure
        );
        assert_eq!(status.output::<u64>().unwrap(), 10);
        let history = client.history(id).await.unwrap();
        let steps = history
            .iter()
            .filter(|e| matches!(e, Event::TaskCompleted { .. }))
            .count();
        assert_eq!(steps, 10, "{id}: a step is missing or doubled");
    }
    runtime.shutdown().await.unwrap();
    store.drop_schema().await.unwrap();
}

/// Two workers claiming at the same moment: while one worker's claim transaction holds the
/// oldest instances, the other's claim takes the next ones instead of finding its candidates
/// locked and coming back empty (which left a second worker idle while the first took all).
#[tokio::test]
async fn a_claim_skips_instances_another_claim_is_locking_and_takes_the_next() {
    use sqlx::{Connection, Executor};
    let Some(url) = postgres_url("concurrent_claims") else {
        return;
    };
    let schema = format!("claims_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let client = Client::new(store.clone());
    for i in 0..20 {
        client
            .start(DropChain, 1)
            .instance_id(format!("c{i:02}"))
            .await
            .unwrap();
    }
    // Another worker's claim, caught in the middle: it has locked the 10 oldest instances.
    let mut other = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(&schema)
        .execute(&mut other)
        .await
        .unwrap();
    other.execute("BEGIN").await.unwrap();
    let locked: Vec<String> = sqlx::query_scalar(
        "SELECT instance_id FROM instances ORDER BY instance_id LIMIT 10 FOR UPDATE",
    )
    .fetch_all(&mut other)
    .await
    .unwrap();
    assert_eq!(locked.len(), 10);

    let lease = duractor::chrono::Utc::now() + duractor::chrono::Duration::seconds(30);
    let claimed = store.claim_messages("w2", 10, lease).await.unwrap();
    let mut ids: Vec<String> = claimed.into_iter().map(|m| m.instance_id).collect();
    ids.sort();
    let expected: Vec<String> = (10..20).map(|i| format!("c{i:02}")).collect();
    assert_eq!(ids, expected);

    other.execute("ROLLBACK").await.unwrap();
    drop(other);
    store.drop_schema().await.unwrap();
}

/// A rolling upgrade: a schema migrated by a newer release (a migration this build does not
/// know) still opens, and work still runs on it.
#[tokio::test]
async fn a_schema_migrated_by_a_newer_release_still_opens() {
    let Some(url) = postgres_url("newer_schema") else {
        return;
    };
    let schema = format!("newer_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let mut conn = {
        use sqlx::Connection;
        sqlx::postgres::PgConnection::connect(&url).await.unwrap()
    };
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(&schema)
        .execute(&mut conn)
        .await
        .unwrap();
    let recorded = sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await;
    recorded.expect("record a migration from a newer release");
    drop(store);

    let store = store_in(&url, &schema).await;
    let runtime = Runtime::builder(store.clone()).start().await.unwrap();
    let client = runtime.client();
    let id = client.start(DropChain, 2).await.unwrap();
    let status = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
    runtime.shutdown().await.unwrap();
    store.drop_schema().await.unwrap();
}

/// A waiter in this process for an instance a worker process finishes is handed the row by
/// the notification, as a read gives it (custom status set by an earlier turn included), so
/// `wait_for_completion` needs no read after the wake-up; a row too long for a notification
/// is announced by its id, and the waiter reads it.
#[tokio::test]
async fn a_finish_in_another_process_hands_the_waiter_its_row() {
    let Some(url) = postgres_url("a_finish_in_another_process_hands_the_waiter_its_row") else {
        return;
    };
    let schema = format!("handed_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let client = Client::new(store.clone());
    let worker = spawn_worker(&url, &schema, 2_000);
    for (id, len, carried) in [("small", 100, true), ("large", 9_000, false)] {
        let watch = store.events().watch_finished(id);
        client
            .start(SizedOutput, len)
            .instance_id(id)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), watch.notified())
            .await
            .expect("the finish is announced to this process");
        let read = client.status(id).await.unwrap();
        assert_eq!(read.status, RuntimeStatus::Completed, "{read:?}");
        assert_eq!(
            read.output
                .as_ref()
                .unwrap()
                .decode::<String>()
                .unwrap()
                .len(),
            len
        );
        assert_eq!(
            read.custom_status
                .as_ref()
                .unwrap()
                .decode::<String>()
                .unwrap(),
            "stepping"
        );
        match watch.take_status() {
            Some(handed) => {
                assert!(
                    carried,
                    "a {len}-byte output fits no notification: {handed:?}"
                );
                assert_eq!(handed, read);
            }
            None => assert!(
                !carried,
                "the notification carries the {len}-byte output's row"
            ),
        }
        let waited = client
            .wait_for_completion(id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(waited, read);
    }
    // The worker goes first: dropping the schema under its polls can deadlock with them.
    worker.kill();
    store.drop_schema().await.unwrap();
}

/// A client of a store that announces finished rows to every process (PostgreSQL) watches
/// each instance it starts from before creating it: a worker process's finish hands the row
/// to that watch, and the wait reads nothing. A row too long for a notification is announced
/// by its id only, and the wait reads it. (The waits begin once this process has heard of
/// the finish, which makes "no read" certain.)
#[tokio::test]
async fn a_clients_wait_for_its_own_start_reads_nothing_when_the_finish_brings_the_row() {
    let Some(url) = postgres_url("a_clients_wait_for_its_own_start_reads_nothing") else {
        return;
    };
    let schema = format!("own_start_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let counted = duractor_tests::slow_starts::SlowStarts::new(store.clone(), Duration::ZERO);
    let client = Client::new(counted.clone());
    let worker = spawn_worker(&url, &schema, 2_000);
    for (id, len, carried) in [("small", 100, true), ("large", 9_000, false)] {
        let heard = store.events().watch_finished(id);
        let reads = counted.status_reads();
        client
            .start(SizedOutput, len)
            .instance_id(id)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), heard.notified())
            .await
            .expect("the finish is announced to this process");
        let status = client
            .wait_for_completion(id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(status.status, RuntimeStatus::Completed, "{status:?}");
        let output: String = status.output.as_ref().unwrap().decode().unwrap();
        assert_eq!(output.len(), len);
        let read = counted.status_reads() > reads;
        assert_eq!(
            read, !carried,
            "whether the wait for a {len}-byte output read the status"
        );
    }
    // The worker goes first: dropping the schema under its polls can deadlock with them.
    worker.kill();
    store.drop_schema().await.unwrap();
}

/// Starts one at a time, as a client serving requests makes them, with two worker
/// processes that poll only every 10 s: each start wakes one worker, the instance's lead, and
/// when a worker is SIGKILLed the other drops it from its list of live workers at its next
/// read (within a quarter of a second), so the starts after that run at once — none waits
/// for a poll, which a start left to the dead worker would.
#[tokio::test]
async fn lone_starts_run_when_the_worker_chosen_for_them_is_killed() {
    let Some(url) = postgres_url("lone_starts_run_when_the_worker_chosen_for_them_is_killed")
    else {
        return;
    };
    let schema = format!("lone_{}", std::process::id());
    let store = store_in(&url, &schema).await;
    let client = Client::new(store.clone());
    let mut workers: Vec<ChildGuard> = (0..2)
        .map(|_| spawn_worker_polling(&url, &schema, 2_000, 10_000))
        .collect();
    let run = |i: u64| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let id = client
                .start(ThreeSteps, i)
                .instance_id(format!("lone-{i}"))
                .await
                .unwrap();
            let status = client
                .wait_for_completion(&id, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(status.status, RuntimeStatus::Completed, "{id}: {status:?}");
            assert_eq!(status.output::<u64>().unwrap(), three_steps_output(i));
            started.elapsed()
        }
    };
    // Both workers are running (and named) once both have run instances.
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let both_named = || async {
        let mut conn = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
        )
        .bind(format!("duractor:{schema} worker:%"))
        .fetch_one(&mut conn)
        .await
        .unwrap()
            == 2
    };
    while !both_named().await {
        assert!(Instant::now() < deadline, "the workers did not join");
        run(i).await;
        i += 1;
    }
    for _ in 0..20 {
        run(i).await;
        i += 1;
    }
    workers.remove(0).kill();
    // A start now may be left to the dead worker until the other worker and this client
    // read their lists again: handed to it, it runs once its lease lapses (3 s) at the
    // other's poll; left to it as a lone start, at the other's poll. Once one start has run,
    // the lists are read.
    let first = run(i).await;
    i += 1;
    println!("the first start after the kill took {first:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        slowest = slowest.max(run(i).await);
        i += 1;
    }
    assert!(
        slowest < Duration::from_secs(3),
        "a start after the dead worker left the list took {slowest:?} (the poll is 10 s)"
    );
    // The workers go first: dropping the schema under their polls can deadlock with them.
    drop(workers);
    store.drop_schema().await.unwrap();
}

/// Terminates the backends of connections named `application_name` (a store's connections)
/// or `<application_name> worker:<owner>` (its worker's listener); returns how many.
async fn terminate_connections(url: &str, application_name: &str) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::postgres::PgConnection::connect(url).await.unwrap();
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE (application_name = $1 OR left(application_name, length($1) + 8) = $1 || ' worker:') \
           AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    terminated.len() as u64
}
