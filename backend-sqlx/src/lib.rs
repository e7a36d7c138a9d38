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
pub use sqlite::{SqliteStore, SqliteStoreOptions, Synchronous};
