//! Entities under SIGKILL: signals from concurrent clients and critical sections survive
//! worker crashes, exactly once and in order.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duractor::Client;
use duractor::RuntimeStatus;
use duractor::client::{EntityQuery, ListQuery};
use duractor_sqlx::SqliteStore;
use duractor_tests::TempDir;
use serde::Deserialize;

const CLIENTS: u32 = 4;
const SIGNALS_PER_CLIENT: u64 = 2_500;
const COUNTERS: u64 = 100;

fn spawn(mode: &str, db: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_entity_worker"))
        .arg(mode)
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start entity_worker")
}

fn kill(mut child: Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[derive(Debug, Deserialize)]
struct Tally {
    total: u64,
    applied: u64,
    last: BTreeMap<u32, u64>,
    violations: u64,
}

#[tokio::test]
async fn ten_thousand_signals_from_four_clients_survive_three_kills() {
    let dir = TempDir::new("crash-entities");
    let db = dir.file("app.db");
    let mut worker = spawn("serve", &db);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Four clients, each its own store connection, each sending 2,500 signals in order:
    // signal n of client c goes to counter n % 100 with amount c + 1.
    let mut clients = Vec::new();
    for sender in 0..CLIENTS {
        let client = Client::new(SqliteStore::open(&db).await.expect("open the store"));
        clients.push(tokio::spawn(async move {
            let mut seq_per_counter = vec![0u64; COUNTERS as usize];
            for n in 0..SIGNALS_PER_CLIENT {
                let counter = n % COUNTERS;
                seq_per_counter[counter as usize] += 1;
                let input =
                    serde_json::json!([sender, seq_per_counter[counter as usize], sender + 1]);
                let entity = duractor::EntityId::new("Tally", format!("t{counter}"));
                let input = duractor::Payload::from_json(input.to_string()).unwrap();
                client
                    .signal_entity_raw(&entity, "record", input, None)
                    .await
                    .expect("signal");
            }
        }));
    }

    // Kill the worker three times while the clients send.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        kill(worker);
        tokio::time::sleep(Duration::from_millis(100)).await;
        worker = spawn("serve", &db);
    }
    for client in clients {
        client.await.expect("client task");
    }

    // Every counter ends at exactly the expected value, with no duplicate or reordering.
    let observer = Client::new(SqliteStore::open(&db).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected_total: u64 =
        (1..=u64::from(CLIENTS)).sum::<u64>() * (SIGNALS_PER_CLIENT / COUNTERS);
    let expected_applied = u64::from(CLIENTS) * (SIGNALS_PER_CLIENT / COUNTERS);
    let tallies = loop {
        let entities = observer
            .list_entities(&EntityQuery {
                name: Some("Tally".into()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let tallies: Vec<Tally> = entities
            .iter()
            .filter_map(|e| e.state().ok().flatten())
            .collect();
        let done = tallies.len() as u64 == COUNTERS
            && tallies.iter().all(|t| t.applied >= expected_applied);
        if done {
            break tallies;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not catch up: {} loaded",
            tallies.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    kill(worker);
    for tally in &tallies {
        assert_eq!(tally.applied, expected_applied, "{tally:?}");
        assert_eq!(tally.total, expected_total, "{tally:?}");
        assert_eq!(tally.violations, 0, "out of order or duplicated: {tally:?}");
        assert_eq!(tally.last.len() as u32, CLIENTS);
    }
}

#[derive(Debug, Deserialize)]
struct Account {
    balance: i64,
}

#[tokio::test]
async fn fifty_transfers_in_critical_sections_survive_crashes() {
    let dir = TempDir::new("crash-bank");
    let db = dir.file("app.db");
    // Kill the worker when 5, 20 and 35 of the 50 transfers have completed (a progress
    // count, not a clock, so each kill lands in the middle of the run however fast it is).
    let observer = Client::new(SqliteStore::open(&db).await.unwrap());
    let completed = async || {
        observer
            .list(ListQuery {
                statuses: vec![RuntimeStatus::Completed],
                instance_id_prefix: Some("transfer-".into()),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    for threshold in [5, 20, 35] {
        let mut worker = spawn("bank", &db);
        loop {
            assert!(Instant::now() < deadline, "the transfers did not progress");
            if let Some(status) = worker.try_wait().unwrap() {
                panic!("the worker exited ({status}) before {threshold} transfers completed");
            }
            let done = completed().await;
            if done >= threshold {
                assert!(
                    done < 50,
                    "the run finished before the kill; nothing was interrupted"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        kill(worker);
        kills += 1;
    }
    let mut worker = spawn("bank", &db);
    let status = loop {
        assert!(Instant::now() < deadline, "the transfers did not finish");
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "worker failed: {status}");
    assert_eq!(completed().await, 50);
    assert_eq!(kills, 3);
    let client = Client::new(SqliteStore::open(&db).await.unwrap());
    let accounts = client
        .list_entities(&EntityQuery {
            name: Some("Account".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(accounts.len(), 10);
    let balances: Vec<i64> = accounts
        .iter()
        .map(|e| e.state::<Account>().unwrap().unwrap().balance)
        .collect();
    assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
    assert_eq!(
        balances.iter().sum::<i64>(),
        1000,
        "money was created or lost: {balances:?}"
    );
    assert!(
        accounts.iter().all(|a| a.lock_owner.is_none()),
        "a lock was left behind"
    );
}
