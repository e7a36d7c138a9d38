//! The command line of an app made with `#[duractor::main]`: `serve`, `run`, `start`,
//! `status`, `history`, `list`, `raise`, `terminate`, `suspend`, `resume`, `rewind`, `purge`,
//! `functions`, and for entities `signal`, `entity`, `entities`.
//!
//! ```text
//! myapp serve                              # workers + HTTP API on ./myapp.db
//! myapp run hello_cities                   # run one orchestration here, print its output
//! myapp start approval --input '{"amount": 1200}' --id order-42
//! myapp raise order-42 approval --data '{"approved": true}'
//! myapp status order-42
//! myapp signal Counter visits add --input 5
//! myapp entity Counter visits
//! ```
//!
//! `serve` and `run` start a worker in this process; every other command is a client of the
//! store, and works while a `serve` runs on the same database (a SQLite file allows one worker
//! process and any number of clients; a PostgreSQL database any number of both).
//!
//! Configuration comes from flags, then the environment: `--database-url` /
//! `DURACTOR_DATABASE_URL` (default: `sqlite://<program name>.db` in the working directory),
//! `--activity-concurrency` / `DURACTOR_ACTIVITY_CONCURRENCY`, `--poll-interval-ms` /
//! `DURACTOR_POLL_INTERVAL_MS`, `--lease-secs` / `DURACTOR_LEASE_SECS`, `--bind` / `DURACTOR_HTTP_BIND` (default `127.0.0.1:7071`),
//! `--api-token` / `DURACTOR_API_TOKEN` (an empty one is a usage error), `--public-url` /
//! `DURACTOR_PUBLIC_URL`, `--trust-forwarded-headers` / `DURACTOR_TRUST_FORWARDED_HEADERS`,
//! `--max-body-bytes` / `DURACTOR_MAX_BODY_BYTES`.
//!
//! Exit codes: 0 success; 1 the command failed, or the instance ended Failed or Terminated;
//! 2 usage error (bad arguments such as an `--id` that breaks the rules of [`crate::id`],
//! invalid JSON or JSON that does not fit, unknown orchestrator, entity or operation); 3 timed
//! out waiting (the instance is still running).
//!
//! Where things live: `args` declares the command line, `commands` runs it, with the
//! entity commands in `entities`; `output` prints tables and progress.

mod args;
mod commands;
mod entities;
mod output;
mod schedules;

use std::any::Any;
use std::fmt;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use std::sync::Arc;

use crate::error::Error;
use crate::handles::LocalBoxFuture;
use crate::runtime::RuntimeBuilder;
use crate::store::Store;

/// Exit code: the command failed, or the instance ended Failed or Terminated.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad arguments, invalid JSON input, unknown orchestrator, entity or operation.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a wait timed out; the instance is still running.
pub const EXIT_TIMEOUT: u8 = 3;

type Configure = Box<dyn FnOnce(RuntimeBuilder) -> RuntimeBuilder>;

/// The app's setup, handed to the body of `#[duractor::main] async fn main(app: &mut App)`.
///
/// The body runs after the command line is parsed and before the command runs: it can share
/// clients with activities, tune the runtime, or install its own tracing subscriber.
///
/// ```no_run
/// use duractor::prelude::*;
///
/// struct Mailer; // e.g. an SMTP client
///
/// #[duractor::main]
/// async fn main(app: &mut duractor::App) {
///     if app.runs_worker() {
///         app.with_shared(Mailer); // activities get it with `ctx.shared::<Mailer>()`
///     }
/// }
/// ```
///
/// Tracing: unless the body installed a global subscriber itself (or called
/// [`default_tracing(false)`](Self::default_tracing)), the app logs to stderr with
/// `RUST_LOG` filtering (default `info` for `serve`, `warn` otherwise).
pub struct App {
    bin_name: String,
    command: &'static str,
    runs_worker: bool,
    database_url: String,
    configure: Vec<Configure>,
    default_tracing: bool,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("bin_name", &self.bin_name)
            .field("command", &self.command)
            .field("database_url", &self.database_url)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The program's name (used for the default database file and in help).
    pub fn bin_name(&self) -> &str {
        &self.bin_name
    }

