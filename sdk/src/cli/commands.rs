//! Runs a parsed command: `serve` and `run` start a worker, the others act as clients.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::{
    ActivitiesArgs, Command, FunctionsArgs, HistoryArgs, ListArgs, PurgeArgs, RaiseArgs,
    ReasonArgs, ReplayArgs, RunArgs, ServeArgs, SignalWithStartArgs, StartArgs, StatusArgs,
    TerminateArgs, WorkerArgs,
};
use super::entities;
use super::output::{self, CliError, CliResult, Progress, print_json};
use super::schedules;
use super::{App, EXIT_TIMEOUT, OpenStore};
use crate::client::{Client, IfExists, InstanceStatus, ListQuery, PurgeQuery};
use crate::error::Error;
use crate::http::view::{self, FunctionsView, StatusView};
use crate::http::{HttpApi, HttpOptions};
use crate::payload::Payload;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeBuilder};
use crate::store::redact_password;
use crate::store::{RuntimeStatus, Store};

/// Runs `command` and prints what went wrong, if anything.
pub(super) async fn run(command: Command, mut app: App, open: OpenStore) -> ExitCode {
    let result = match open(app.database_url.clone()).await {
        Ok(store) => dispatch(command, &mut app, store).await,
        Err(error) => Err(CliError::failure(format!(
            "cannot open the database `{}`: {error}",
            redact_password(&app.database_url)
        ))),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}

async fn dispatch(command: Command, app: &mut App, store: Arc<dyn Store>) -> CliResult {
    match command {
        Command::Serve(args) => serve(args, app, store).await,
        Command::Run(args) => run_one(args, app, store).await,
        Command::Start(args) => start(args, app, Client::new_dyn(store)).await,
        Command::Status(args) => status(args, Client::new_dyn(store)).await,
        Command::History(args) => history(args, Client::new_dyn(store)).await,
        Command::Activities(args) => activities(args, Client::new_dyn(store)).await,
        Command::List(args) => list(args, Client::new_dyn(store)).await,
        Command::Raise(args) => raise(args, Client::new_dyn(store)).await,
        Command::SignalWithStart(args) => signal_with_start(args, app_client(store)).await,
        Command::Terminate(args) => terminate(args, Client::new_dyn(store)).await,
        Command::Suspend(args) => suspend(args, Client::new_dyn(store)).await,
        Command::Resume(args) => resume(args, Client::new_dyn(store)).await,
        Command::Rewind(args) => rewind(args, Client::new_dyn(store)).await,
        Command::Purge(args) => purge(args, Client::new_dyn(store)).await,
        Command::Functions(args) => functions(args),
        Command::Signal(args) => entities::signal(args, app_client(store)).await,
        Command::Entity(args) => entities::entity(args, app_client(store)).await,
        Command::Entities(args) => entities::list(args, app_client(store)).await,
        Command::Schedule(command) => schedules::run(command, app_client(store)).await,
        Command::Flow(args) => schedules::flow(args, app_client(store)).await,
        Command::Replay(args) => replay(args, Client::new_dyn(store)).await,
    }
}

/// The runtime builder for `serve` and `run`: flags first, then the user's setup.
fn worker(args: &WorkerArgs, app: &mut App, store: Arc<dyn Store>) -> RuntimeBuilder {
    let builder = Runtime::builder_dyn(store)
        .activity_concurrency(args.activity_concurrency)
        .poll_interval(args.poll_interval())
        .lease_duration(args.lease());
    app.apply(builder)
}

async fn start_worker(builder: RuntimeBuilder, app: &App, hint: &str) -> Result<Runtime, CliError> {
    builder.start().await.map_err(|error| {
        let hint = match error {
            Error::InvalidArgument(_) => hint,
            _ => "",
        };
        CliError::failure(format!(
            "cannot start a worker on `{}`: {error}{hint}",
            redact_password(&app.database_url)
        ))
    })
}

async fn serve(args: ServeArgs, app: &mut App, store: Arc<dyn Store>) -> CliResult {
    let builder = worker(&args.worker, app, store);
    let runtime = start_worker(builder, app, "").await?;
    let options = HttpOptions {
        bind: args.bind,
        api_token: args.api_token,
        max_body_bytes: args.max_body_bytes,
        public_url: args.public_url,
        trust_forwarded_headers: args.trust_forwarded_headers,
        ..HttpOptions::default()
    };
    let api = match HttpApi::start(&runtime, options).await {
        Ok(api) => api,
        Err(error) => {
            let _ = runtime.shutdown().await;
            return Err(CliError::failure(format!(
                "{error}; choose another address with --bind or DURACTOR_HTTP_BIND"
            )));
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        for addr in api.local_addrs() {
            let _ = writeln!(stdout, "listening on http://{addr}");
        }
        let _ = stdout.flush();
    }
    tracing::info!(
        worker = runtime.worker_id(),
        database = %redact_password(&app.database_url),
        "serving; stop with Ctrl-C or SIGTERM"
    );
    shutdown_signal().await;
    tracing::info!("stopping: finishing requests and running activities");
    api.stop().await;
    runtime.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if result.is_err() {
                        let _ = terminate.recv().await;
                    }
                }
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn run_one(args: RunArgs, app: &mut App, store: Arc<dyn Store>) -> CliResult {
    let timeout = args.wait.timeout().map_err(CliError::usage)?;
    let builder = worker(&args.worker, app, store);
    let hint = format!(
        " (to run `{}` on the worker that holds this database, use `{} start {} --wait`)",
        args.name, app.bin_name, args.name
    );
    let runtime = start_worker(builder, app, &hint).await?;
    let client = runtime.client();
    let outcome = async {
        let mut start = client.start_by_name(&args.name, &args.input);
        if let Some(id) = &args.id {
            start = start.instance_id(id.clone());
        }
        let id = start.await?;
        eprintln!("started instance {id} of `{}`", args.name);
        report_outcome(&client, &id, timeout, app, true).await
    }
    .await;
    if !runtime.wait_idle(SETTLE_TIMEOUT).await {
        tracing::info!("stopping with work queued; the next worker on this database runs it");
    }
    if let Err(error) = runtime.shutdown().await {
        tracing::warn!(%error, "stopping the worker failed");
    }
    outcome
}

/// A client of the app's database that knows all of the app's functions.
fn app_client(store: Arc<dyn Store>) -> Client {
    Client::new_dyn(store).with_complete_registry()
}

/// How long `run` waits, after its instance finished, for the messages it left behind
/// (entity signals, lock releases), so the next command sees them applied.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

async fn start(args: StartArgs, app: &App, client: Client) -> CliResult {
    let timeout = args.wait_args.timeout().map_err(CliError::usage)?;
    let mut start = client.start_by_name(&args.name, &args.input);
    if let Some(id) = &args.id {
        start = start.instance_id(id.clone());
    }
    if let Some(policy) = args.if_exists {
        start = start.if_exists(policy);
    }
    let id = start.await?;
    // `use-existing` may have started nothing: the answer does not say which.
    let started = if args.if_exists == Some(IfExists::UseExisting) {
        "started (or kept the existing)"
    } else {
        "started"
    };
    if !args.wait {
        println!("{id}");
        eprintln!(
            "{started} instance {id} of `{}`; follow it with `{} status {id}`",
            args.name, app.bin_name
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{started} instance {id} of `{}`", args.name);
    report_outcome(&client, &id, timeout, app, false).await
}

/// Waits for the instance to finish (showing progress), prints its output on stdout, and
/// turns how it ended into the exit code.
async fn report_outcome(
    client: &Client,
    id: &str,
    timeout: Option<Duration>,
    app: &App,
    worker_here: bool,
) -> CliResult {
    let started = Instant::now();
    let status = wait_with_progress(client, id, timeout, app, worker_here).await?;
    let took = started.elapsed();
    match status.status {
        RuntimeStatus::Completed => {
            let output = status.output.as_ref().map_or("null", Payload::as_str);
            println!("{output}");
            eprintln!("instance {id} Completed in {}", human(took));
            Ok(ExitCode::SUCCESS)
        }
        RuntimeStatus::Failed => {
            let why = status
                .failure
                .as_ref()
                .map(output::failure_chain)
                .unwrap_or_default();
            Err(CliError::failure(format!("instance {id} Failed: {why}")))
        }
        other => Err(CliError::failure(format!("instance {id} ended {other}"))),
    }
}

/// Waits for the instance to finish, reporting progress on stderr.
async fn wait_with_progress(
    client: &Client,
    id: &str,
    timeout: Option<Duration>,
    app: &App,
    worker_here: bool,
) -> Result<InstanceStatus, CliError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut next_report = Duration::from_secs(2);
    loop {
        let elapsed = started.elapsed();
        let mut step = next_report.saturating_sub(elapsed);
        if let Some(timeout) = timeout {
            step = step.min(timeout.saturating_sub(elapsed));
        }
        match client
            .wait_for_completion(id, step.max(Duration::from_millis(1)))
            .await
        {
            Ok(status) => {
                progress.finish();
                return Ok(status);
            }
            Err(Error::Timeout { .. }) => {
                let status = client.status(id).await?;
                let waited = started.elapsed();
                if timeout.is_some_and(|timeout| waited >= timeout) {
                    progress.finish();
                    return Err(CliError {
                        code: EXIT_TIMEOUT,
                        message: format!(
                            "timed out after {} waiting for instance {id}; it is still {} \
                             (check it later with `{} status {id}`)",
                            human(waited),
                            status.status,
                            app.bin_name
                        ),
                    });
                }
                let hint = if status.status == RuntimeStatus::Pending && !worker_here {
                    format!(
                        "no worker has picked it up yet: is `{} serve` running on this database?",
                        app.bin_name
                    )
                } else {
                    String::new()
                };
                progress.report(&status, waited, &hint);
                next_report = waited + progress.every();
            }
            Err(error) => {
                progress.finish();
                return Err(error.into());
            }
        }
    }
}

fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

async fn status(args: StatusArgs, client: Client) -> CliResult {
    let status = client.status(&args.id).await?;
    if args.json {
        print_json(&StatusView::new(status, true))?;
    } else {
        print!("{}", output::status(&status));
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(args: HistoryArgs, client: Client) -> CliResult {
    let events = client.history(&args.id).await?;
    if args.export {
        print_json(&events)?;
        return Ok(ExitCode::SUCCESS);
    }
    let events = view::history(&events, true);
    if args.json {
        print_json(&events)?;
    } else {
        print!("{}", output::history(&events));
    }
    Ok(ExitCode::SUCCESS)
}

async fn activities(args: ActivitiesArgs, client: Client) -> CliResult {
    let items = client.activities(&args.id).await?;
    if args.json {
        let views = view::activities(&items);
        print_json(&views)?;
    } else if items.is_empty() {
        eprintln!("no activity calls in flight");
    } else {
        print!("{}", output::activities(&items));
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs, client: Client) -> CliResult {
    let limit = args.limit.clamp(1, 10_000);
    let mut instances = client
        .list(ListQuery {
            statuses: args.statuses,
            instance_id_prefix: args.prefix,
            name: args.name,
            created_from: args.created_after,
            created_to: args.created_before,
            limit: Some(limit + 1),
            after: args.after,
        })
        .await?;
    let more = instances.len() > limit as usize;
    instances.truncate(limit as usize);
    let next = more
        .then(|| instances.last().map(|i| i.instance_id.clone()))
        .flatten();
    if args.json {
        let views: Vec<StatusView> = instances
            .into_iter()
            .map(|status| StatusView::new(status, false))
            .collect();
        print_json(&views)?;
    } else if instances.is_empty() {
        eprintln!("no instances");
    } else {
        let mut rows = vec![vec![
            "INSTANCE".to_owned(),
            "NAME".to_owned(),
            "STATUS".to_owned(),
            "CREATED".to_owned(),
            "UPDATED".to_owned(),
        ]];
        rows.extend(instances.iter().map(|i| {
            vec![
                i.instance_id.clone(),
                i.name.clone(),
                i.status.to_string(),
                output::time(i.created_at),
                output::time(i.updated_at),
            ]
        }));
        print!("{}", output::table(&rows));
    }
    if let Some(next) = next {
        eprintln!("more instances: list the next page with --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn raise(args: RaiseArgs, client: Client) -> CliResult {
    let data = Payload::from_json(args.data.as_str()).map_err(|e| {
        Error::invalid_payload(
            format!("data of event `{}` (not valid JSON)", args.event),
            e,
        )
    })?;
    let status = client.status(&args.id).await?;
    if status.is_finished() {
        return Err(CliError::failure(format!(
            "instance {} is {}: it can no longer receive events",
            args.id, status.status
        )));
    }
    client.raise_event(&args.id, &args.event, &data).await?;
    println!("raised event `{}` to instance {}", args.event, args.id);
    Ok(ExitCode::SUCCESS)
}

async fn signal_with_start(args: SignalWithStartArgs, client: Client) -> CliResult {
    let data = Payload::from_json(args.data.as_str()).map_err(|e| {
        Error::invalid_payload(
            format!("data of event `{}` (not valid JSON)", args.event),
            e,
        )
    })?;
    let started = client
        .signal_with_start_by_name(&args.name, &args.input, &args.id, &args.event, data)
        .await?;
    let how = if started {
        "started it and raised"
    } else {
        "raised"
    };
    println!("{how} event `{}` to instance {}", args.event, args.id);
    Ok(ExitCode::SUCCESS)
}

async fn terminate(args: TerminateArgs, client: Client) -> CliResult {
    client
        .terminate(&args.id, &args.reason)
        .cascade(args.cascade)
        .await?;
    println!(
        "terminating instance {} (it ends at its next turn)",
        args.id
    );
    Ok(ExitCode::SUCCESS)
}

async fn suspend(args: ReasonArgs, client: Client) -> CliResult {
    client.suspend(&args.id, &args.reason).await?;
    println!("suspending instance {}", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn resume(args: ReasonArgs, client: Client) -> CliResult {
    client.resume(&args.id, &args.reason).await?;
    println!("resuming instance {}", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn rewind(args: ReasonArgs, client: Client) -> CliResult {
    client.rewind(&args.id, &args.reason).await?;
    println!("rewinding instance {}: its failed calls run again", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: PurgeArgs, client: Client) -> CliResult {
    if let Some(id) = &args.id {
        if !args.statuses.is_empty()
            || args.created_after.is_some()
            || args.created_before.is_some()
        {
            return Err(CliError::usage(
                "give either an instance id or filters (--status, --created-after, --created-before), not both",
            ));
        }
        if !client.purge(id).await? {
            return Err(Error::InstanceNotFound(id.clone()).into());
        }
        println!("purged instance {id}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(status) = args.statuses.iter().find(|s| !s.is_terminal()) {
        return Err(CliError::usage(format!(
            "only finished instances can be purged, so --status cannot be {status}; use Completed, Failed or Terminated"
        )));
    }
    let filtered =
        !args.statuses.is_empty() || args.created_after.is_some() || args.created_before.is_some();
    if !filtered && !args.all {
        return Err(CliError::usage(
            "say what to purge: an instance id, --status, --created-after/--created-before, or --all for every finished instance",
        ));
    }
    let purged = client
        .purge_instances(&PurgeQuery {
            instance_id: None,
            statuses: args.statuses,
            created_from: args.created_after,
            created_to: args.created_before,
        })
        .await?;
    println!(
        "purged {purged} instance{}",
        if purged == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Replays each chosen instance's history against this build's orchestrators; prints one
/// line per instance and fails (exit code 1) if any would not replay.
async fn replay(args: ReplayArgs, client: Client) -> CliResult {
    let ids = match args.id {
        Some(id) => vec![id],
        None => {
            let statuses = if args.statuses.is_empty() {
                vec![
                    RuntimeStatus::Pending,
                    RuntimeStatus::Running,
                    RuntimeStatus::Suspended,
                ]
            } else {
                args.statuses
            };
            let mut ids = Vec::new();
            let mut after = None;
            loop {
                let page = client
                    .list(ListQuery {
                        statuses: statuses.clone(),
                        limit: Some(1_000),
                        after: after.clone(),
                        ..ListQuery::default()
                    })
                    .await?;
                after = page.last().map(|i| i.instance_id.clone());
                let full = page.len() == 1_000;
                ids.extend(page.into_iter().map(|i| i.instance_id));
                if !full {
                    break;
                }
            }
            ids
        }
    };
    let registry = Registry::global();
    let mut failed = 0_usize;
    for id in &ids {
        let history = client.history(id).await?;
        match replay_one(&registry, id, &history) {
            Ok(name) => println!("ok      {id}  ({name}, {} events)", history.len()),
            Err(why) => {
                failed += 1;
                println!("FAILED  {id}  {why}");
            }
        }
    }
    match failed {
        0 => {
            eprintln!("{} instance(s) replay against this build", ids.len());
            Ok(ExitCode::SUCCESS)
        }
        n => Err(CliError::failure(format!(
            "{n} of {} instance(s) would not replay against this build: deploying it would fail them",
            ids.len()
        ))),
    }
}

/// Replays one history; the orchestrator's name when it replays, why not otherwise.
fn replay_one(
    registry: &Registry,
    id: &str,
    history: &[crate::history::Event],
) -> Result<String, String> {
    let name = crate::history::orchestrator_of(history)
        .ok_or("its history has no ExecutionStarted event (not started yet, or an entity)")?;
    let entry = registry.get_orchestrator(name).map_err(|e| e.to_string())?;
    crate::orchestration::check_history(entry, id, history)
        .map(|()| name.to_owned())
        .map_err(|failure| failure.to_string())
}

fn functions(args: FunctionsArgs) -> CliResult {
    let registry = Registry::global();
    let functions = FunctionsView::new(
        &registry,
        &registry.declared_flow_limits(),
        &registry.declared_orchestrator_flow_limits(),
    );
    if args.json {
        print_json(&functions)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "KIND".to_owned(),
        "NAME".to_owned(),
        "INPUT".to_owned(),
        "OUTPUT".to_owned(),
    ]];
    for (kind, list) in [
        ("orchestrator", &functions.orchestrators),
        ("activity", &functions.activities),
        ("entity operation", &functions.entity_operations),
    ] {
        rows.extend(list.iter().map(|f| {
            let name = if f.version.is_empty() {
                f.name.to_owned()
            } else {
                format!("{} (version {})", f.name, f.version)
            };
            vec![
                kind.to_owned(),
                name,
                view::short_type_name(f.input_type),
                view::short_type_name(f.output_type),
            ]
        }));
    }
    print!("{}", output::table(&rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn database_passwords_stay_out_of_messages() {
        assert_eq!(
            redact_password("postgres://me:pw@db/app"),
            "postgres://me:***@db/app"
        );
        assert_eq!(redact_password("sqlite://app.db"), "sqlite://app.db");
    }
}
