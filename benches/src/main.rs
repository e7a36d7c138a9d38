//! The standard workloads of `BENCHMARKS.md`, printing one JSON object per run.
//!
//! ```text
//! cargo run --release -p duractor-benches -- --workload all --runs 5
//! cargo run --release -p duractor-benches -- --backend postgres --workers 2 --workload W3,W4
//! ```
//!
//! SQLite: every run uses a fresh file (WAL, `synchronous=NORMAL` unless `--sync full`) in a
//! temp directory, with the worker in this process. PostgreSQL (`--postgres-url`, default
//! `$DURACTOR_BENCH_POSTGRES_URL`, then `$DURACTOR_TEST_POSTGRES_URL`): every run uses a fresh
//! schema, served by `--workers N` worker processes (this program, started as `worker`);
//! this process only starts instances and checks results, as a client. `--workers 0` runs
//! the worker in this process instead (starts and completions then pass in memory). `ok` is true only when
//! the result was checked. With `--runs N > 1`, a line with `"stat":"median"` follows each
//! workload's runs.
//!
//! Every run also measures FLOOR (the raw sqlx cost of a step's writes on the same database,
//! see `floor`) just before its workload, and its line carries `floor_ms` and the workload's
//! cost in floors: `unit_floors` (ms per unit of `per_sec` ÷ `floor_ms`) and, for W6,
//! `p50_floors` and `p99_floors`; for W8, `overhead_floors`: what each timer took beyond its
//! own 1 ms (`overhead_ms_each`, the start and the finish spread over the timers; 1 ms timers
//! one after another make at most 1,000 timers/s, however cheap the engine).
//! `--workload FLOOR` prints the floor's own lines. W6 also
//! reports `start_p50_ms`, the median time `start` took (the rest of `p50_ms` is the run and
//! the wait for its completion).
//!
//! `--prefill N` puts `N` finished instances (eight history rows and an untaken message
//! each) in every run's store before the workload, and its lines carry `"prefill": N`: the
//! store's statements then run on tables the size of a store in use, where a plan that
//! scans a table shows (on PostgreSQL, 10,000 of them made a guarded turn 5× slower until
//! its plans were pinned to the keys).

mod floor;

use std::time::{Duration, Instant};

use duractor::prelude::*;
use duractor_sqlx::{
    PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions, Synchronous,
};
use serde_json::json;

#[activity]
async fn noop_add(_ctx: ActivityContext, x: u64) -> Result<u64, duractor::Error> {
    Ok(x + 1)
}

/// W1: N no-op activities in sequence.
#[orchestrator]
async fn w1_chain(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let mut value = 0;
    for _ in 0..n {
        value = ctx.call_activity(NoopAdd, value).await?;
    }
    Ok(value)
}

/// W2: N no-op activities in parallel, summed.
#[orchestrator]
async fn w2_fan_out(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    let results = ctx
        .join_all((0..n).map(|i| ctx.call_activity(NoopAdd, i)))
        .await;
    let mut sum = 0;
    for result in results {
        sum += result?;
    }
    Ok(sum)
}

/// W3 and W6: three activities in sequence.
#[orchestrator]
async fn hello_sequence(ctx: OrchestrationContext, start: u64) -> Result<u64, duractor::Error> {
    let a = ctx.call_activity(NoopAdd, start).await?;
    let b = ctx.call_activity(NoopAdd, a).await?;
    ctx.call_activity(NoopAdd, b).await
}

/// How long each of W8's timers waits.
const W8_TIMER: Duration = Duration::from_millis(1);

/// W8: N durable timers of [`W8_TIMER`], one after another.
#[orchestrator]
async fn w8_timers(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    for _ in 0..n {
        ctx.sleep(W8_TIMER).await;
    }
    Ok(n)
}

/// W5: a durable timer of one second, then done.
#[orchestrator]
async fn sleep_one_second(ctx: OrchestrationContext, n: u64) -> Result<u64, duractor::Error> {
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(n)
}

