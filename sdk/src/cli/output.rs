//! What the CLI prints: aligned tables, status blocks, history rows, progress on stderr.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_TIMEOUT, EXIT_USAGE};
use crate::client::InstanceStatus;
use crate::error::{Error, Failure};
use crate::http::view::{self, EventView};
use crate::store::ActivityStatus;

/// Why a command failed, with its exit code.
pub(super) struct CliError {
    pub(super) code: u8,
    pub(super) message: String,
}

impl CliError {
    pub(super) fn failure(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: message.to_string(),
        }
    }

    pub(super) fn usage(message: impl fmt::Display) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        let code = match error {
            // What the user typed: a name that is not registered, JSON that does not parse
            // or does not fit the input type.
            Error::UnknownOrchestrator { .. }
            | Error::UnknownEntity { .. }
            | Error::UnknownOperation { .. }
            | Error::InvalidPayload { .. } => EXIT_USAGE,
            Error::Timeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_FAILURE,
        };
        CliError {
            code,
            message: error.to_string(),
        }
    }
}

pub(super) type CliResult = Result<ExitCode, CliError>;

pub(super) fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failure(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Prints rows as columns separated by two spaces, the first row being the header.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c].saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time as the CLI shows it (RFC 3339, milliseconds, UTC).
pub(super) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    view::time(t)
}

/// Activity calls in flight as a table: call, activity, attempt, worker, timeouts, last
/// heartbeat.
pub(super) fn activities(items: &[ActivityStatus]) -> String {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let mut rows = vec![
        [
            "SEQ",
            "ACTIVITY",
            "ATTEMPT",
            "WORKER",
            "TIMEOUTS",
            "LAST HEARTBEAT",
            "AT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for item in items {
        let timeouts = [
            ("start-to-close", item.timeouts.start_to_close),
            ("schedule-to-close", item.timeouts.schedule_to_close),
            ("heartbeat", item.timeouts.heartbeat_timeout),
        ]
        .into_iter()
        .filter_map(|(name, timeout)| timeout.map(|t| format!("{name} {t:?}")))
        .collect::<Vec<_>>()
        .join(", ");
        rows.push(vec![
            item.seq.to_string(),
            item.name.clone(),
            item.attempt.to_string(),
            or_dash(item.locked_by.clone()),
            if timeouts.is_empty() {
                "-".to_owned()
            } else {
                timeouts
            },
            or_dash(item.heartbeat.as_ref().map(|h| h.preview())),
            or_dash(item.heartbeat_at.map(time)),
        ]);
    }
    table(&rows)
}

/// The status of an instance as `key  value` lines.
pub(super) fn status(status: &InstanceStatus) -> String {
    let mut rows = vec![
        vec!["instance".to_owned(), status.instance_id.clone()],
        vec![
            "name".to_owned(),
            if status.version.is_empty() {
                status.name.clone()
            } else {
                format!("{} (version {})", status.name, status.version)
            },
        ],
        vec!["status".to_owned(), status.status.to_string()],
        vec!["created".to_owned(), time(status.created_at)],
        vec!["updated".to_owned(), time(status.updated_at)],
    ];
    if let Some(completed) = status.completed_at {
        rows.push(vec!["completed".to_owned(), time(completed)]);
    }
    rows.push(vec!["input".to_owned(), status.input.to_string()]);
    if let Some(output) = &status.output {
        rows.push(vec!["output".to_owned(), output.to_string()]);
    }
    if let Some(custom) = &status.custom_status {
        rows.push(vec!["custom status".to_owned(), custom.to_string()]);
    }
    if let Some(failure) = &status.failure {
        rows.push(vec!["failure".to_owned(), failure_chain(failure)]);
    }
    table(&rows)
}

/// A failure and its causes: `activity `x` failed: boom; caused by: boom`.
pub(super) fn failure_chain(failure: &Failure) -> String {
    let mut text = failure.message.clone();
    let mut cause = failure.cause.as_deref();
    while let Some(inner) = cause {
        if !text.contains(&inner.message) {
            text.push_str("; caused by: ");
            text.push_str(&inner.message);
        }
        cause = inner.cause.as_deref();
    }
    text
}

/// History as a table: position, turn time, event type, the event's fields.
pub(super) fn history(events: &[EventView]) -> String {
    let mut rows = vec![vec![
        "#".to_owned(),
        "TIME".to_owned(),
        "EVENT".to_owned(),
        "DETAILS".to_owned(),
    ]];
    for (index, event) in events.iter().enumerate() {
        let details = event
            .details()
            .into_iter()
            .map(|(key, value)| format!("{key}={}", cut(&value)))
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(vec![
            index.to_string(),
            event.text("timestamp").unwrap_or_default(),
            event.text("eventType").unwrap_or_default(),
            details,
        ]);
    }
    table(&rows)
}

/// Compact JSON, cut to 80 characters.
fn preview(value: &Value) -> String {
    cut(&value.to_string())
}

/// Text cut to 80 characters.
fn cut(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

/// Progress of a long wait, on stderr: one line rewritten in place on a terminal, a line
/// every few seconds otherwise.
pub(super) struct Progress {
    terminal: bool,
    dirty: bool,
    every: Duration,
}

impl Progress {
    pub(super) fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        Progress {
            terminal,
            dirty: false,
            every: if terminal {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
        }
    }

    /// How often to report.
    pub(super) fn every(&self) -> Duration {
        self.every
    }

    pub(super) fn report(&mut self, status: &InstanceStatus, waited: Duration, hint: &str) {
        let mut line = format!(
            "waiting for instance {}: {} for {} s",
            status.instance_id,
            status.status,
            waited.as_secs()
        );
        if let Some(custom) = &status.custom_status {
            line.push_str(&format!(
                ", custom status {}",
                preview_payload(custom.as_str())
            ));
        }
        if !hint.is_empty() {
            line.push_str(" (");
            line.push_str(hint);
            line.push(')');
        }
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
            self.dirty = true;
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }

    /// Ends the progress line.
    pub(super) fn finish(&mut self) {
        if self.dirty {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.dirty = false;
        }
    }
}

fn preview_payload(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .map(|value| preview(&value))
        .unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            vec!["long".to_owned(), "x".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x   y\n");
    }

    #[test]
    fn failures_show_their_causes_once() {
        let failure = Failure::application("activity `x` failed: boom")
            .with_cause(Failure::application("boom").with_cause(Failure::panic("deep")));
        assert_eq!(
            failure_chain(&failure),
            "activity `x` failed: boom; caused by: deep"
        );
    }
}
