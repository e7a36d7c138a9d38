//! Exactly once when PostgreSQL's answer is lost or late (issue 12), with real worker
//! processes and a real TCP proxy between them (and the clients) and the server:
//!
//! * the answer to one `COMMIT` in ten (or to a turn's guarded statement, which commits on its
//!   own) is lost after the server ran it, dozens of times;
//! * the database goes away (every connection cut, new ones refused) for 10 s and for 40 s;
//! * every round trip is slower than the lease.
//!
//! Each time two workers run orchestrations of three activities while clients send signals
//! to ten counters, retrying what failed as a careful client would, and afterwards: every
//! instance completed once with its exact output, every counter is exact (no signal applied
//! twice, none lost), no client call that was answered with an error took effect, and no
//! ready work is left in the store.
//!
//! Needs `DURACTOR_TEST_POSTGRES_URL` (CI sets it); without it the tests print a notice.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duractor::client::EntityQuery;
use duractor::prelude::*;
use duractor::{Event, Store};
use duractor_sqlx::{PostgresStore, PostgresStoreOptions};
use duractor_tests::ChildGuard;
use duractor_tests::proxy::PgProxy;
use duractor_tests::scale::{Hits, ThreeSteps, three_steps_output};

/// The fault tests run one at a time: each has two workers and a proxy of its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var("DURACTOR_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("DURACTOR_TEST_POSTGRES_URL is not set: skipping `{test}`");
    }
    url
}

/// The server's address in a PostgreSQL URL.
fn server_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    host.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve {host}"))
}

/// `url` with a query parameter added.
fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{url}?{param}")
    }
}

async fn store_at(url: &str, schema: &str) -> PostgresStore {
    let options = PostgresStoreOptions {
        schema: schema.to_owned(),
        ..Default::default()
    };
    PostgresStore::connect_with(url, options).await.unwrap()
}

fn spawn_worker(url: &str, schema: &str, lease_ms: u64) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_pg_worker"))
            .args([url, schema, &lease_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pg_worker"),
    )
}

/// How a run is shaped and what goes wrong in it.
struct Scenario {
    name: &'static str,
    instances: u64,
    signals: u64,
    lease_ms: u64,
    /// How long everything may take.
    deadline: Duration,
    /// How many `COMMIT` answers the proxy must have lost for the run to count.
    min_lost_answers: u64,
    /// How many of those must have been answers to turns' guarded statements.
    min_lost_own_answers: u64,
    /// Over how long the client calls are spread (many small batches, many commits).
    spread: Duration,
}

