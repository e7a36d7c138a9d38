//! The command line, declared with clap: global options, one struct per command.
//!
//! The commands are the variants of [`Command`], each with its own argument struct.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::IfExists;
use crate::store::RuntimeStatus;

/// The app's command line (the binary's name and help are set at run time).
#[derive(Debug, Parser)]
#[command(
    about = "A duractor app: durable orchestrations and activities, with their workers, HTTP \
             management API and command-line client.",
    long_about = None,
    after_help = "Every command but `serve` and `run` is a client: it works next to a running \
                  `serve` on the same database.\n\
                  Exit codes: 0 success; 1 the command failed, or the instance ended Failed or \
                  Terminated; 2 usage error (bad arguments, invalid JSON, unknown orchestrator); \
                  3 timed out waiting (the instance is still running).",
    disable_version_flag = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// The database: `sqlite://path/to/file.db` (or a plain file path). Default: a SQLite
    /// file named after the program in the working directory.
    #[arg(long, global = true, env = "DURACTOR_DATABASE_URL", value_name = "URL")]
    pub(crate) database_url: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the workers and the HTTP management API until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Run one orchestration to the end in this process and print its output (JSON).
    Run(RunArgs),
    /// Start an orchestration instance; prints its id (or its output with --wait).
    Start(StartArgs),
    /// Show an instance's status.
    Status(StatusArgs),
    /// Show an instance's history, one event per line.
    History(HistoryArgs),
    /// Show an instance's activity calls in flight: attempt, worker, timeouts, last heartbeat.
    Activities(ActivitiesArgs),
    /// List instances, optionally filtered.
    List(ListArgs),
    /// Raise an external event to an instance (`ctx.wait_for_event(EVENT)` receives it).
    Raise(RaiseArgs),
    /// Raise an event to an instance, starting it first if it does not exist (prints
    /// whether it started it).
    SignalWithStart(SignalWithStartArgs),
    /// Terminate a pending, running or suspended instance.
    Terminate(TerminateArgs),
    /// Suspend a running instance: it runs nothing until resumed.
    Suspend(ReasonArgs),
    /// Resume a suspended instance.
    Resume(ReasonArgs),
    /// Rewind a failed instance: its failed calls run again.
    Rewind(ReasonArgs),
    /// Delete finished instances (status and history).
    Purge(PurgeArgs),
    /// List the registered orchestrators, activities and entities with their types.
    Functions(FunctionsArgs),
    /// Signal an entity: run operation OP with the input, one-way (the entity is created if new).
    Signal(SignalArgs),
    /// Show an entity's state.
    Entity(EntityArgs),
    /// List entities (by name and key prefix).
    Entities(EntitiesArgs),
    /// Show flow-controlled work: what runs and what waits, per activity and key.
    Flow(FlowArgs),
    /// Manage schedules: create, update, list, show, pause, resume, trigger, backfill, delete.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Replay instances' histories against this build's code: a pre-deploy check that no
    /// running instance would fail with a nondeterminism error (exit code 1 if one would).
    Replay(ReplayArgs),
}

impl Command {
    /// The command's name as typed.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Serve(_) => "serve",
            Command::Run(_) => "run",
            Command::Start(_) => "start",
            Command::Status(_) => "status",
            Command::History(_) => "history",
            Command::Activities(_) => "activities",
            Command::List(_) => "list",
            Command::Raise(_) => "raise",
            Command::SignalWithStart(_) => "signal-with-start",
            Command::Terminate(_) => "terminate",
            Command::Suspend(_) => "suspend",
            Command::Resume(_) => "resume",
            Command::Rewind(_) => "rewind",
            Command::Purge(_) => "purge",
            Command::Functions(_) => "functions",
            Command::Signal(_) => "signal",
            Command::Entity(_) => "entity",
            Command::Entities(_) => "entities",
            Command::Schedule(_) => "schedule",
            Command::Flow(_) => "flow",
            Command::Replay(_) => "replay",
        }
    }

    /// Whether the command runs a worker in this process.
    pub(crate) fn runs_worker(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Run(_))
    }
}

