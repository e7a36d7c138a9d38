//! An instance's history as a table a person reads in a failing test's output: one row per
//! event with the turn time (relative to the test's start), what happened, and the payload.

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::history::Event;
use crate::payload::Payload;

/// The widest the event column grows.
const MAX_EVENT_WIDTH: usize = 64;

/// An instance's history, printable as a table ([`Display`](fmt::Display)).
///
/// ```text
///   #  time         event                                                payload
///   0  +0s          OrchestratorStarted
///   1  +0s          ExecutionStarted of `approval` (execution 0)         {"request":"PO-1","amount":12}
///   2  +0s          a call to activity `notify` (TaskScheduled #0)       ["ana","please approve PO-1"]
///   3  +0s          a durable timer due at +1d (TimerCreated #1)
/// ```
#[derive(Debug, Clone)]
pub struct HistoryTable<'a> {
    events: &'a [Event],
    origin: DateTime<Utc>,
}

impl<'a> HistoryTable<'a> {
    /// The table of `events`, with times shown relative to `origin` (the test's start).
    pub fn new(events: &'a [Event], origin: DateTime<Utc>) -> Self {
        HistoryTable { events, origin }
    }
}

impl fmt::Display for HistoryTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut turn = None;
        let rows: Vec<(String, String, String)> = self
            .events
            .iter()
            .map(|event| {
                if let Event::OrchestratorStarted { timestamp } = event {
                    turn = Some(*timestamp);
                }
                let time = turn.map_or_else(String::new, |t| relative(t, self.origin));
                let what = match event {
                    Event::TimerCreated { seq, fire_at } => format!(
                        "a durable timer due at {} (TimerCreated #{seq})",
                        relative(*fire_at, self.origin)
                    ),
                    Event::OrchestratorStarted { .. } => "OrchestratorStarted".to_owned(),
                    other => other.describe(),
                };
                let payload = payload_of(event).map(Payload::preview).unwrap_or_default();
                (time, what, payload)
            })
            .collect();
        // Wide enough for the usual descriptions; a long one (a failure's message) runs over
        // rather than pushing every payload off the screen.
        let what_width = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .min(MAX_EVENT_WIDTH);
        let time_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
        writeln!(
            f,
            "  {:>3}  {:<time_width$}  {:<what_width$}  payload",
            "#", "time", "event"
        )?;
        for (index, (time, what, payload)) in rows.iter().enumerate() {
            let mut line = String::new();
            let _ = write!(
                line,
                "  {index:>3}  {time:<time_width$}  {what:<what_width$}  {payload}"
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The payload an event carries, if any: the input of a call, the output of a result.
fn payload_of(event: &Event) -> Option<&Payload> {
    match event {
        Event::ExecutionStarted { input, .. }
        | Event::TaskScheduled { input, .. }
        | Event::SubOrchestrationScheduled { input, .. }
        | Event::EntityCalled { input, .. }
        | Event::EntitySignaled { input, .. }
        | Event::EntityOperation { input, .. } => Some(input),
        Event::TaskCompleted { output, .. }
        | Event::SubOrchestrationCompleted { output, .. }
        | Event::EntityCompleted { output, .. }
        | Event::ExecutionCompleted { output } => Some(output),
        Event::EventRaised { data, .. } => Some(data),
        _ => None,
    }
}

/// `time` as an offset from `origin`: `+0s`, `+90ms`, `+1h 30m`, `+3d 2h`, `-5s`.
pub(crate) fn relative(time: DateTime<Utc>, origin: DateTime<Utc>) -> String {
    let delta = time - origin;
    let sign = if delta < chrono::TimeDelta::zero() {
        "-"
    } else {
        "+"
    };
    let total_ms = delta.num_milliseconds().unsigned_abs();
    if total_ms == 0 {
        return "+0s".to_owned();
    }
    if total_ms < 1_000 {
        return format!("{sign}{total_ms}ms");
    }
    let secs = total_ms / 1_000;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    let mut text = parts.join(" ");
    let millis = total_ms % 1_000;
    if millis > 0 && days == 0 && hours == 0 {
        text.push_str(&format!(" {millis}ms"));
    }
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn times_read_as_offsets_from_the_start() {
        assert_eq!(relative(at(0), at(0)), "+0s");
        assert_eq!(relative(at(90), at(0)), "+90ms");
        assert_eq!(relative(at(5_250), at(0)), "+5s 250ms");
        assert_eq!(relative(at(90 * 60_000), at(0)), "+1h 30m");
        assert_eq!(relative(at(3 * 86_400_000 + 7_200_000), at(0)), "+3d 2h");
        assert_eq!(relative(at(0), at(5_000)), "-5s");
    }

    #[test]
    fn a_history_prints_one_aligned_row_per_event() {
        let events = vec![
            Event::OrchestratorStarted { timestamp: at(0) },
            Event::TaskScheduled {
                seq: 0,
                name: "charge".into(),
                input: Payload::encode(&12).unwrap(),
            },
            Event::TimerCreated {
                seq: 1,
                fire_at: at(86_400_000),
            },
            Event::OrchestratorStarted {
                timestamp: at(86_400_000),
            },
            Event::TimerFired {
                seq: 1,
                fire_at: at(86_400_000),
            },
        ];
        let table = HistoryTable::new(&events, at(0)).to_string();
        let expected = [
            "    #  time  event                                           payload",
            "    0  +0s   OrchestratorStarted",
            "    1  +0s   a call to activity `charge` (TaskScheduled #0)  12",
            "    2  +0s   a durable timer due at +1d (TimerCreated #1)",
            "    3  +1d   OrchestratorStarted",
            "    4  +1d   TimerFired #1",
            "",
        ]
        .join("\n");
        assert_eq!(table, expected, "\n{table}");
    }
}