    /// The command being run: `"serve"`, `"run"`, `"start"`, `"status"`, …
    pub fn command(&self) -> &str {
        self.command
    }

    /// Whether this command starts a worker (`serve`, `run`): the time to build what
    /// activities need. Client commands (`status`, `raise`, …) run no activities.
    pub fn runs_worker(&self) -> bool {
        self.runs_worker
    }

    /// The database URL the app opens.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Adjusts the runtime builder before the worker starts (`serve`, `run`), after the
    /// command-line settings were applied.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn setup(app: &mut duractor::App) {
    /// app.configure_runtime(|builder| builder.idle_unload_after(Duration::from_secs(120)));
    /// # }
    /// ```
    pub fn configure_runtime(
        &mut self,
        configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder + 'static,
    ) -> &mut Self {
        self.configure.push(Box::new(configure));
        self
    }

    /// Shares a value with every activity ([`ActivityContext::shared`](crate::ActivityContext::shared)):
    /// [`RuntimeBuilder::with_shared`] for the worker this command starts.
    pub fn with_shared<T: Any + Send + Sync>(&mut self, value: T) -> &mut Self {
        self.configure_runtime(move |builder| builder.with_shared(value))
    }

    /// Whether to install duractor's tracing subscriber (stderr, `RUST_LOG`) when the body of
    /// `main` did not install one (default `true`). `false` logs nothing.
    pub fn default_tracing(&mut self, enabled: bool) -> &mut Self {
        self.default_tracing = enabled;
        self
    }

    fn install_default_tracing(&self) {
        if !self.default_tracing || tracing::dispatcher::has_been_set() {
            return;
        }
        let default = if self.command == "serve" {
            "info"
        } else {
            "warn"
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }

    pub(crate) fn apply(&mut self, mut builder: RuntimeBuilder) -> RuntimeBuilder {
        for configure in self.configure.drain(..) {
            builder = configure(builder);
        }
        builder
    }
}

/// Opens the store a database URL names (the generated main's `store = ..` function).
#[doc(hidden)]
pub type OpenStoreFn = fn(String) -> LocalBoxFuture<'static, Result<Arc<dyn Store>, Error>>;

/// The body of the user's `main`, boxed.
#[doc(hidden)]
pub type SetupFn = for<'a> fn(&'a mut App) -> LocalBoxFuture<'a, Result<(), String>>;

pub(crate) use OpenStoreFn as OpenStore;

/// What the body of `#[duractor::main] async fn main` may return.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`#[duractor::main]` functions return `()` or `Result<(), E>` where `E: Display`, found `{Self}`",
    label = "return `()` or a `Result<(), E>`",
    note = "an error returned by `main` is printed and the program exits with code 1"
)]
pub trait MainOutput {
    /// The result as the generated main reports it.
    fn into_main_result(self) -> Result<(), String>;
}

impl MainOutput for () {
    fn into_main_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> MainOutput for Result<(), E> {
    fn into_main_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:#}"))
    }
}

/// The generated `fn main`: parses the command line, runs the body of the user's `main` (its
/// setup), opens the store with `open`, runs the command.
#[doc(hidden)]
pub fn run_main(bin_name: Option<&'static str>, open: OpenStoreFn, setup: SetupFn) -> ExitCode {
    let bin_name = bin_name
        .map(str::to_owned)
        .or_else(|| {
            std::env::current_exe().ok().and_then(|exe| {
                exe.file_stem()
                    .and_then(|stem| stem.to_str())
                    .map(str::to_owned)
            })
        })
        .unwrap_or_else(|| "duractor".to_owned());
    let command = args::Cli::command()
        .name(bin_name.clone())
        .bin_name(bin_name.clone());
    let cli = match command
        .try_get_matches()
        .and_then(|matches| args::Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        let database_url = cli
            .database_url
            .clone()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| format!("sqlite://{bin_name}.db"));
        let mut app = App {
            bin_name,
            command: cli.command.name(),
            runs_worker: cli.command.runs_worker(),
            database_url,
            configure: Vec::new(),
            default_tracing: true,
        };
        if let Err(message) = setup(&mut app).await {
            app.install_default_tracing();
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
        app.install_default_tracing();
        commands::run(cli.command, app, open).await
    })
}