/// Settings of the worker that `serve` and `run` start.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// How many activities may run at once.
    #[arg(
        long,
        env = "DURACTOR_ACTIVITY_CONCURRENCY",
        value_name = "N",
        default_value_t = 256
    )]
    pub(crate) activity_concurrency: usize,

    /// The longest wait between looks for work from other processes (e.g. a CLI raising an
    /// event on SQLite), in milliseconds (after a look finds such work, the next come sooner).
    #[arg(
        long,
        env = "DURACTOR_POLL_INTERVAL_MS",
        value_name = "MS",
        default_value_t = 1000
    )]
    pub(crate) poll_interval_ms: u64,

    /// How long work a worker claimed stays locked to it without renewal, in seconds: when
    /// a worker dies, other workers on a PostgreSQL database take its instances over after
    /// this long (a restarted SQLite worker takes its own back at once).
    #[arg(long, env = "DURACTOR_LEASE_SECS", value_name = "S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) lease_secs: u64,
}

impl WorkerArgs {
    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,

    /// The address the HTTP API listens on (port 0 picks a free port; the address is printed
    /// as `listening on http://…`).
    #[arg(
        long,
        env = "DURACTOR_HTTP_BIND",
        value_name = "ADDR",
        default_value = "127.0.0.1:7071"
    )]
    pub(crate) bind: String,

    /// Require `Authorization: Bearer TOKEN` on every HTTP request except `GET /health`
    /// (an empty token is refused).
    #[arg(
        long,
        env = "DURACTOR_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub(crate) api_token: Option<String>,

    /// The URL clients reach the API at (e.g. `https://api.example.com/durable`): the links
    /// in responses start with it. Default: `http://` and the request's Host header.
    #[arg(long, env = "DURACTOR_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    pub(crate) public_url: Option<String>,

    /// Build the links in responses from a reverse proxy's Forwarded / X-Forwarded-Host /
    /// X-Forwarded-Proto headers (only behind a proxy that sets them on every request).
    #[arg(long, env = "DURACTOR_TRUST_FORWARDED_HEADERS")]
    pub(crate) trust_forwarded_headers: bool,

    /// The largest HTTP request body accepted, in bytes.
    #[arg(
        long,
        env = "DURACTOR_MAX_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 1 << 20
    )]
    pub(crate) max_body_bytes: usize,
}

/// How long to wait, shared by `run` and `start --wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Give up waiting after this many seconds (exit code 3; the instance goes on).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<f64>,
}

impl WaitArgs {
    pub(crate) fn timeout(&self) -> Result<Option<Duration>, String> {
        self.timeout
            .map(|secs| {
                Duration::try_from_secs_f64(secs).map_err(|_| {
                    format!("--timeout must be a positive number of seconds, not {secs}")
                })
            })
            .transpose()
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The orchestrator's registered name (see `functions`).
    pub(crate) name: String,

    /// The input, as JSON (default `null`, which `()` accepts).
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) input: String,

    /// The instance id (default: a new random id). 1-256 bytes; no control characters, no
    /// `/ \ ? # %`, not `.` or `..`, not starting with `@`.
    #[arg(long, value_name = "ID", value_parser = parse_instance_id)]
    pub(crate) id: Option<String>,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The orchestrator's registered name (see `functions`).
    pub(crate) name: String,

    /// The input, as JSON (default `null`, which `()` accepts).
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) input: String,

    /// The instance id (default: a new random id). 1-256 bytes; no control characters, no
    /// `/ \ ? # %`, not `.` or `..`, not starting with `@`.
    #[arg(long, value_name = "ID", value_parser = parse_instance_id)]
    pub(crate) id: Option<String>,

    /// What to do when an instance with this id exists: `reject` (the default: fail while it
    /// is pending or running, replace a finished one), `replace-if-failed`,
    /// `terminate-running` or `use-existing` (print its id, start nothing).
    #[arg(long, value_name = "POLICY", value_parser = parse_if_exists)]
    pub(crate) if_exists: Option<IfExists>,

    /// Wait until the instance finishes and print its output (a worker must be serving).
    #[arg(long)]
    pub(crate) wait: bool,

    #[command(flatten)]
    pub(crate) wait_args: WaitArgs,
}

