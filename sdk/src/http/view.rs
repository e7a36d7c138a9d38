//! The JSON shapes of the HTTP API (also printed by the CLI's `--json`): camelCase field names
//! as in Durable Functions' HTTP API, times in RFC 3339 with milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::Failure;
use crate::history::{Event, Payload};
use crate::registry::Registry;
use crate::store::InstanceStatus;

/// An instance's status: `GET /instances/{id}`, `status --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusView {
    pub(crate) instance_id: String,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) version: String,
    pub(crate) runtime_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input: Option<Payload>,
    pub(crate) output: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_details: Option<Failure>,
    pub(crate) custom_status: Option<Payload>,
    pub(crate) created_time: String,
    pub(crate) last_updated_time: String,
    pub(crate) completed_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history_events: Option<Vec<Value>>,
}

impl StatusView {
    pub(crate) fn new(status: InstanceStatus, show_input: bool) -> Self {
        StatusView {
            instance_id: status.instance_id,
            name: status.name,
            version: status.version,
            runtime_status: status.status.to_string(),
            input: show_input.then_some(status.input),
            output: status.output,
            failure_details: status.failure,
            custom_status: status.custom_status,
            created_time: time(status.created_at),
            last_updated_time: time(status.updated_at),
            completed_time: status.completed_at.map(time),
            history_events: None,
        }
    }
}

/// A time as the API shows it.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// History events as JSON objects: `{"eventType": "TaskCompleted", "timestamp": …, "seq": 3,
/// "output": …}`. `timestamp` is the time of the turn that recorded the event. Without
/// `with_payloads`, inputs, outputs and event data are left out.
pub(crate) fn history(events: &[Event], with_payloads: bool) -> Vec<Value> {
    let mut turn_time: Option<String> = None;
    events
        .iter()
        .map(|event| {
            if let Event::OrchestratorStarted { timestamp } = event {
                turn_time = Some(time(*timestamp));
            }
            let mut object = Map::new();
            object.insert("eventType".into(), Value::from(event.kind()));
            if let Some(t) = &turn_time {
                object.insert("timestamp".into(), Value::from(t.clone()));
            }
            // `{"Kind": {fields}}` → the fields, camelCased, beside eventType.
            if let Ok(Value::Object(outer)) = serde_json::to_value(event)
                && let Some(Value::Object(fields)) = outer.into_iter().next().map(|(_, v)| v)
            {
                for (key, value) in fields {
                    if !with_payloads && matches!(key.as_str(), "input" | "output" | "data") {
                        continue;
                    }
                    object.insert(camel_case(&key), value);
                }
            }
            Value::Object(object)
        })
        .collect()
}

/// `fire_at` → `fireAt`.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// One registered function: `GET /functions`, `functions --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionView {
    pub(crate) name: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) version: &'static str,
    pub(crate) input_type: &'static str,
    pub(crate) output_type: &'static str,
}

/// Everything registered.
#[derive(Debug, Serialize)]
pub(crate) struct FunctionsView {
    pub(crate) orchestrators: Vec<FunctionView>,
    pub(crate) activities: Vec<FunctionView>,
    /// One row per operation, named `Entity.operation`.
    #[serde(rename = "entityOperations")]
    pub(crate) entity_operations: Vec<FunctionView>,
}

impl FunctionsView {
    pub(crate) fn new(registry: &Registry) -> Self {
        FunctionsView {
            orchestrators: registry
                .orchestrators()
                .map(|o| FunctionView {
                    name: o.name.to_owned(),
                    version: o.version,
                    input_type: (o.input_type)(),
                    output_type: (o.output_type)(),
                })
                .collect(),
            activities: registry
                .activities()
                .map(|a| FunctionView {
                    name: a.name.to_owned(),
                    version: "",
                    input_type: (a.input_type)(),
                    output_type: (a.output_type)(),
                })
                .collect(),
            entity_operations: registry
                .entities()
                .flat_map(|e| {
                    (e.operations)().iter().map(move |op| FunctionView {
                        name: format!("{}.{}", e.name, op.name),
                        version: "",
                        input_type: op.input_type,
                        output_type: op.output_type,
                    })
                })
                .collect(),
        }
    }
}

/// `alloc::vec::Vec<alloc::string::String>` → `Vec<String>`: a type name without its module
/// paths, for people.
pub(crate) fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("alloc::vec::Vec<alloc::string::String>"),
            "Vec<String>"
        );
        assert_eq!(
            short_type_name("(u64, core::option::Option<my::Thing>)"),
            "(u64, Option<Thing>)"
        );
        assert_eq!(short_type_name("()"), "()");
    }

    #[test]
    fn history_events_are_flat_objects() {
        let events = [
            Event::OrchestratorStarted {
                timestamp: DateTime::from_timestamp_millis(1_000).unwrap_or_default(),
            },
            Event::TaskCompleted {
                seq: 2,
                output: Payload::encode("hi").unwrap_or_else(|_| Payload::null()),
            },
        ];
        let json = history(&events, true);
        assert_eq!(json[1]["eventType"], "TaskCompleted");
        assert_eq!(json[1]["seq"], 2);
        assert_eq!(json[1]["output"], "hi");
        assert_eq!(json[1]["timestamp"], "1970-01-01T00:00:01.000Z");
        assert!(history(&events, false)[1].get("output").is_none());
    }
}

/// An entity as the HTTP API and `entity --json` show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntityView {
    pub(crate) name: String,
    pub(crate) key: String,
    /// The stored JSON as it is (field order kept).
    pub(crate) state: Option<Box<serde_json::value::RawValue>>,
    pub(crate) lock_owner: Option<String>,
    pub(crate) created_time: String,
    pub(crate) last_modified_time: String,
}

impl EntityView {
    pub(crate) fn new(status: crate::client::EntityStatus) -> Self {
        EntityView {
            state: status
                .state
                .as_ref()
                .and_then(|s| serde_json::value::RawValue::from_string(s.as_str().to_owned()).ok()),
            name: status.id.name,
            key: status.id.key,
            lock_owner: status.lock_owner,
            created_time: status.created_at.to_rfc3339(),
            last_modified_time: status.updated_at.to_rfc3339(),
        }
    }
}
