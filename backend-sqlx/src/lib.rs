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

mod batch;
mod common;
pub mod postgres;
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
/// * `postgres://…` / `postgresql://…`: not supported yet; the error says so.
///
/// ```no_run
/// # async fn run() -> Result<(), duractor::Error> {
/// let store = duractor_sqlx::open("sqlite://orders.db").await?;
/// let runtime = duractor::Runtime::builder_dyn(store).start().await?;
/// # runtime.shutdown().await }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn duractor::Store>, duractor::Error> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(duractor::Error::InvalidArgument(format!(
            "`{}`: PostgreSQL support is not available yet in duractor-sqlx; use a SQLite URL \
             such as `sqlite://app.db` for now",
            redact_password(url)
        )));
    }
    let path = if url.starts_with("sqlite:") {
        sqlite_path(url)
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(duractor::Error::InvalidArgument(format!(
            "unsupported database URL scheme `{scheme}://`; use `sqlite://path/to/file.db` \
             (or a plain file path)"
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

/// The file path of a `sqlite:` URL, without query parameters.
fn sqlite_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

/// The URL with any password replaced, for error messages.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}/{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn postgres_urls_say_they_are_not_supported_yet() {
        let err = open("postgres://me:secret@localhost/app")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("PostgreSQL support is not available yet"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let err = open("mysql://localhost/app")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unsupported database URL scheme"), "{err}");
    }
}
