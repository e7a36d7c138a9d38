//! The writer's direct connection: SQLite's C API called on the writer's own thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: every statement is a command sent
//! to that thread and an answer sent back, two wake-ups across threads around a statement
//! that itself takes ~0.1 ms. One operation at a time, those hops were a third of a commit
//! (docs/architecture.md, "Eighteenth sitting"). The guarded batch — the one statement of
//! nearly every commit when work runs one operation at a time — therefore runs on a second
//! write connection that the writer opens and steps itself, through `libsqlite3-sys` (the
//! library sqlx links). Everything else keeps sqlx's connection. The two never hold a
//! transaction at the same time: the writer is one thread, and a guarded batch is one
//! statement in autocommit.
//!
//! Only what the guarded batch needs is here: open with the store's settings, run a script,
//! prepare once and keep, bind, step, read one text column.

use libsqlite3_sys as ffi;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

/// A write connection stepped on the thread that calls it, with the statements it prepared.
pub(super) struct Direct {
    db: NonNull<ffi::sqlite3>,
    /// Statements prepared once and kept (`SQLITE_PREPARE_PERSISTENT`), by their SQL.
    statements: HashMap<Arc<str>, NonNull<ffi::sqlite3_stmt>>,
}

// SAFETY: the connection is opened with `SQLITE_OPEN_NOMUTEX` (no locking inside SQLite) and
// every call on it or its statements goes through `&mut self`, so one thread uses it at a
// time; SQLite allows moving such a connection between threads.
unsafe impl Send for Direct {}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    Null,
    Integer(i64),
    Text(Cow<'a, str>),
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Integer(value.into())
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(Cow::Borrowed(value))
    }
}

