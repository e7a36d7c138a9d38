//! Helpers shared by the backends: time conversion, encoding and decoding stored columns,
//! JSON array parameters, the stats query.

use std::time::Duration;

use chrono::{DateTime, Utc};
use duractor::{ActivityTimeouts, Error, Event, Failure, Payload};
use serde::{Deserialize, Serialize};

/// Unix milliseconds of a time.
pub(crate) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// The time of Unix milliseconds.
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A JSON array parameter (the merged writes bind their rows as one).
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes a stored event.
pub(crate) fn decode_event(json: &str) -> Result<Event, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::store(format!(
            "a stored history event could not be decoded ({e}); it was written by an incompatible version"
        ))
    })
}

/// Encodes an event for storage.
pub(crate) fn encode_event(event: &Event) -> String {
    // Events hold only strings, numbers and raw JSON payloads: serialization cannot fail.
    serde_json::to_string(event)
        .unwrap_or_else(|e| format!("{{\"type\":\"Invalid\",\"error\":{:?}}}", e.to_string()))
}

/// Decodes a stored payload column.
pub(crate) fn decode_payload(json: Option<String>) -> Result<Option<Payload>, Error> {
    json.map(|json| {
        Payload::from_json(json)
            .map_err(|e| Error::store(format!("a stored payload is not valid JSON: {e}")))
    })
    .transpose()
}

/// Decodes a stored failure column.
pub(crate) fn decode_failure(json: Option<String>) -> Result<Option<Failure>, Error> {
    json.map(|json| {
        serde_json::from_str(&json)
            .map_err(|e| Error::store(format!("a stored failure could not be decoded: {e}")))
    })
    .transpose()
}

/// The key prefix of an entity listing that names no entity type (with a name, the prefix
/// is part of the `@Name@key` id prefix instead).
pub(crate) fn key_prefix_of_any_name(query: &duractor::store::EntityQuery) -> Option<String> {
    match query.name {
        Some(_) => None,
        None => query.key_prefix.clone().filter(|p| !p.is_empty()),
    }
}

/// Queue depths and orchestration counts by status for [`duractor::Store::stats`]; `$1` is
/// now in milliseconds; `json_each` names the backend's function over a JSON object's
/// members (calls kept in memory count as activities). Rows are `(what, count)`, folded by
/// [`stats_from_rows`].
pub(crate) fn stats_sql(json_each: &str) -> String {
    format!(
        "SELECT 'ready', COUNT(*) FROM orch_queue WHERE visible_at <= $1 \
         UNION ALL SELECT 'delayed', COUNT(*) FROM orch_queue WHERE visible_at > $1 \
         UNION ALL SELECT 'activities', COUNT(*) FROM activity_queue \
         UNION ALL SELECT 'activities', COUNT(*) FROM instances, {json_each}(instances.calls) \
           WHERE instances.calls IS NOT NULL \
         UNION ALL SELECT status, COUNT(*) FROM instances WHERE kind = 'orchestration' GROUP BY status"
    )
}

/// Folds the rows of [`stats_sql`].
pub(crate) fn stats_from_rows(
    rows: Vec<(String, i64)>,
) -> Result<duractor::store::StoreStats, Error> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let (mut ready, mut delayed, mut activities) = (0, 0, 0);
    let mut instances = Vec::new();
    for (what, n) in rows {
        match what.as_str() {
            "ready" => ready = count(n),
            "delayed" => delayed = count(n),
            // Work items, then calls kept in memory.
            "activities" => activities += count(n),
            status => instances.push((status.parse::<duractor::RuntimeStatus>()?, count(n))),
        }
    }
    Ok(duractor::store::StoreStats::new(
        ready, delayed, activities, instances,
    ))
}

/// The stored form of a work item's bounds (the `timeouts` column): milliseconds.
#[derive(Serialize, Deserialize, Default)]
struct StoredBounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_to_close: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_to_close: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<i64>,
}

/// Encodes a work item's timeouts and deadline for the `timeouts` column (`None` for none).
pub(crate) fn encode_bounds(
    timeouts: &ActivityTimeouts,
    deadline: Option<DateTime<Utc>>,
) -> Option<String> {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let stored = StoredBounds {
        start_to_close: ms(timeouts.start_to_close),
        schedule_to_close: ms(timeouts.schedule_to_close),
        heartbeat: ms(timeouts.heartbeat_timeout),
        deadline: deadline.map(millis),
    };
    let empty = stored.start_to_close.is_none()
        && stored.schedule_to_close.is_none()
        && stored.heartbeat.is_none()
        && stored.deadline.is_none();
    (!empty).then(|| json(&stored))
}

/// Decodes the `timeouts` column (a value this version cannot read counts as no bounds).
pub(crate) fn decode_bounds(column: Option<&str>) -> (ActivityTimeouts, Option<DateTime<Utc>>) {
    let stored: StoredBounds = column
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let duration = |ms: Option<u64>| ms.map(Duration::from_millis);
    (
        ActivityTimeouts {
            start_to_close: duration(stored.start_to_close),
            schedule_to_close: duration(stored.schedule_to_close),
            heartbeat_timeout: duration(stored.heartbeat),
        },
        stored.deadline.map(from_millis),
    )
}

/// Flow statuses from `(name, key, running, waiting)` rows.
pub(crate) fn flow_statuses(
    kind: duractor::store::FlowKind,
    rows: Vec<(String, Option<String>, i64, i64)>,
) -> Vec<duractor::store::FlowStatus> {
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    rows.into_iter()
        .map(
            |(name, key, running, waiting)| duractor::store::FlowStatus {
                kind,
                name,
                key,
                running: count(running),
                waiting: count(waiting),
            },
        )
        .collect()
}