/// W4: a counter entity.
#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    value: u64,
}

#[entity]
impl Tally {
    fn add(&mut self, amount: u64) {
        self.value += amount;
    }
}

struct Options {
    workloads: Vec<String>,
    runs: usize,
    synchronous: Synchronous,
    backend: Backend,
    /// Finished instances put in the store before each run (`--prefill N`).
    prefill: u32,
}

/// Where the workloads run.
#[derive(Clone)]
enum Backend {
    /// A fresh SQLite file per run; the worker in this process.
    Sqlite,
    /// A fresh schema per run on this server, served by `workers` worker processes.
    Postgres { url: String, workers: usize },
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        workloads: vec![
            "W1".into(),
            "W2".into(),
            "W3".into(),
            "W4".into(),
            "W5".into(),
            "W6".into(),
            "W7".into(),
            "W8".into(),
            "FLOOR".into(),
        ],
        runs: 1,
        synchronous: Synchronous::Normal,
        backend: Backend::Sqlite,
        prefill: 0,
    };
    let mut postgres = false;
    let mut workers = 1;
    let mut url = std::env::var("DURACTOR_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("DURACTOR_TEST_POSTGRES_URL"))
        .ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workload" | "-w" => {
                let value = args.next().ok_or("--workload needs a value")?;
                if !value.eq_ignore_ascii_case("all") {
                    options.workloads = value.split(',').map(|w| w.trim().to_uppercase()).collect();
                }
            }
            "--runs" => {
                options.runs = args
                    .next()
                    .ok_or("--runs needs a value")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
            }
            "--sync" => {
                options.synchronous = match args.next().as_deref() {
                    Some("normal") => Synchronous::Normal,
                    Some("full") => Synchronous::Full,
                    other => return Err(format!("--sync takes normal or full, not {other:?}")),
                }
            }
            "--backend" => {
                postgres = match args.next().as_deref() {
                    Some("sqlite") => false,
                    Some("postgres") => true,
                    other => {
                        return Err(format!("--backend takes sqlite or postgres, not {other:?}"));
                    }
                }
            }
            "--postgres-url" => url = Some(args.next().ok_or("--postgres-url needs a value")?),
            "--prefill" => {
                options.prefill = args
                    .next()
                    .ok_or("--prefill needs a value")?
                    .parse()
                    .map_err(|e| format!("--prefill takes a number of instances: {e}"))?;
            }
            "--workers" => {
                workers = args
                    .next()
                    .ok_or("--workers needs a value")?
                    .parse()
                    .ok()
                    .ok_or("--workers takes a number (0: the worker runs in this process)")?;
            }
            "--help" | "-h" => {
                println!(
                    "usage: duractor-benches [--workload all|W1,W2,W3,W4,W5,W6,W7,W8,FLOOR] [--runs N] \
                     [--sync normal|full] [--backend sqlite|postgres] [--postgres-url URL] \
                     [--workers N] [--prefill N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    if postgres {
        let url =
            url.ok_or("--backend postgres needs --postgres-url (or DURACTOR_BENCH_POSTGRES_URL)")?;
        options.backend = Backend::Postgres { url, workers };
    } else if workers != 1 {
        return Err(
            "--workers is for --backend postgres (SQLite takes one worker per file)".into(),
        );
    }
    Ok(options)
}

/// The machine's CPU time so far (all cores, in clock ticks), busy and in all, from
/// `/proc/stat`: how busy the cores were during a workload tells whether more worker
/// processes could have helped.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let total: u64 = ticks.iter().take(8).sum();
    Some((total - idle, total))
}

/// CPU time (user + system, in clock ticks, the unit of `/proc/stat`) a process has used so
/// far, from `/proc/PID/stat`; `None` once it is gone.
fn process_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// CPU time used so far by each of the PostgreSQL server's processes on this machine (every
/// process named `postgres`: the backends serving the store's connections, the WAL writer,
/// the checkpointer), in clock ticks by pid; `None` when none is visible (a server
/// elsewhere).
fn server_cpu_ticks() -> Option<std::collections::HashMap<String, u64>> {
    let mut ticks = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let named_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "postgres");
        if let (true, Some(used)) = (named_postgres, process_cpu_ticks(pid)) {
            ticks.insert(pid.to_owned(), used);
        }
    }
    (!ticks.is_empty()).then_some(ticks)
}