impl From<String> for Value<'_> {
    fn from(value: String) -> Self {
        Value::Text(Cow::Owned(value))
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

impl Direct {
    /// Opens the database file at `path` (it must exist) for writing, with `busy_timeout`,
    /// extended result codes, and the settings `script` makes (its `PRAGMA`s).
    pub(super) fn open(
        path: &Path,
        busy_timeout: Duration,
        script: &str,
    ) -> Result<Direct, sqlx::Error> {
        let filename = path
            .to_str()
            .and_then(|path| CString::new(path).ok())
            .ok_or_else(|| {
                sqlx::Error::Configuration(
                    format!(
                        "the database path {} is not UTF-8 without NULs",
                        path.display()
                    )
                    .into(),
                )
            })?;
        let mut db = ptr::null_mut();
        // SAFETY: `filename` is a NUL-terminated string that outlives the call, and `db` is a
        // place for the handle; SQLite writes a handle there even when opening fails (to be
        // closed), or NULL when it could not allocate one.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                filename.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE
                    | ffi::SQLITE_OPEN_NOMUTEX
                    | ffi::SQLITE_OPEN_PRIVATECACHE,
                ptr::null(),
            )
        };
        let Some(db) = NonNull::new(db) else {
            return Err(sqlx::Error::Protocol(
                "SQLite could not allocate a connection".into(),
            ));
        };
        let mut direct = Direct {
            db,
            statements: HashMap::new(),
        };
        if rc != ffi::SQLITE_OK {
            return Err(direct.error(rc));
        }
        let timeout_ms = c_int::try_from(busy_timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `db` is an open connection used by this thread only.
        unsafe {
            ffi::sqlite3_extended_result_codes(direct.db.as_ptr(), 1);
            ffi::sqlite3_busy_timeout(direct.db.as_ptr(), timeout_ms);
        }
        direct.run_script(script)?;
        Ok(direct)
    }

    /// Runs `script`, one or more statements without parameters, whose rows (if any) are
    /// dropped.
    pub(super) fn run_script(&mut self, script: &str) -> Result<(), sqlx::Error> {
        let script = CString::new(script)
            .map_err(|_| sqlx::Error::Protocol("a SQL script holds a NUL byte".into()))?;
        let mut message = ptr::null_mut();
        // SAFETY: `script` is NUL-terminated and outlives the call; with no callback, rows
        // are dropped; an error message SQLite allocates is read and freed below.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db.as_ptr(),
                script.as_ptr(),
                None,
                ptr::null_mut(),
                &mut message,
            )
        };
        if !message.is_null() {
            // SAFETY: SQLite allocated this message for the caller to free.
            unsafe { ffi::sqlite3_free(message.cast()) };
        }
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    /// Prepares `sql` (one statement) and keeps it for [`Direct::execute`] and
    /// [`Direct::texts`]; preparing a statement again is free.
    pub(super) fn prepare(&mut self, sql: &Arc<str>) -> Result<(), sqlx::Error> {
        self.statement(sql).map(drop)
    }

    /// Whether `sql` is prepared and kept.
    #[cfg(test)]
    pub(super) fn is_prepared(&self, sql: &Arc<str>) -> bool {
        self.statements.contains_key(sql)
    }

    /// How many times SQLite compiled the kept statement `sql` again since it was prepared
    /// (after a schema change on this connection expired it); `None` if it is not kept.
    #[cfg(test)]
    pub(super) fn reprepares(&self, sql: &Arc<str>) -> Option<c_int> {
        let statement = self.statements.get(sql)?;
        // SAFETY: a statement of this connection; reading a counter changes nothing.
        Some(unsafe {
            ffi::sqlite3_stmt_status(statement.as_ptr(), ffi::SQLITE_STMTSTATUS_REPREPARE, 0)
        })
    }

    /// Runs the statement `sql` with `params` bound in order, to its end.
    pub(super) fn execute(
        &mut self,
        sql: &Arc<str>,
        params: &[Value<'_>],
    ) -> Result<(), sqlx::Error> {
        self.step_all(sql, params, |_| ())
    }

    /// The first column of each row the statement `sql` returns with `params`, as text.
    pub(super) fn texts(
        &mut self,
        sql: &Arc<str>,
        params: &[Value<'_>],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut texts = Vec::new();
        self.step_all(sql, params, |statement| {
            // SAFETY: the statement is on a row; the text pointer is valid until the next
            // step, and is copied at once.
            let text = unsafe {
                let text = ffi::sqlite3_column_text(statement, 0);
                if text.is_null() {
                    String::new()
                } else {
                    let len = ffi::sqlite3_column_bytes(statement, 0) as usize;
                    String::from_utf8_lossy(std::slice::from_raw_parts(text, len)).into_owned()
                }
            };
            texts.push(text);
        })?;
        Ok(texts)
    }

    /// Binds `params`, steps the statement to its end calling `row` on each row, and resets
    /// it (also on failure) so it holds no lock and no bound value after.
    fn step_all(
        &mut self,
        sql: &Arc<str>,
        params: &[Value<'_>],
        mut row: impl FnMut(*mut ffi::sqlite3_stmt),
    ) -> Result<(), sqlx::Error> {
        let statement = self.statement(sql)?.as_ptr();
        // Reset however this ends, a panic in `row` included: a statement left mid-way holds
        // its read snapshot (and its lock, for a write).
        let _reset = Reset(statement);
        self.bind(statement, params).and_then(|()| {
            loop {
                // SAFETY: a prepared statement of this connection, used by this thread only.
                match unsafe { ffi::sqlite3_step(statement) } {
                    ffi::SQLITE_ROW => row(statement),
                    ffi::SQLITE_DONE => break Ok(()),
                    rc => break Err(self.error(rc)),
                }
            }
        })
    }

    /// Binds `params` to the statement's parameters 1, 2, …; text is copied by SQLite.
    fn bind(
        &self,
        statement: *mut ffi::sqlite3_stmt,
        params: &[Value<'_>],
    ) -> Result<(), sqlx::Error> {
        // SAFETY: a statement of this connection; its parameter count bounds the indices.
        let expected = unsafe { ffi::sqlite3_bind_parameter_count(statement) } as usize;
        if expected != params.len() {
            return Err(sqlx::Error::Protocol(format!(
                "a statement takes {expected} parameters and was given {}",
                params.len()
            )));
        }
        for (index, value) in params.iter().enumerate() {
            let index = index as c_int + 1;
            // SAFETY: `index` is within the statement's parameters; SQLITE_TRANSIENT makes
            // SQLite copy the text before the call returns.
            let rc = unsafe {
                match value {
                    Value::Null => ffi::sqlite3_bind_null(statement, index),
                    Value::Integer(value) => ffi::sqlite3_bind_int64(statement, index, *value),
                    Value::Text(text) => ffi::sqlite3_bind_text64(
                        statement,
                        index,
                        text.as_ptr().cast(),
                        text.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.error(rc));
            }
        }
        Ok(())
    }

    /// The kept statement of `sql`, prepared now if it was not.
    fn statement(&mut self, sql: &Arc<str>) -> Result<NonNull<ffi::sqlite3_stmt>, sqlx::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(*statement);
        }
        let mut statement = ptr::null_mut();
        let mut tail = ptr::null();
        let len = c_int::try_from(sql.len())
            .map_err(|_| sqlx::Error::Protocol("a statement longer than 2 GiB".into()))?;
        // SAFETY: `sql` is valid for `len` bytes during the call (SQLite does not keep it);
        // the statement handle written to `statement` is owned by `self` from here.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut statement,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        let statement = NonNull::new(statement)
            .ok_or_else(|| sqlx::Error::Protocol("an empty statement was prepared".into()))?;
        // SAFETY: `tail` points into `sql` (one past what was compiled).
        let consumed = unsafe { tail.cast::<u8>().offset_from(sql.as_ptr()) } as usize;
        if !sql[consumed..].trim().trim_matches(';').trim().is_empty() {
            // SAFETY: the statement was just prepared and is not kept.
            unsafe { ffi::sqlite3_finalize(statement.as_ptr()) };
            return Err(sqlx::Error::Protocol(
                "a direct statement's SQL holds more than one statement".into(),
            ));
        }
        self.statements.insert(sql.clone(), statement);
        Ok(statement)
    }

    /// The connection's last error, after a call answered `rc`.
    fn error(&self, rc: c_int) -> sqlx::Error {
        // SAFETY: the connection is open; the message is copied before the next call.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let message = ffi::sqlite3_errmsg(self.db.as_ptr());
            let message = if message.is_null() {
                CStr::from_ptr(ffi::sqlite3_errstr(rc))
                    .to_string_lossy()
                    .into_owned()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            };
            (if code == ffi::SQLITE_OK { rc } else { code }, message)
        };
        sqlx::Error::Database(Box::new(DirectError { code, message }))
    }
}

/// Resets its statement and clears its bindings when dropped.
struct Reset(*mut ffi::sqlite3_stmt);

impl Drop for Reset {
    fn drop(&mut self) {
        // SAFETY: a kept statement of a connection borrowed for as long as this lives;
        // resetting after an error returns that error again, already read.
        unsafe {
            ffi::sqlite3_reset(self.0);
            ffi::sqlite3_clear_bindings(self.0);
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        // SAFETY: every statement belongs to this connection and is finalized once, before
        // the connection is closed; nothing uses them after.
        unsafe {
            for (_, statement) in self.statements.drain() {
                ffi::sqlite3_finalize(statement.as_ptr());
            }
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
}

/// An error SQLite answered on the direct connection: its extended result code and message,
/// read as sqlx reads its own connections' errors (`code()` is the extended code).
#[derive(Debug)]
struct DirectError {
    code: c_int,
    message: String,
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for DirectError {}

impl sqlx::error::DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> (std::path::PathBuf, Direct) {
        let dir =
            std::env::temp_dir().join(format!("duractor-direct-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        std::fs::write(&path, b"").unwrap();
        let direct = Direct::open(
            &path,
            Duration::from_millis(50),
            "PRAGMA journal_mode = WAL",
        )
        .expect("opens");
        (dir, direct)
    }

    /// Statements are prepared once, bind every kind of value in order, and give back the
    /// first column of their rows.
    #[test]
    fn binds_steps_and_reads_rows() {
        let (dir, mut db) = scratch("rows");
        db.run_script("CREATE TABLE t (a INTEGER, b TEXT, c TEXT)")
            .unwrap();
        let insert: Arc<str> = "INSERT INTO t VALUES (?, ?, ?)".into();
        db.execute(&insert, &[1.into(), "one".into(), Value::Null])
            .unwrap();
        db.execute(
            &insert,
            &[2.into(), String::from("two").into(), Some("x").into()],
        )
        .unwrap();
        assert_eq!(db.statements.len(), 1);
        let read: Arc<str> = "SELECT json_array(a, b, c) FROM t WHERE a >= ? ORDER BY a".into();
        assert_eq!(
            db.texts(&read, &[1.into()]).unwrap(),
            vec![
                r#"[1,"one",null]"#.to_owned(),
                r#"[2,"two","x"]"#.to_owned()
            ]
        );
        assert_eq!(db.texts(&read, &[3.into()]).unwrap(), Vec::<String>::new());
        drop(db);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A failing statement answers SQLite's code and message as a database error, and leaves
    /// the statement and connection usable; a wrong number of parameters or a second
    /// statement in the SQL is refused before anything runs.
    #[test]
    fn errors_carry_the_code_and_message_and_leave_the_connection_usable() {
        let (dir, mut db) = scratch("errors");
        db.run_script("CREATE TABLE t (a INTEGER PRIMARY KEY)")
            .unwrap();
        let insert: Arc<str> = "INSERT INTO t VALUES (?)".into();
        db.execute(&insert, &[1.into()]).unwrap();
        let Err(sqlx::Error::Database(error)) = db.execute(&insert, &[1.into()]) else {
            panic!("a duplicate key must fail as a database error");
        };
        assert_eq!(
            error.code().as_deref(),
            Some("1555"),
            "SQLITE_CONSTRAINT_PRIMARYKEY"
        );
        assert!(
            error.message().contains("UNIQUE constraint failed"),
            "{}",
            error.message()
        );
        assert!(error.is_unique_violation());
        db.execute(&insert, &[2.into()]).unwrap();
        db.run_script(
            "CREATE TEMP VIEW v AS SELECT 1 AS x; \
             CREATE TEMP TRIGGER v_insert INSTEAD OF INSERT ON v \
             BEGIN SELECT RAISE(ABORT, 'duractor: refused'); END",
        )
        .unwrap();
        let raise: Arc<str> = "INSERT INTO v VALUES (1)".into();
        let Err(sqlx::Error::Database(error)) = db.execute(&raise, &[]) else {
            panic!("RAISE must fail");
        };
        assert_eq!(error.message(), "duractor: refused");
        assert!(matches!(
            db.execute(&insert, &[]),
            Err(sqlx::Error::Protocol(_))
        ));
        let two: Arc<str> = "SELECT 1; SELECT 2".into();
        assert!(matches!(
            db.execute(&two, &[]),
            Err(sqlx::Error::Protocol(_))
        ));
        let count: Arc<str> = "SELECT count(*) FROM t".into();
        assert_eq!(db.texts(&count, &[]).unwrap(), vec!["2".to_owned()]);
        drop(db);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A write while another connection holds the write lock waits for it up to the busy
    /// timeout; past it the error is SQLite's busy code, which the store treats as passing.
    #[test]
    fn a_locked_database_is_waited_for_then_reported_as_busy() {
        let (dir, mut holder) = scratch("busy");
        holder.run_script("CREATE TABLE t (a INTEGER)").unwrap();
        let path = dir.join("db.sqlite");
        let mut patient = Direct::open(&path, Duration::from_secs(5), "").unwrap();
        let mut impatient = Direct::open(&path, Duration::ZERO, "").unwrap();
        let insert: Arc<str> = "INSERT INTO t VALUES (?)".into();
        holder
            .run_script("BEGIN IMMEDIATE; INSERT INTO t VALUES (0)")
            .unwrap();
        let Err(error) = impatient.execute(&insert, &[1.into()]) else {
            panic!("a write past a held lock with no busy timeout must fail");
        };
        assert!(super::super::is_transient(&error), "{error}");
        let started = std::time::Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            holder.run_script("COMMIT").unwrap();
            holder
        });
        patient.execute(&insert, &[2.into()]).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "did not wait for the lock"
        );
        drop(release.join().unwrap());
        let count: Arc<str> = "SELECT group_concat(a) FROM (SELECT a FROM t ORDER BY a)".into();
        assert_eq!(patient.texts(&count, &[]).unwrap(), ["0,2"]);
        drop((patient, impatient));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file that is not a database is an error on the first statement, not a crash.
    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = std::env::temp_dir().join(format!("duractor-direct-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let error = Direct::open(&path, Duration::ZERO, "PRAGMA journal_mode = WAL")
            .err()
            .expect("not a database");
        assert!(error.to_string().contains("not a database"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
