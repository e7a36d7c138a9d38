//! # duractor-sqlx
//!
//! Stores for duractor on sqlx: [`SqliteStore`], the embedded default (one file, one worker
//! process), and PostgreSQL for many workers on many machines.
//!
//! Both implement [`duractor::Store`] with runtime queries (the crate builds without a
//! database) and embedded migrations, run when the store is opened.
//!
//! ```no_run
//! # async fn run() -> Result<(), duractor::Error> {
//! let store = duractor_sqlx::SqliteStore::open("app.db").await?;
//! let runtime = duractor::Runtime::builder(store.clone()).start().await?;
//! # runtime.shutdown().await }
//! ```
//!
//! Where the time goes: a store call is a message to a writer task that commits all calls
//! waiting at that moment in one transaction (group commit), with the statements of the whole
//! batch merged into a few multi-row statements over JSON arrays. A turn therefore costs a
//! share of one commit, not one commit of its own.
#![warn(missing_docs)]

mod batch;
mod common;
mod error;
pub mod postgres;
mod rows;
pub mod sqlite;

pub use postgres::{PostgresStore, PostgresStoreOptions};
use std::sync::Arc;

pub use sqlite::{SqliteStore, SqliteStoreOptions, Synchronous};

/// Opens the store a database URL names, creating and migrating it as needed: what
/// `#[duractor::main]` calls with `--database-url` / `DURACTOR_DATABASE_URL`.
///
/// * `sqlite://path/to/file.db`, `sqlite:file.db` or a plain file path: a [`SqliteStore`]
///   (relative paths are relative to the working directory; `sqlite:///abs/file.db` is
///   absolute). Query parameters (`?mode=rwc`) are ignored.
/// * `postgres://user:password@host:port/database` (or `postgresql://`): a
///   [`PostgresStore`], with [`PostgresStoreOptions`] from these query parameters (the others
///   go to the driver, e.g. `sslmode`):
///   `schema` (default `duractor`; one schema per app or environment on a shared database),
///   `max_connections` (pool size, default 8), `max_batch` (most store calls per
///   transaction, default 1000).
///
/// ```no_run
/// # async fn run() -> Result<(), duractor::Error> {
/// let store = duractor_sqlx::open("sqlite://orders.db").await?;
/// // or: duractor_sqlx::open("postgres://app@db.internal/orders?schema=prod").await?;
/// let runtime = duractor::Runtime::builder_dyn(store).start().await?;
/// # runtime.shutdown().await }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn duractor::Store>, duractor::Error> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (url, options) = postgres_options(url)?;
        return Ok(Arc::new(PostgresStore::connect_with(&url, options).await?));
    }
    let path = if url.starts_with("sqlite:") {
        sqlite_path(url)
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(duractor::Error::InvalidArgument(format!(
            "unsupported database URL scheme `{scheme}://`; use `sqlite://path/to/file.db` \
             (or a plain file path) or `postgres://user@host/database`"
        )));
    } else {
        url
    };
    if path.is_empty() {
        return Err(duractor::Error::InvalidArgument(format!(
            "the database URL `{url}` names no file; use e.g. `sqlite://app.db`"
        )));
    }
    Ok(Arc::new(SqliteStore::open(path).await?))
}

/// Splits duractor's own query parameters off a PostgreSQL URL: the URL for the driver and
/// the store options.
fn postgres_options(url: &str) -> Result<(String, PostgresStoreOptions), duractor::Error> {
    let mut options = PostgresStoreOptions::default();
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |what: &str| {
            value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                duractor::Error::InvalidArgument(format!(
                    "`{key}={value}` in the database URL: {what} must be a positive number"
                ))
            })
        };
        match key {
            "schema" => options.schema = value.to_owned(),
            "max_connections" => options.max_connections = number("the pool size")?,
            "max_batch" => options.max_batch = number("the batch size")? as usize,
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, options))
}

