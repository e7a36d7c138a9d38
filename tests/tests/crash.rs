//! Crash safety with real processes: a worker is SIGKILLed at random moments and restarted on
//! the same database; in the end every instance completed exactly once per step.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duractor::store::{InstanceQuery, Store};
use duractor::{Event, RuntimeStatus};
use duractor_sqlx::SqliteStore;
use duractor_tests::TempDir;

const COUNT: u64 = 600;
const STEPS: u64 = 10;

/// The output `crash_worker`'s `ten_steps` computes for a seed.
fn expected_output(seed: u64) -> u64 {
    (0..STEPS).fold(seed, |value, k| value.wrapping_mul(31).wrapping_add(k + 1))
}

/// A small deterministic PRNG for kill times (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let dir = TempDir::new("crash");
    let db = dir.file("crash.db");
    let log = dir.file("activities.log");
    let worker = env!("CARGO_BIN_EXE_crash_worker");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
        | 1;
    println!("kill-time seed: {seed}");
    let mut rng = Rng(seed);

    let spawn = || {
        Command::new(worker)
            .arg(&db)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start crash_worker")
    };

    let mut kills = 0;
    let mut runs = 0;
    // Kill delays after the first run are drawn below this. A run that ends on its own before
    // its kill (the workload is done, only start-up and the final checks are left) bounds
    // the delays after it by how long it lived, so the next kills land within a run's life
    // instead of the loop restarting quick runs it never kills.
    let mut window = 400;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "the workload did not finish in time ({runs} runs, {kills} kills)"
        );
        let mut child = spawn();
        let began = Instant::now();
        runs += 1;
        if kills < 6 {
            // The first start also migrates and creates instances: give it longer.
            let delay = Duration::from_millis(if runs == 1 {
                150 + rng.next(300)
            } else {
                5 + rng.next(window)
            });
            let mut exited = None;
            while exited.is_none() && began.elapsed() < delay {
                std::thread::sleep(Duration::from_millis(2));
                exited = child.try_wait().expect("poll the worker");
            }
            let Some(status) = exited else {
                child.kill().expect("SIGKILL the worker");
                child.wait().expect("reap the worker");
                kills += 1;
                continue;
            };
            window = window.min(began.elapsed().as_millis() as u64).max(10);
            assert!(status.success(), "the worker failed: {status}");
            if kills >= 5 {
                break;
            }
            continue;
        }
        let status = child.wait().expect("wait for the worker");
        assert!(status.success(), "the worker failed: {status}");
        if kills >= 5 {
            break;
        }
    }
    println!("{runs} runs, {kills} kills");
    assert!(kills >= 5);

    // Every instance completed with the exact output.
    let store = SqliteStore::open(&db).await.unwrap();
    let all = store
        .list_instances(&InstanceQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len() as u64, COUNT);
    for status in &all {
        assert_eq!(
            status.status,
            RuntimeStatus::Completed,
            "{}",
            status.instance_id
        );
        let seed: u64 = status
            .instance_id
            .trim_start_matches("crash-")
            .parse()
            .unwrap();
        assert_eq!(
            status.output::<u64>().unwrap(),
            expected_output(seed),
            "{}",
            status.instance_id
        );

        // No history has a duplicate or missing step.
        let history = store.load_history(&status.instance_id).await.unwrap();
        let mut scheduled = Vec::new();
        let mut completed = Vec::new();
        for event in &history {
            match event {
                Event::TaskScheduled { seq, .. } => scheduled.push(*seq),
                Event::TaskCompleted { seq, .. } => completed.push(*seq),
                Event::TaskFailed { .. } => panic!("a step failed in {}", status.instance_id),
                _ => {}
            }
        }
        let steps: Vec<u64> = (0..STEPS).collect();
        assert_eq!(
            scheduled, steps,
            "scheduled steps of {}",
            status.instance_id
        );
        let mut sorted = completed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, steps, "completed steps of {}", status.instance_id);
        let terminal = history.iter().filter(|e| e.is_terminal()).count();
        assert_eq!(terminal, 1, "{}", status.instance_id);
    }

    // Activities ran at least once per step (at-least-once: a kill may repeat some).
    let log = std::fs::read_to_string(&log).unwrap();
    let mut runs_per_step: HashMap<(String, u64), u32> = HashMap::new();
    for line in log.lines() {
        let (instance, k) = line.split_once(' ').expect("a log line");
        *runs_per_step
            .entry((instance.to_owned(), k.parse().unwrap()))
            .or_default() += 1;
    }
    let expected: HashSet<(String, u64)> = (0..COUNT)
        .flat_map(|i| (0..STEPS).map(move |k| (format!("crash-{i}"), k)))
        .collect();
    let ran: HashSet<(String, u64)> = runs_per_step.keys().cloned().collect();
    assert_eq!(ran, expected, "every step ran at least once");
    let repeated = runs_per_step.values().filter(|n| **n > 1).count();
    println!("{repeated} steps ran more than once (at-least-once after kills)");
}