fn parse_if_exists(text: &str) -> Result<IfExists, String> {
    text.parse().map_err(|e: crate::Error| e.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct SignalWithStartArgs {
    /// The orchestrator's registered name (see `functions`).
    pub(crate) name: String,

    /// The instance id.
    #[arg(value_parser = parse_instance_id)]
    pub(crate) id: String,

    /// The event name.
    pub(crate) event: String,

    /// The input if this starts the instance, as JSON.
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) input: String,

    /// The event data, as JSON.
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) data: String,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The instance id.
    pub(crate) id: String,

    /// Print JSON (the HTTP API's status format).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The instance id.
    pub(crate) id: String,

    /// Print JSON, one array of events (the HTTP API's history format).
    #[arg(long, conflicts_with = "export")]
    pub(crate) json: bool,

    /// Print the history as stored (a JSON array of events), for
    /// `duractor::testing::replay_history_file` in a test.
    #[arg(long)]
    pub(crate) export: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ActivitiesArgs {
    /// The instance id.
    pub(crate) id: String,

    /// Print JSON (the HTTP API's `GET /instances/{id}/activities` format).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The instance to replay.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) id: Option<String>,

    /// Replay every instance (of the statuses given with --status; default Pending, Running
    /// and Suspended: the ones a new build will run).
    #[arg(long)]
    pub(crate) all: bool,

    /// With --all: only instances with these statuses (repeat the flag or separate with commas).
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = parse_status, requires = "all")]
    pub(crate) statuses: Vec<RuntimeStatus>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only instances with these statuses (repeat the flag or separate with commas):
    /// Pending, Running, Completed, Failed, Terminated, Suspended.
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
    pub(crate) statuses: Vec<RuntimeStatus>,

    /// Only instance ids starting with this prefix.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,

    /// Only instances of this orchestrator.
    #[arg(long, value_name = "ORCHESTRATOR")]
    pub(crate) name: Option<String>,

    /// Only instances created at or after this time (RFC 3339, e.g. 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) created_after: Option<chrono::DateTime<chrono::Utc>>,

    /// Only instances created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) created_before: Option<chrono::DateTime<chrono::Utc>>,

    /// At most this many (ordered by instance id).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) limit: u32,

    /// Continue after this instance id (the next page).
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<String>,

    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RaiseArgs {
    /// The instance id.
    pub(crate) id: String,

    /// The event name.
    pub(crate) event: String,

    /// The event data, as JSON.
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) data: String,
}

#[derive(Debug, Args)]
pub(crate) struct TerminateArgs {
    /// The instance id.
    pub(crate) id: String,

    /// Why (recorded in history).
    #[arg(long, default_value = "terminated from the command line")]
    pub(crate) reason: String,

    /// Also terminate its running sub-orchestrations.
    #[arg(long)]
    pub(crate) cascade: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReasonArgs {
    /// The instance id.
    pub(crate) id: String,

    /// Why (recorded in history).
    #[arg(long, default_value = "from the command line")]
    pub(crate) reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The instance to delete (it must be finished). Without it, the filters choose.
    pub(crate) id: Option<String>,

    /// Only instances with these statuses: Completed, Failed, Terminated.
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
    pub(crate) statuses: Vec<RuntimeStatus>,

    /// Only instances created at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) created_after: Option<chrono::DateTime<chrono::Utc>>,

    /// Only instances created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) created_before: Option<chrono::DateTime<chrono::Utc>>,

    /// Delete every finished instance (required when no ID or filter is given).
    #[arg(long, conflicts_with = "id")]
    pub(crate) all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FunctionsArgs {
    /// Print JSON (full Rust type names).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SignalArgs {
    /// The entity's name (its type's registered name, e.g. `Counter`).
    pub(crate) entity: String,

    /// The entity's key.
    pub(crate) key: String,

    /// The operation (a method of the entity).
    pub(crate) operation: String,

    /// The operation's input, as JSON.
    #[arg(long, short, value_name = "JSON", default_value = "null")]
    pub(crate) input: String,

    /// Deliver at this time (RFC 3339, e.g. `2030-01-01T09:00:00Z`) instead of now.
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct EntityArgs {
    /// The entity's name.
    pub(crate) entity: String,

    /// The entity's key.
    pub(crate) key: String,

    /// Print JSON (the state with its lock and timestamps).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EntitiesArgs {
    /// Only entities of this name.
    #[arg(long)]
    pub(crate) name: Option<String>,

    /// Only keys starting with this (needs --name).
    #[arg(long, requires = "name")]
    pub(crate) prefix: Option<String>,

    /// Also entities without state.
    #[arg(long)]
    pub(crate) all: bool,

    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,

    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An instance id that follows the rule in [`crate::id`]: a bad one is a usage error.
fn parse_instance_id(s: &str) -> Result<String, String> {
    crate::id::validate_instance_id(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// An API token: an empty one would look like protection and give none.
fn parse_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "the API token is empty; give a token, or leave --api-token and \
                    DURACTOR_API_TOKEN unset to serve without authentication"
                .to_owned(),
        );
    }
    Ok(s.to_owned())
}

/// A public URL: `http(s)://host[:port][/path]`.
fn parse_public_url(s: &str) -> Result<String, String> {
    crate::http::normalize_public_url(s)
}

fn parse_status(s: &str) -> Result<RuntimeStatus, String> {
    s.parse::<RuntimeStatus>().map_err(|e| e.to_string())
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2025-01-31T12:00:00Z ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn statuses_can_be_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from([
            "app",
            "list",
            "--status",
            "running,Failed",
            "--status",
            "completed",
        ])
        .map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::List(list),
            ..
        }) = cli
        else {
            panic!("{cli:?}");
        };
        assert_eq!(
            list.statuses,
            [
                RuntimeStatus::Running,
                RuntimeStatus::Failed,
                RuntimeStatus::Completed
            ]
        );
    }
}