/// The file path of a `sqlite:` URL, without query parameters.
fn sqlite_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duractor::store::redact_password;

    #[test]
    fn postgres_urls_carry_store_options() {
        let (url, options) =
            postgres_options("postgres://me@db/app?sslmode=disable&schema=prod&max_connections=4")
                .unwrap();
        assert_eq!(url, "postgres://me@db/app?sslmode=disable");
        assert_eq!(options.schema, "prod");
        assert_eq!(options.max_connections, 4);
        assert_eq!(options.max_batch, 1000);
        let (url, options) = postgres_options("postgres://me@db/app").unwrap();
        assert_eq!(
            (url.as_str(), options.schema.as_str()),
            ("postgres://me@db/app", "duractor")
        );
        let error = postgres_options("postgres://db/app?max_batch=0").unwrap_err();
        assert!(error.to_string().contains("max_batch=0"), "{error}");
    }

    #[test]
    fn sqlite_urls_name_files() {
        assert_eq!(sqlite_path("sqlite://app.db"), "app.db");
        assert_eq!(sqlite_path("sqlite:app.db"), "app.db");
        assert_eq!(sqlite_path("sqlite:///tmp/app.db?mode=rwc"), "/tmp/app.db");
    }

    #[test]
    fn passwords_are_not_echoed() {
        assert_eq!(
            redact_password("postgres://me:secret@db:5432/app"),
            "postgres://me:***@db:5432/app"
        );
        assert_eq!(redact_password("postgres://db/app"), "postgres://db/app");
    }

    #[tokio::test]
    async fn bad_urls_are_explained_without_echoing_passwords() {
        let error = async |url: &str| {
            open(url)
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // Nothing listens on port 1: the connection is refused.
        let refused = error("postgres://me:secret@127.0.0.1:1/app").await;
        assert!(refused.contains("connecting to PostgreSQL"), "{refused}");
        assert!(!refused.contains("secret"), "{refused}");
        let malformed = error("postgres://me:secret@localhost:notaport/app").await;
        assert!(malformed.contains("is not a PostgreSQL URL"), "{malformed}");
        assert!(!malformed.contains("secret"), "{malformed}");
        let unsupported = error("mysql://localhost/app").await;
        assert!(
            unsupported.contains("unsupported database URL scheme"),
            "{unsupported}"
        );
    }

    /// The sqlx error behind a store error, and whether the store said it may pass.
    fn driver_error(error: &duractor::Error) -> (&sqlx::Error, bool) {
        let duractor::Error::Store {
            source: Some(source),
            transient,
            ..
        } = error
        else {
            panic!("not a store error with a source: {error:?}")
        };
        let sqlx = source.get().downcast_ref::<sqlx::Error>();
        let sqlx = sqlx.unwrap_or_else(|| panic!("{source:?}"));
        // The standard walk down `source()` finds the same error.
        let found = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .find_map(|e| e.downcast_ref::<sqlx::Error>());
        assert!(found.is_some_and(|found| std::ptr::eq(found, sqlx)));
        (sqlx, *transient)
    }

    #[tokio::test]
    async fn store_errors_keep_the_driver_error_as_their_source() {
        // Nothing listens on port 1: refused, which may pass (the server may be starting).
        let refused = open("postgres://me@127.0.0.1:1/app").await.err().unwrap();
        let (source, transient) = driver_error(&refused);
        assert!(matches!(source, sqlx::Error::Io(_)), "{source:?}");
        assert!(transient);
        assert!(
            refused.to_string().ends_with(&source.to_string()),
            "{refused}"
        );
        // A file in a directory that does not exist: SQLite cannot open it, and will not.
        let missing = std::env::temp_dir().join("duractor-no-such-directory/app.db");
        let unopened = SqliteStore::open(&missing).await.err().unwrap();
        let (source, transient) = driver_error(&unopened);
        assert!(matches!(source, sqlx::Error::Database(_)), "{source:?}");
        assert!(!transient);
    }
}