/// Who used the CPU during a timed part: the machine's busy and total ticks (all cores),
/// this process's, the worker processes' and the PostgreSQL server's.
struct CpuSample {
    machine: Option<(u64, u64)>,
    bench: Option<u64>,
    workers: Option<u64>,
    server: Option<std::collections::HashMap<String, u64>>,
}

impl CpuSample {
    fn take(env: &Env) -> CpuSample {
        let workers = env
            .workers
            .iter()
            .map(|w| process_cpu_ticks(&w.child.id().to_string()))
            .sum::<Option<u64>>()
            .filter(|_| !env.workers.is_empty());
        CpuSample {
            machine: cpu_times(),
            bench: process_cpu_ticks("self"),
            workers,
            server: env.schema.as_ref().and_then(|_| server_cpu_ticks()),
        }
    }

    /// The shares of all cores' time between `self` and `later`, in percent, as JSON
    /// fields: `cpu_busy_pct` (the whole machine) and, where measured, `bench_cpu_pct`,
    /// `workers_cpu_pct` and `server_cpu_pct`.
    fn shares_until(&self, later: &CpuSample) -> serde_json::Map<String, serde_json::Value> {
        let mut shares = serde_json::Map::new();
        let (Some((busy0, total0)), Some((busy1, total1))) = (self.machine, later.machine) else {
            return shares;
        };
        let total = (total1 - total0).max(1) as f64;
        let pct = |ticks: u64| json!((100.0 * ticks as f64 / total).round());
        shares.insert("cpu_busy_pct".into(), pct(busy1 - busy0));
        for (key, before, after) in [
            ("bench_cpu_pct", self.bench, later.bench),
            ("workers_cpu_pct", self.workers, later.workers),
        ] {
            if let (Some(before), Some(after)) = (before, after) {
                shares.insert(key.into(), pct(after.saturating_sub(before)));
            }
        }
        // The server's processes at the end, less what each had used at the start (one that
        // ended in between is not counted; one that started, all it used).
        if let (Some(before), Some(after)) = (&self.server, &later.server) {
            let used: u64 = after
                .iter()
                .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                .sum();
            shares.insert("server_cpu_pct".into(), pct(used));
        }
        shares
    }
}

/// Peak resident set size of this process in MiB.
fn peak_rss_mb() -> f64 {
    peak_rss_mb_of("/proc/self/status")
}