/// The `schedule` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Create a schedule that starts an orchestrator on a cron expression or an interval.
    Create(ScheduleSpecArgs),
    /// Replace a schedule's spec (its pause state stays).
    Update(ScheduleSpecArgs),
    /// List the schedules with their next run.
    List(ScheduleListArgs),
    /// Show a schedule: spec, next run, running and recent runs.
    Show(ScheduleShowArgs),
    /// Pause a schedule: its ticks do nothing until it is resumed.
    Pause(SchedulePauseArgs),
    /// Resume a paused schedule from its next tick.
    Resume(ScheduleIdArgs),
    /// Start a run now (under the overlap policy).
    Trigger(ScheduleIdArgs),
    /// Run every tick of a past time range.
    Backfill(ScheduleBackfillArgs),
    /// Delete a schedule (runs already started go on).
    Delete(ScheduleIdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleSpecArgs {
    /// The schedule's id.
    pub(crate) id: String,

    /// A cron expression: 5 fields (minute hour day month weekday) or 6 (a leading second),
    /// or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(
        long,
        value_name = "EXPR",
        required_unless_present = "every",
        conflicts_with = "every"
    )]
    pub(crate) cron: Option<String>,

    /// A fixed interval instead, e.g. 30s, 5m, 1h30m (at least 1s).
    #[arg(long, value_name = "DURATION")]
    pub(crate) every: Option<String>,

    /// The time zone the cron expression is read in (an IANA name; default UTC).
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub(crate) time_zone: Option<String>,

    /// Shifts an interval's ticks from multiples of it since the Unix epoch.
    #[arg(long, value_name = "DURATION", requires = "every")]
    pub(crate) offset: Option<String>,

    /// The orchestrator each tick starts.
    #[arg(long, value_name = "NAME")]
    pub(crate) start: String,

    /// Its input (JSON).
    #[arg(long, value_name = "JSON", default_value = "null")]
    pub(crate) input: String,

    /// Start each run up to this much after its tick.
    #[arg(long, value_name = "DURATION")]
    pub(crate) jitter: Option<String>,

    /// What a tick does while a run is still running.
    #[arg(long, value_name = "POLICY", default_value = "skip",
          value_parser = ["skip", "buffer-one", "allow-all", "terminate-previous"])]
    pub(crate) overlap: String,

    /// Run the ticks missed (while no worker ran) of this last span; default: only the
    /// latest missed one.
    #[arg(long, value_name = "DURATION")]
    pub(crate) catch_up_window: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleListArgs {
    /// Print JSON (the HTTP API's `GET /schedules` format).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleShowArgs {
    /// The schedule's id.
    pub(crate) id: String,

    /// Print JSON (the HTTP API's `GET /schedules/{id}` format).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleIdArgs {
    /// The schedule's id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct SchedulePauseArgs {
    /// The schedule's id.
    pub(crate) id: String,

    /// Why (shown with the schedule).
    #[arg(long)]
    pub(crate) note: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleBackfillArgs {
    /// The schedule's id.
    pub(crate) id: String,

    /// The range's start (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub(crate) from: String,

    /// The range's end, included.
    #[arg(long, value_name = "TIME")]
    pub(crate) to: String,
}

#[derive(Debug, Args)]
pub(crate) struct FlowArgs {
    /// Only these activities and orchestrators (repeat the flag or separate with commas;
    /// default: those with limits).
    #[arg(long, alias = "activity", value_delimiter = ',')]
    pub(crate) name: Vec<String>,

    /// Print JSON (the HTTP API's `GET /flow` format).
    #[arg(long)]
    pub(crate) json: bool,
}