/// Runs the load of `scenario` while `faults` misbehaves (it is called once the load is
/// under way), then checks that everything happened exactly once and nothing is stranded.
async fn run<F>(scenario: Scenario, faults: F)
where
    F: FnOnce(Arc<PgProxy>) -> tokio::task::JoinHandle<()>,
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(url) = postgres_url(scenario.name) else {
        return;
    };
    let schema = format!("faults_{}_{}", scenario.name, std::process::id());
    // Setup and checks talk to the server directly; workers and clients through the proxy.
    let direct = store_at(&url, &schema).await;
    let proxy = Arc::new(PgProxy::start(server_addr(&url)));
    let proxied = with_param(&proxy.url(&url), "sslmode=disable");
    let workers: Vec<ChildGuard> = (0..2)
        .map(|_| spawn_worker(&proxied, &schema, scenario.lease_ms))
        .collect();
    let client = Client::new(store_at(&proxied, &schema).await);
    let started = Instant::now();

    let faulting = faults(proxy.clone());

    // Starts, each retried until it is answered with success, as a careful client would:
    // an attempt answered with an error must not have taken effect.
    let pause = |i: u64, n: u64| scenario.spread.mul_f64(i as f64 / n.max(1) as f64);
    let starts: Vec<_> = (0..scenario.instances)
        .map(|i| {
            let client = client.clone();
            let pause = pause(i, scenario.instances);
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let id = format!("f-{i}");
                let mut errors = Vec::new();
                loop {
                    match client.start(ThreeSteps, i).instance_id(&id).await {
                        Ok(_) => return errors,
                        Err(error @ duractor::Error::InstanceExists { .. }) => {
                            panic!(
                                "`{id}`: a start answered with {errors:?} had taken effect: {error}"
                            )
                        }
                        Err(error) => {
                            errors.push(error.to_string());
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect();
    // Signals to ten counters, each retried until it is answered with success.
    let signals: Vec<_> = (0..scenario.signals)
        .map(|i| {
            let client = client.clone();
            let pause = pause(i, scenario.signals);
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let key = format!("client-{}", i % 10);
                let mut failed = 0u32;
                loop {
                    match client.signal_entity::<Hits>(key.clone()).hit().await {
                        Ok(()) => return failed,
                        Err(_) => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut start_errors = 0;
    for start in starts {
        start_errors += start.await.unwrap().len();
    }
    let mut signal_errors = 0;
    for signal in signals {
        signal_errors += signal.await.unwrap();
    }
    faulting.await.unwrap();
    println!(
        "{}: all client calls answered after {:?} ({start_errors} start and {signal_errors} signal errors retried)",
        scenario.name,
        started.elapsed()
    );

    // Every instance completes, exactly.
    let deadline = started + scenario.deadline;
    for i in 0..scenario.instances {
        let id = format!("f-{i}");
        let status = loop {
            let status = direct.get_instance(&id).await.unwrap().expect("it exists");
            if status.status.is_terminal() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`{id}` is still {} after {:?}; its history: {:?}",
                status.status,
                scenario.deadline,
                direct.load_history(&id).await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{id}: {:?}",
            status.failure
        );
        assert_eq!(
            status.output::<u64>().unwrap(),
            three_steps_output(i),
            "{id}"
        );
        let history = direct.load_history(&id).await.unwrap();
        let steps = |kind: fn(&Event) -> Option<u64>| {
            let mut seqs: Vec<u64> = history.iter().filter_map(kind).collect();
            seqs.sort_unstable();
            seqs
        };
        let scheduled = steps(|e| match e {
            Event::TaskScheduled { seq, .. } => Some(*seq),
            _ => None,
        });
        let completed = steps(|e| match e {
            Event::TaskCompleted { seq, .. } => Some(*seq),
            _ => None,
        });
        assert_eq!(scheduled, [0, 1, 2], "{id}: {history:?}");
        assert_eq!(completed, [0, 1, 2], "{id}: {history:?}");
        assert_eq!(
            history.iter().filter(|e| e.is_terminal()).count(),
            1,
            "{id}"
        );
    }

    // Every counter is exact: each acknowledged signal applied once, none twice.
    let per_key = scenario.signals / 10;
    let counts = loop {
        let hits = direct
            .list_entities(&EntityQuery {
                name: Some("Hits".into()),
                key_prefix: Some("client-".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let counts: HashMap<String, u64> = hits
            .iter()
            .map(|e| {
                (
                    e.id.key.clone(),
                    e.state::<Hits>().unwrap().map_or(0, |h| h.count),
                )
            })
            .collect();
        assert!(
            counts.values().all(|c| *c <= per_key),
            "a signal was applied twice: {counts:?}"
        );
        if counts.len() == 10 && counts.values().all(|c| *c == per_key) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "signals are missing after {:?}: {counts:?}",
            scenario.deadline
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Nothing is stranded: no ready message, no activity item.
    loop {
        let stats = direct
            .stats()
            .await
            .unwrap()
            .expect("PostgreSQL counts its queues");
        if stats.messages_ready == 0 && stats.activity_items == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "work left in the store after {:?}: {stats:?}",
            scenario.deadline
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = proxy.stats();
    let lost = stats
        .commit_answers_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lost >= scenario.min_lost_answers,
        "the proxy lost only {lost} COMMIT answers"
    );
    // Turns commit as single guarded statements too: some of the lost answers were theirs.
    let own = stats
        .own_commit_answers_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        own >= scenario.min_lost_own_answers,
        "only {own} of the {lost} lost answers were guarded turns'"
    );
    println!(
        "{}: done in {:?}; counters {counts:?}; proxy: {stats:?}",
        scenario.name,
        started.elapsed()
    );
    drop(workers);
    drop(client);
    direct.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_commit_answers_apply_nothing_twice_and_strand_nothing() {
    let scenario = Scenario {
        name: "lost_answers",
        instances: 300,
        signals: 1_000,
        lease_ms: 3_000,
        deadline: Duration::from_secs(240),
        min_lost_answers: 30,
        min_lost_own_answers: 10,
        spread: Duration::from_secs(10),
    };
    run(scenario, |proxy| {
        proxy.drop_commit_answers(10, 40);
        proxy.drop_own_commit_answers(4, 15);
        tokio::spawn(async {})
    })
    .await;
}

async fn outage(seconds: u64, name: &'static str) {
    let scenario = Scenario {
        name,
        instances: 150,
        signals: 500,
        lease_ms: 3_000,
        deadline: Duration::from_secs(seconds + 180),
        min_lost_answers: 0,
        min_lost_own_answers: 0,
        spread: Duration::from_secs(3),
    };
    run(scenario, move |proxy| {
        tokio::spawn(async move {
            // Mid-load: some commits are on the wire when everything is cut.
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.outage(Duration::from_secs(seconds));
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_second_outage_mid_load_applies_nothing_twice() {
    outage(10, "outage_10s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_second_outage_mid_load_applies_nothing_twice() {
    outage(40, "outage_40s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_slower_than_the_lease_apply_nothing_twice() {
    let scenario = Scenario {
        name: "slow",
        instances: 10,
        signals: 50,
        lease_ms: 1_000,
        deadline: Duration::from_secs(300),
        min_lost_answers: 0,
        min_lost_own_answers: 0,
        spread: Duration::ZERO,
    };
    run(scenario, |proxy| {
        // Every statement and its answer wait 700 ms each way: a round trip takes longer than
        // the lease, so leases lapse while the work they cover is on its way.
        proxy.delay(Duration::from_millis(700));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            proxy.delay(Duration::ZERO);
        })
    })
    .await;
}

/// A turn's guarded statement (one statement that commits on its own) whose connection is cut
/// while the server has not finished it — here it waits for a row lock another session holds
/// — could still commit after the writer asked the fence row and heard "not committed". The
/// writer ends that server process first, so the turn commits exactly once, through the
/// ordinary path, and its caller hears that it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_guarded_statement_is_ended_before_its_outcome_is_settled() {
    use sqlx::Connection as _;

    let Some(url) = postgres_url("a_cut_off_guarded_statement_is_ended") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let schema = format!("faults_cut_{}", std::process::id());
    let proxy = PgProxy::start(server_addr(&url));
    let store = store_at(&proxy.url(&url), &schema).await;
    let now = duractor_tests::store_now;
    let lease = || now() + duractor::chrono::Duration::seconds(60);
    store
        .create_instance(duractor::store::NewInstance {
            instance_id: "held".into(),
            name: "flow".into(),
            version: String::new(),
            input: duractor::Payload::null(),
            created_at: now(),
            parent: None,
            flow: None,
        })
        .await
        .unwrap();
    let start = store.claim_messages("w1", 10, lease()).await.unwrap();
    assert_eq!(start.len(), 1);

    // Another session holds the instance's row: the turn's statement will wait for it.
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; SET LOCAL search_path TO \"{schema}\"; \
         SELECT 1 FROM instances WHERE instance_id = 'held' FOR UPDATE"
    )))
    .execute(&mut locker)
    .await
    .unwrap();
    let events = vec![
        Event::OrchestratorStarted { timestamp: now() },
        Event::ExecutionCompleted {
            output: duractor::Payload::null(),
        },
    ];
    let mut turn = duractor_tests::turn("held", "w1", 0, events.clone(), vec![start[0].id]);
    turn.status = Some(RuntimeStatus::Completed);
    turn.output = Some(duractor::Payload::null());
    let committing = tokio::spawn({
        let store = store.clone();
        async move { store.commit_turn(turn).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!committing.is_finished(), "the turn must wait for the lock");
    // The database goes away for the store (not for the locker, which connects directly):
    // the statement's answer can never arrive; the server is still running it.
    proxy.outage(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();

    let committed = tokio::time::timeout(Duration::from_secs(60), committing)
        .await
        .expect("the turn settles")
        .unwrap();
    assert!(
        committed.is_ok(),
        "the turn committed once, so its caller must hear so: {committed:?}"
    );
    let history = store.load_history("held").await.unwrap();
    assert_eq!(history, events, "the turn's events, once");
    let status = store.get_instance("held").await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Completed);
    drop(proxy);
    let direct = store_at(&url, &schema).await;
    direct.drop_schema().await.unwrap();
}

#[orchestrator]
async fn outage_nap(ctx: OrchestrationContext, ms: u64) -> Result<u64, duractor::Error> {
    ctx.sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// A client waiting for an instance keeps waiting while its connections are cut and new ones
/// closed at once for 12 s (every status read fails; the worker, connected directly, goes
/// on), and then hears that the instance completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_completion_rides_out_an_outage() {
    let Some(url) = postgres_url("waiting_for_completion_rides_out_an_outage") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let schema = format!("faults_wait_{}", std::process::id());
    let direct = store_at(&url, &schema).await;
    let runtime = Runtime::builder(direct.clone()).start().await.unwrap();
    let proxy = PgProxy::start(server_addr(&url));
    let proxied = with_param(&proxy.url(&url), "sslmode=disable");
    let client = Client::new(store_at(&proxied, &schema).await);
    let id = client
        .start(OutageNap, 4_000)
        .instance_id("nap")
        .await
        .unwrap();
    let outage = tokio::spawn({
        let proxy = Arc::new(proxy);
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.outage(Duration::from_secs(12));
            proxy
        }
    });
    let status = client
        .wait_for_completion(&id, Duration::from_secs(60))
        .await
        .expect("the wait rides out the outage");
    assert_eq!(status.status, RuntimeStatus::Completed);
    assert_eq!(status.output::<u64>().unwrap(), 4_000);
    let proxy = outage.await.unwrap();
    assert!(
        proxy
            .stats()
            .connections_cut
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the client's connections were cut"
    );
    runtime.shutdown().await.unwrap();
    direct.drop_schema().await.unwrap();
}

/// A client's wait returns by its timeout (give or take `STATUS_READ_GRACE`) when the store
/// does not answer its status read: once with every statement delayed by 5 s, once with the
/// server gone (connections cut, new ones refused: the pool would wait up to its 10 s acquire
/// timeout). Either way the error says the store did not answer and may pass, and the
/// instance is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_returns_by_its_timeout_when_the_store_does_not_answer() {
    let Some(url) = postgres_url("a_wait_returns_by_its_timeout_when_the_store_does_not_answer")
    else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let schema = format!("faults_wait_bound_{}", std::process::id());
    let direct = store_at(&url, &schema).await;
    let proxy = PgProxy::start(server_addr(&url));
    let proxied = with_param(&proxy.url(&url), "sslmode=disable");
    let client = Client::new(store_at(&proxied, &schema).await);
    // No worker runs it: it stays pending throughout.
    let id = client
        .start(OutageNap, 1)
        .instance_id("unanswered")
        .await
        .unwrap();

    let bounded_wait = async |what: &str| {
        let began = Instant::now();
        let error = client
            .wait_for_completion(&id, Duration::from_secs(1))
            .await
            .expect_err("nothing runs the instance");
        let took = began.elapsed();
        assert!(
            took < Duration::from_millis(2_500),
            "{what}: the 1 s wait returned after {took:?}"
        );
        assert!(
            matches!(
                error,
                duractor::Error::Store {
                    transient: true,
                    ..
                }
            ),
            "{what}: {error}"
        );
        error
    };
    proxy.delay(Duration::from_secs(5));
    let error = bounded_wait("every statement 5 s late").await;
    assert!(
        error.to_string().contains("got no answer from the store"),
        "{error}"
    );
    proxy.delay(Duration::ZERO);
    proxy.outage(Duration::from_secs(30));
    bounded_wait("the server gone").await;

    let status = direct.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(status.status, RuntimeStatus::Pending);
    direct.drop_schema().await.unwrap();
}
