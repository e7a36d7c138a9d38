//! [`StoreError`]: a database error met by a store call, with what the store was doing,
//! whether retrying may succeed, and sqlx's error as its source. Which errors may pass is
//! each driver's to say (`sqlite::is_transient`, `postgres::is_transient`); the failures
//! every driver shares are [`transient_in_any_database`].

/// A database error met by a store call. It becomes a [`duractor::Error::Store`] at the
/// [`duractor::Store`] boundary, keeping the `sqlx::Error` as its `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub(crate) struct StoreError {
    /// What the store was doing ("loading history", "committing to SQLite").
    context: String,
    /// Whether retrying later may succeed, as the driver classified `source`.
    transient: bool,
    source: sqlx::Error,
}

impl StoreError {
    /// `source`, met while the store was doing `context`; `transient` as its driver says.
    pub(crate) fn new(context: impl Into<String>, transient: bool, source: sqlx::Error) -> Self {
        StoreError {
            context: context.into(),
            transient,
            source,
        }
    }
}

impl From<StoreError> for duractor::Error {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        duractor::Error::store_caused_by(message, error.transient, error.source)
    }
}

/// The failures that may pass whatever the database: I/O (a connection lost or refused), no
/// pooled connection free in time or the pool closed, the driver's worker thread gone. Each
/// driver adds its database's own codes (busy, deadlock, server restarting).
pub(crate) fn transient_in_any_database(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_keeps_the_sqlx_error_as_its_source() {
        let lost = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let shown = format!("loading history: {lost}");
        let error = duractor::Error::from(StoreError::new("loading history", true, lost));
        assert_eq!(error.to_string(), format!("store error: {shown}"));
        assert!(matches!(
            error,
            duractor::Error::Store {
                transient: true,
                ..
            }
        ));
        use std::error::Error as _;
        let source = error.source().expect("a source");
        let duractor::Error::Store {
            source: Some(driver),
            ..
        } = &error
        else {
            panic!("{error:?}")
        };
        assert!(driver.get().downcast_ref::<sqlx::Error>().is_some());
        // The chain: the store error → the link → the sqlx error itself.
        assert_eq!(source.to_string(), "the database driver's error");
        let next = source.source().expect("the driver's error");
        assert!(next.downcast_ref::<sqlx::Error>().is_some());
        assert_eq!(next.to_string(), driver.get().to_string());
    }
}