/// Peak resident set size (`VmHWM`) from a `/proc/PID/status` file, in MiB.
fn peak_rss_mb_of(status_file: &str) -> f64 {
    std::fs::read_to_string(status_file)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Env {
    _dir: Option<TempDir>,
    /// The in-process worker (SQLite).
    runtime: Option<Runtime>,
    /// The worker processes and the schema (PostgreSQL).
    workers: Vec<Worker>,
    schema: Option<PostgresStore>,
    client: Client,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A worker process serving a PostgreSQL schema until its stdin closes.
struct Worker {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn start(url: &str, schema: &str) -> Result<Worker, duractor::Error> {
        let exe = std::env::current_exe().map_err(duractor::Error::msg)?;
        let mut child = std::process::Command::new(exe)
            .args(["worker", url, schema])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(duractor::Error::msg)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| duractor::Error::msg("no stdout"))?;
        let mut worker = Worker {
            child,
            stdout: std::io::BufReader::new(stdout),
        };
        if worker.read_line().as_deref() != Some("ready") {
            let _ = worker.child.kill();
            return Err(duractor::Error::msg("a worker process did not start"));
        }
        Ok(worker)
    }

    fn read_line(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        Some(line.trim().to_owned())
    }

    /// Peak RSS in MiB (read before it stops).
    fn peak_rss_mb(&self) -> f64 {
        peak_rss_mb_of(&format!("/proc/{}/status", self.child.id()))
    }

    /// Closes its stdin (it shuts down), reads the number of turns it committed, reaps it.
    fn stop(mut self) -> Option<u64> {
        drop(self.child.stdin.take());
        let turns = self.read_line().and_then(|line| line.parse().ok());
        let _ = self.child.wait();
        turns
    }
}

/// `duractor-benches worker URL SCHEMA`: serves the schema until stdin closes.
async fn serve_worker(url: &str, schema: &str) -> Result<(), duractor::Error> {
    let store = PostgresStore::connect_with(
        url,
        PostgresStoreOptions {
            schema: schema.to_owned(),
            ..Default::default()
        },
    )
    .await?;
    let runtime = Runtime::builder(store).start().await?;
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await
    .map_err(duractor::Error::msg)?;
    let turns = runtime.metrics().turns;
    runtime.shutdown().await?;
    println!("{turns}");
    Ok(())
}

/// The store of one run, holding `prefill` finished instances, and its workers.
async fn env(
    synchronous: Synchronous,
    backend: &Backend,
    prefill: u32,
) -> Result<Env, duractor::Error> {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Backend::Postgres { url, workers } = backend {
        let schema = format!("bench_{}_{run}", std::process::id());
        let store = PostgresStore::connect_with(
            url,
            PostgresStoreOptions {
                schema: schema.clone(),
                ..Default::default()
            },
        )
        .await?;
        prefill_postgres(url, &schema, prefill).await?;
        if *workers == 0 {
            // The worker in this process, as an app that starts its own instances and waits
            // for them: starts are handed to it in memory and completions wake the waiter
            // in memory (what other engines' single-process harnesses measure).
            let runtime = Runtime::builder(store.clone()).start().await?;
            let client = runtime.client();
            return Ok(Env {
                _dir: None,
                runtime: Some(runtime),
                workers: Vec::new(),
                client,
                schema: Some(store),
            });
        }
        let workers = (0..*workers)
            .map(|_| Worker::start(url, &schema))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Env {
            _dir: None,
            runtime: None,
            workers,
            client: Client::new(store.clone()),
            schema: Some(store),
        });
    }
    let dir = std::env::temp_dir().join(format!(
        "duractor-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).map_err(duractor::Error::msg)?;
    let store = SqliteStore::open_with(
        dir.join("bench.db"),
        SqliteStoreOptions {
            synchronous,
            ..Default::default()
        },
    )
    .await?;
    prefill_sqlite(&dir.join("bench.db"), prefill).await?;
    let runtime = Runtime::builder(store).start().await?;
    let client = runtime.client();
    Ok(Env {
        _dir: Some(TempDir(dir)),
        runtime: Some(runtime),
        workers: Vec::new(),
        schema: None,
        client,
    })
}

/// What `--prefill N` puts in a store before a run, as a store in use holds it: `N`
/// finished instances of eight history rows each, and `N` messages no worker takes (leased
/// far ahead), then statistics. Measures what the store's statements cost on tables that
/// are not nearly empty (a plan that scans a table only shows there).
const PREFILL: [&str; 3] = [
    "INSERT INTO instances (instance_id, name, status, input, created_at, updated_at, history_len) \
     SELECT 'prefill-' || g, 'o', 'Completed', 'null', g, g, 8 FROM n",
    "INSERT INTO history (instance_id, idx, event) \
     SELECT 'prefill-' || g, i, '{}' FROM n, (SELECT 0 AS i UNION ALL SELECT 1 UNION ALL SELECT 2 \
       UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7) AS k",
    "INSERT INTO orch_queue (instance_id, visible_at, message, locked_by, locked_until) \
     SELECT 'prefill-' || g, 9000000000000, '{}', 'prefill', 9000000000000 FROM n",
];

/// [`PREFILL`] on the PostgreSQL schema `schema`.
async fn prefill_postgres(url: &str, schema: &str, n: u32) -> Result<(), duractor::Error> {
    use sqlx::Connection as _;
    if n == 0 {
        return Ok(());
    }
    let connect = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(duractor::Error::msg)?
        .options([("search_path", schema)]);
    let mut conn = sqlx::PgConnection::connect_with(&connect)
        .await
        .map_err(duractor::Error::msg)?;
    prefill::<sqlx::Postgres>(&mut conn, n, "$1")
        .await
        .map_err(duractor::Error::msg)
}

/// [`PREFILL`] on the SQLite file at `path`.
async fn prefill_sqlite(path: &std::path::Path, n: u32) -> Result<(), duractor::Error> {
    use sqlx::Connection as _;
    if n == 0 {
        return Ok(());
    }
    let connect = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut conn = sqlx::SqliteConnection::connect_with(&connect)
        .await
        .map_err(duractor::Error::msg)?;
    prefill::<sqlx::Sqlite>(&mut conn, n, "?1")
        .await
        .map_err(duractor::Error::msg)
}

/// Runs [`PREFILL`] for `n` instances on `conn`, then `ANALYZE`; `param` is how the database
/// spells the first parameter.
async fn prefill<DB>(conn: &mut DB::Connection, n: u32, param: &str) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    for fill in PREFILL {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {param}) \
             {fill}"
        )))
        .bind(i64::from(n))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query::<DB>("ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

impl Env {
    /// Stops the workers; returns the largest peak RSS of the worker processes and the turns
    /// each committed (PostgreSQL; `None` for a worker that did not report, e.g. crashed).
    async fn stop(self) -> Result<(Option<f64>, Vec<Option<u64>>), duractor::Error> {
        if let Some(runtime) = self.runtime {
            runtime.shutdown().await?;
        }
        let rss = self
            .workers
            .iter()
            .map(Worker::peak_rss_mb)
            .reduce(f64::max);
        let turns = self.workers.into_iter().map(Worker::stop).collect();
        if let Some(store) = self.schema {
            store.drop_schema().await?;
        }
        Ok((rss, turns))
    }
}

const WAIT: Duration = Duration::from_secs(600);

/// Measures FLOOR on the backend's database with its settings.
async fn measure_floor(
    synchronous: Synchronous,
    backend: &Backend,
) -> Result<floor::Floor, duractor::Error> {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let measured = match backend {
        Backend::Postgres { url, .. } => {
            floor::postgres(url, &format!("floor_{}_{run}", std::process::id())).await
        }
        Backend::Sqlite => {
            let dir =
                std::env::temp_dir().join(format!("duractor-floor-{}-{run}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(duractor::Error::msg)?;
            let _cleanup = TempDir(dir.clone());
            let options = SqliteStoreOptions {
                synchronous,
                ..Default::default()
            };
            floor::sqlite(&dir, options).await
        }
    };
    measured.map_err(|e| duractor::Error::msg(format!("FLOOR: {e}")))
}

async fn run_workload(
    name: &str,
    synchronous: Synchronous,
    backend: &Backend,
    prefill: u32,
) -> Result<serde_json::Value, duractor::Error> {
    let floor = measure_floor(synchronous, backend).await?;
    if name == "FLOOR" {
        return Ok(floor.to_json());
    }
    let result = run_measured(name, synchronous, backend, prefill).await?;
    Ok(in_floors(result, floor.single_ms))
}

/// Adds `floor_ms` and the workload's cost in floors to its result.
fn in_floors(mut result: serde_json::Value, floor_ms: f64) -> serde_json::Value {
    let Some(fields) = result.as_object_mut() else {
        return result;
    };
    let floors = |ms: f64| json!(((ms / floor_ms) * 10.0).round() / 10.0);
    if let Some(per_sec) = fields.get("per_sec").and_then(serde_json::Value::as_f64) {
        fields.insert("unit_floors".into(), floors(1000.0 / per_sec));
    }
    for (key, out) in [
        ("p50_ms", "p50_floors"),
        ("p99_ms", "p99_floors"),
        ("overhead_ms_each", "overhead_floors"),
    ] {
        if let Some(ms) = fields.get(key).and_then(serde_json::Value::as_f64) {
            fields.insert(out.into(), floors(ms));
        }
    }
    fields.insert(
        "floor_ms".into(),
        json!((floor_ms * 1000.0).round() / 1000.0),
    );
    result
}

async fn run_measured(
    name: &str,
    synchronous: Synchronous,
    backend: &Backend,
    prefill: u32,
) -> Result<serde_json::Value, duractor::Error> {
    let env = env(synchronous, backend, prefill).await?;
    let client = &env.client;
    let cpu_before = CpuSample::take(&env);
    let result = match name {
        "W1" => {
            let n = 100u64;
            let started = Instant::now();
            let id = client.start(W1Chain, n).await?;
            let status = client.wait_for_completion(&id, WAIT).await?;
            let wall = started.elapsed();
            let ok = status.output::<u64>().ok() == Some(n);
            json!({"n": n, "wall_ms": ms(wall), "per_sec": n as f64 / wall.as_secs_f64(), "ok": ok})
        }
        "W2" => {
            let n = 1000u64;
            let started = Instant::now();
            let id = client.start(W2FanOut, n).await?;
            let status = client.wait_for_completion(&id, WAIT).await?;
            let wall = started.elapsed();
            let ok = status.output::<u64>().ok() == Some(n * (n + 1) / 2);
            json!({"n": n, "wall_ms": ms(wall), "per_sec": n as f64 / wall.as_secs_f64(), "ok": ok})
        }
        "W3" => {
            let m = 1000u64;
            let started = Instant::now();
            let starts = (0..m).map(|i| {
                let client = client.clone();
                async move {
                    client
                        .start(HelloSequence, i)
                        .instance_id(format!("w3-{i}"))
                        .await
                }
            });
            futures_join_all(starts).await?;
            let statuses = wait_all(client, "w3-", m).await?;
            let wall = started.elapsed();
            let ok = statuses
                .iter()
                .all(|(i, status)| status.output::<u64>().ok() == Some(i + 3));
            json!({"n": m, "wall_ms": ms(wall), "per_sec": m as f64 / wall.as_secs_f64(), "ok": ok})
        }
        "W4" => {
            // 10,000 signals to 100 counters, sent by 1,000 concurrent senders (10 per
            // counter, each sending its 10 signals in order), then every counter read and
            // checked.
            let (signals, counters, senders) = (10_000u64, 100u64, 1_000u64);
            let started = Instant::now();
            let senders = (0..senders).map(|s| {
                let client = client.clone();
                let c = s % counters;
                async move {
                    for _ in 0..signals / senders {
                        client
                            .signal_entity::<Tally>(format!("c{c}"))
                            .add(c + 1)
                            .await?;
                    }
                    Ok::<_, duractor::Error>(())
                }
            });
            futures_join_all(senders).await?;
            let mut ok = true;
            for c in 0..counters {
                let expected = (c + 1) * (signals / counters);
                let deadline = Instant::now() + WAIT;
                loop {
                    let value = client
                        .entity_state::<Tally>(format!("c{c}"))
                        .await?
                        .map_or(0, |t| t.value);
                    if value == expected {
                        break;
                    }
                    if value > expected || Instant::now() > deadline {
                        ok = false;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let wall = started.elapsed();
            json!({"n": signals, "wall_ms": ms(wall), "per_sec": signals as f64 / wall.as_secs_f64(), "ok": ok})
        }
        "W5" => {
            let m = 10_000u64;
            let started = Instant::now();
            let starts = (0..m).map(|i| {
                let client = client.clone();
                async move {
                    client
                        .start(SleepOneSecond, i)
                        .instance_id(format!("w5-{i}"))
                        .await
                }
            });
            futures_join_all(starts).await?;
            let statuses = wait_all(client, "w5-", m).await?;
            let wall = started.elapsed();
            let ok = statuses
                .iter()
                .all(|(i, status)| status.output::<u64>().ok() == Some(*i));
            json!({"n": m, "wall_ms": ms(wall), "per_sec": m as f64 / wall.as_secs_f64(), "ok": ok})
        }
        "W6" => {
            let count = 200usize;
            let mut latencies = Vec::with_capacity(count);
            let mut starts = Vec::with_capacity(count);
            let mut ok = true;
            let started = Instant::now();
            for i in 0..count {
                let begin = Instant::now();
                let id = client.start(HelloSequence, i as u64).await?;
                starts.push(begin.elapsed());
                let status = client.wait_for_completion(&id, WAIT).await?;
                latencies.push(begin.elapsed());
                ok &= status.output::<u64>().ok() == Some(i as u64 + 3);
            }
            let wall = started.elapsed();
            latencies.sort();
            starts.sort();
            let pick =
                |of: &[Duration], q: f64| ms(of[((of.len() as f64 - 1.0) * q).round() as usize]);
            // `start_p50_ms`: how long `start` took (until the start was stored).
            json!({"n": count, "wall_ms": ms(wall), "per_sec": count as f64 / wall.as_secs_f64(),
                   "p50_ms": pick(&latencies, 0.5), "p99_ms": pick(&latencies, 0.99),
                   "start_p50_ms": pick(&starts, 0.5), "ok": ok})
        }
        "W7" => {
            let m = 1000u64;
            let started = Instant::now();
            let mut ids = Vec::with_capacity(m as usize);
            for i in 0..m {
                ids.push(client.start(HelloSequence, i).await?);
            }
            let start_phase = started.elapsed();
            let mut ok = true;
            for (i, id) in ids.iter().enumerate() {
                let status = client.wait_for_completion(id, WAIT).await?;
                ok &= status.output::<u64>().ok() == Some(i as u64 + 3);
            }
            let wall = started.elapsed();
            json!({"n": m, "wall_ms": ms(wall), "per_sec": m as f64 / wall.as_secs_f64(),
                   "start_phase_ms": ms(start_phase),
                   "start_ms_each": ms(start_phase) / m as f64, "ok": ok})
        }
        "W8" => {
            let n = 100u64;
            let started = Instant::now();
            let id = client.start(W8Timers, n).await?;
            let status = client.wait_for_completion(&id, WAIT).await?;
            let wall = started.elapsed();
            let ok = status.output::<u64>().ok() == Some(n);
            let overhead =
                ms((wall / u32::try_from(n).unwrap_or(u32::MAX)).saturating_sub(W8_TIMER));
            json!({"n": n, "wall_ms": ms(wall), "per_sec": n as f64 / wall.as_secs_f64(),
                   "overhead_ms_each": overhead, "ok": ok})
        }
        other => {
            return Err(duractor::Error::InvalidArgument(format!(
                "unknown workload {other}"
            )));
        }
    };
    let cpu_shares = cpu_before.shares_until(&CpuSample::take(&env));
    let (worker_rss, worker_turns) = env.stop().await?;
    let mut result = result;
    if let Some(fields) = result.as_object_mut() {
        fields.extend(cpu_shares);
    }
    if let (Some(rss), Some(fields)) = (worker_rss, result.as_object_mut()) {
        fields.insert("worker_rss_mb".into(), json!((rss * 10.0).round() / 10.0));
    }
    if let (false, Some(fields)) = (worker_turns.is_empty(), result.as_object_mut()) {
        fields.insert("worker_turns".into(), json!(worker_turns));
    }
    Ok(result)
}

/// Waits until the `m` instances `{prefix}0`..`{prefix}{m-1}` have all finished and returns
/// their statuses by number. Reads them in pages of 1,000 (a status read per instance, one
/// after the other, would add a round trip per instance to the measured time); while some
/// are still running, waits for the first of those to finish (woken by the store, not polled).
async fn wait_all(
    client: &Client,
    prefix: &str,
    m: u64,
) -> Result<Vec<(u64, duractor::InstanceStatus)>, duractor::Error> {
    loop {
        let mut statuses = Vec::with_capacity(m as usize);
        let mut after = None;
        loop {
            let page = client
                .list(duractor::store::InstanceQuery {
                    instance_id_prefix: Some(prefix.to_owned()),
                    limit: Some(1000),
                    after: after.take(),
                    ..Default::default()
                })
                .await?;
            let full = page.len() == 1000;
            after = page.last().map(|status| status.instance_id.clone());
            statuses.extend(page);
            if !full {
                break;
            }
        }
        if statuses.len() as u64 != m {
            return Err(duractor::Error::msg(format!(
                "{} instances named {prefix}*, expected {m}",
                statuses.len()
            )));
        }
        match statuses.iter().find(|status| !status.is_finished()) {
            Some(running) => {
                let id = running.instance_id.clone();
                client.wait_for_completion(&id, WAIT).await?;
            }
            None => {
                return statuses
                    .into_iter()
                    .map(|status| {
                        let number = status.instance_id[prefix.len()..]
                            .parse()
                            .map_err(duractor::Error::msg)?;
                        Ok((number, status))
                    })
                    .collect();
            }
        }
    }
}

/// Awaits all futures, failing on the first error.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Result<Vec<T>, duractor::Error>
where
    F: std::future::Future<Output = Result<T, duractor::Error>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.map_err(duractor::Error::msg)??);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let (Some(url), Some(schema)) = (args.get(2), args.get(3)) else {
            eprintln!("usage: duractor-benches worker POSTGRES_URL SCHEMA");
            std::process::exit(2);
        };
        if let Err(error) = serve_worker(url, schema).await {
            eprintln!("worker failed: {error}");
            std::process::exit(1);
        }
        return;
    }
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let (backend, durability, workers) = match (&options.backend, options.synchronous) {
        (Backend::Postgres { workers, .. }, _) => ("postgres", "synchronous_commit=on", *workers),
        (Backend::Sqlite, Synchronous::Normal) => ("sqlite", "wal+synchronous=normal", 1),
        (Backend::Sqlite, Synchronous::Full) => ("sqlite", "wal+synchronous=full", 1),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for workload in &options.workloads {
        let mut runs = Vec::new();
        for _ in 0..options.runs {
            let result = match run_workload(
                workload,
                options.synchronous,
                &options.backend,
                options.prefill,
            )
            .await
            {
                Ok(result) => result,
                Err(error) => {
                    eprintln!("{workload} failed: {error}");
                    json!({"ok": false, "error": error.to_string()})
                }
            };
            let mut line = json!({
                "system": "duractor", "backend": backend, "durability": durability,
                "workload": workload, "cores": cores, "workers": workers,
            });
            if options.prefill > 0
                && let Some(line) = line.as_object_mut()
            {
                line.insert("prefill".into(), json!(options.prefill));
            }
            if let (Some(line), Some(result)) = (line.as_object_mut(), result.as_object()) {
                line.extend(result.clone());
                line.insert(
                    "rss_mb".into(),
                    json!((peak_rss_mb() * 10.0).round() / 10.0),
                );
            }
            println!("{line}");
            runs.push(line);
        }
        if runs.len() > 1 {
            let mut summary = runs[0].clone();
            for key in [
                "wall_ms",
                "per_sec",
                "p50_ms",
                "p99_ms",
                "floor_ms",
                "unit_floors",
                "p50_floors",
                "p99_floors",
                "batched_per_sec",
                "cpu_busy_pct",
                "bench_cpu_pct",
                "workers_cpu_pct",
                "server_cpu_pct",
            ] {
                let mut values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
                if values.len() == runs.len() {
                    summary[key] = json!((median(&mut values) * 1000.0).round() / 1000.0);
                }
            }
            summary["ok"] = json!(runs.iter().all(|r| r["ok"] == true));
            summary["stat"] = json!("median");
            summary["runs"] = json!(runs.len());
            println!("{summary}");
        }
    }
}
