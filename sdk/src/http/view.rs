//! The JSON shapes of the HTTP API (also printed by the CLI's `--json`): camelCase field names
//! as in Durable Functions' HTTP API, times in RFC 3339 with milliseconds.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::Failure;
use crate::history::{Event, Payload};
use crate::id::EntityId;
use crate::registry::Registry;
use crate::store::{ActivityStatus, InstanceStatus, RuntimeStatus};

/// An instance's status: `GET /instances/{id}`, `status --json`.
///
/// As in Durable Functions: `input` is `null` when not asked for, a Failed instance's
/// `output` is its error message and a Terminated instance's `output` its reason
/// (`failureDetails` keeps the whole failure).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusView {
    pub(crate) instance_id: String,
    pub(crate) name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) version: String,
    pub(crate) runtime_status: String,
    pub(crate) input: Option<Payload>,
    pub(crate) output: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_details: Option<FailureView>,
    pub(crate) custom_status: Option<Payload>,
    pub(crate) created_time: String,
    pub(crate) last_updated_time: String,
    pub(crate) completed_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history_events: Option<Vec<EventView>>,
}

impl StatusView {
    pub(crate) fn new(status: InstanceStatus, show_input: bool) -> Self {
        let output = match (status.status, &status.failure) {
            (RuntimeStatus::Failed, Some(failure)) => Payload::encode(&failure.message).ok(),
            _ => status.output,
        };
        StatusView {
            instance_id: status.instance_id,
            name: status.name,
            version: status.version,
            runtime_status: status.status.to_string(),
            input: show_input.then_some(status.input),
            output,
            failure_details: status.failure.as_ref().map(FailureView::new),
            custom_status: status.custom_status,
            created_time: time(status.created_at),
            last_updated_time: time(status.updated_at),
            completed_time: status.completed_at.map(time),
            history_events: None,
        }
    }
}

/// A [`Failure`] as the API shows it: camelCase keys, the cause nested the same way.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureView {
    message: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<Box<FailureView>>,
    non_retriable: bool,
}

impl FailureView {
    pub(crate) fn new(failure: &Failure) -> Self {
        FailureView {
            message: failure.message.clone(),
            kind: failure.kind.clone(),
            cause: failure
                .cause
                .as_deref()
                .map(|c| Box::new(FailureView::new(c))),
            non_retriable: failure.non_retriable,
        }
    }
}

/// A time as the API shows it.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One history event as a flat JSON object: `eventType`, `timestamp` (the time of the turn
/// that recorded it), its own fields in camelCase, and the fields a Durable Functions client
/// reads (`functionName`, `result`, `scheduledTime`, `orchestrationStatus`). Payloads are
/// written as stored, never re-parsed, so any payload the store holds can be shown.
#[derive(Debug)]
pub(crate) struct EventView {
    fields: Vec<(&'static str, Field)>,
}

#[derive(Debug)]
enum Field {
    Json(Value),
    Payload(Payload),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Json(Value::String(text)) => text.clone(),
            Field::Json(value) => value.to_string(),
            Field::Payload(payload) => payload.as_str().to_owned(),
        }
    }
}

impl Serialize for EventView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, value) in &self.fields {
            match value {
                Field::Json(value) => map.serialize_entry(key, value)?,
                Field::Payload(payload) => map.serialize_entry(key, payload)?,
            }
        }
        map.end()
    }
}

impl EventView {
    /// The field `key` as text (a string as it is, anything else as compact JSON).
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.text())
    }

    /// The event's own fields for people, `(key, compact value)`: without `eventType` and
    /// `timestamp`, and without the fields that repeat another under Durable Functions' name
    /// (`result` beside `output`, `functionName` beside `name`, …).
    pub(crate) fn details(&self) -> Vec<(&'static str, String)> {
        let has = |key: &str| self.fields.iter().any(|(k, _)| *k == key);
        self.fields
            .iter()
            .filter(|(key, _)| match *key {
                "eventType" | "timestamp" | "result" | "timerId" => false,
                "functionName" => !has("name"),
                "input" => !has("data"),
                _ => true,
            })
            .map(|(key, value)| (*key, value.text()))
            .collect()
    }

    fn json(&mut self, key: &'static str, value: impl Into<Value>) {
        self.fields.push((key, Field::Json(value.into())));
    }

    fn payload(&mut self, key: &'static str, payload: &Payload) {
        self.fields.push((key, Field::Payload(payload.clone())));
    }

    fn failure(&mut self, failure: &Failure) {
        self.json("reason", failure.message.clone());
        let view = serde_json::to_value(FailureView::new(failure)).unwrap_or(Value::Null);
        self.json("failure", view);
    }

    fn entity(&mut self, key: &'static str, entity: &EntityId) {
        self.json(
            key,
            serde_json::json!({ "name": entity.name, "key": entity.key }),
        );
    }

    fn entities(&mut self, entities: &[EntityId]) {
        let list: Vec<Value> = entities
            .iter()
            .map(|e| serde_json::json!({ "name": e.name, "key": e.key }))
            .collect();
        self.json("entities", list);
    }
}

/// History events as [`EventView`]s. Without `with_payloads`, inputs, outputs, results and
/// event data are left out.
pub(crate) fn history(events: &[Event], with_payloads: bool) -> Vec<EventView> {
    // seq → (function name, time of the turn that scheduled it), for the completions.
    let mut calls: HashMap<u64, (String, Option<String>)> = HashMap::new();
    let mut turn_time: Option<String> = None;
    let mut views = Vec::with_capacity(events.len());
    for event in events {
        if let Event::OrchestratorStarted { timestamp } = event {
            turn_time = Some(time(*timestamp));
        }
        let mut view = EventView {
            fields: Vec::with_capacity(8),
        };
        view.json("eventType", event.kind());
        if let Some(t) = &turn_time {
            view.json("timestamp", t.clone());
        }
        let payload = |view: &mut EventView, keys: &[&'static str], payload: &Payload| {
            if with_payloads {
                for key in keys {
                    view.payload(key, payload);
                }
            }
        };
        let completion = |view: &mut EventView, seq: u64| {
            view.json("seq", seq);
            if let Some((name, scheduled)) = calls.get(&seq) {
                view.json("functionName", name.clone());
                if let Some(scheduled) = scheduled {
                    view.json("scheduledTime", scheduled.clone());
                }
            }
        };
        match event {
            Event::OrchestratorStarted { .. } | Event::EntityDelete {} => {}
            Event::ExecutionStarted {
                name,
                version,
                input,
                execution,
                parent,
            } => {
                view.json("name", name.clone());
                view.json("functionName", name.clone());
                if !version.is_empty() {
                    view.json("version", version.clone());
                }
                if *execution > 0 {
                    view.json("execution", *execution);
                }
                if let Some(parent) = parent {
                    view.json(
                        "parent",
                        serde_json::json!({
                            "instanceId": parent.instance_id,
                            "seq": parent.seq,
                            "execution": parent.execution,
                        }),
                    );
                }
                payload(&mut view, &["input"], input);
            }
            Event::TaskScheduled { seq, name, input } => {
                calls.insert(*seq, (name.clone(), turn_time.clone()));
                view.json("seq", *seq);
                view.json("name", name.clone());
                view.json("functionName", name.clone());
                payload(&mut view, &["input"], input);
            }
            Event::TaskCompleted { seq, output }
            | Event::SubOrchestrationCompleted { seq, output }
            | Event::EntityCompleted { seq, output } => {
                completion(&mut view, *seq);
                payload(&mut view, &["output", "result"], output);
            }
            Event::TaskFailed {
                seq,
                failure,
                heartbeat,
            } => {
                completion(&mut view, *seq);
                view.failure(failure);
                if let Some(details) = heartbeat {
                    payload(&mut view, &["lastHeartbeat"], details);
                }
            }
            Event::SubOrchestrationFailed { seq, failure }
            | Event::EntityFailed { seq, failure } => {
                completion(&mut view, *seq);
                view.failure(failure);
            }
            Event::CallCancelled { seq, reason } => {
                completion(&mut view, *seq);
                if !reason.is_empty() {
                    view.json("reason", reason.clone());
                }
            }
            Event::TimerCreated { seq, fire_at } => {
                view.json("seq", *seq);
                view.json("fireAt", time(*fire_at));
            }
            Event::TimerFired { seq, fire_at } => {
                view.json("seq", *seq);
                view.json("timerId", *seq);
                view.json("fireAt", time(*fire_at));
            }
            Event::SubOrchestrationScheduled {
                seq,
                name,
                instance_id,
                input,
            } => {
                calls.insert(*seq, (name.clone(), turn_time.clone()));
                view.json("seq", *seq);
                view.json("name", name.clone());
                view.json("functionName", name.clone());
                view.json("instanceId", instance_id.clone());
                payload(&mut view, &["input"], input);
            }
            Event::EntityCalled {
                seq,
                entity,
                operation,
                input,
            } => {
                calls.insert(
                    *seq,
                    (format!("{}.{operation}", entity.name), turn_time.clone()),
                );
                view.json("seq", *seq);
                view.entity("entity", entity);
                view.json("operation", operation.clone());
                payload(&mut view, &["input"], input);
            }
            Event::EntitySignaled {
                seq,
                entity,
                operation,
                input,
                at,
            } => {
                view.json("seq", *seq);
                view.entity("entity", entity);
                view.json("operation", operation.clone());
                if let Some(at) = at {
                    view.json("at", time(*at));
                }
                payload(&mut view, &["input"], input);
            }
            Event::EntityLockRequested { seq, entities }
            | Event::EntityUnlockSent { seq, entities } => {
                view.json("seq", *seq);
                view.entities(entities);
            }
            Event::EntityLockGranted { seq } => view.json("seq", *seq),
            Event::EntityOperation {
                operation,
                input,
                caller,
                sender,
            } => {
                view.json("operation", operation.clone());
                if let Some(caller) = caller {
                    view.json("caller", caller.instance_id.clone());
                }
                if let Some(sender) = sender {
                    view.json("sender", sender.clone());
                }
                payload(&mut view, &["input"], input);
            }
            Event::EntityLockRequest {
                owner,
                entities,
                position,
            } => {
                view.json("owner", owner.instance_id.clone());
                view.entities(entities);
                view.json("position", *position);
            }
            Event::EntityUnlock { owner } => view.json("owner", owner.clone()),
            Event::PatchApplied { name } => view.json("name", name.clone()),
            Event::EventRaised { name, data } => {
                view.json("name", name.clone());
                payload(&mut view, &["data", "input"], data);
            }
            Event::ExecutionSuspended { reason }
            | Event::ExecutionResumed { reason }
            | Event::ExecutionRewound { reason } => view.json("reason", reason.clone()),
            Event::ExecutionCompleted { output } => {
                view.json("orchestrationStatus", "Completed");
                payload(&mut view, &["output", "result"], output);
            }
            Event::ExecutionFailed { failure } => {
                view.json("orchestrationStatus", "Failed");
                view.failure(failure);
            }
            Event::ExecutionTerminated { reason, cascade } => {
                view.json("orchestrationStatus", "Terminated");
                view.json("reason", reason.clone());
                if *cascade {
                    view.json("cascade", true);
                }
            }
        }
        views.push(view);
    }
    views
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
    /// An activity's or orchestrator's flow-control limits in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flow_control: Option<crate::flow::FlowControl>,
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
    /// What `registry` holds, with the activities' limits from `flow` and the orchestrators'
    /// from `orchestrator_flow` (see [`Client::flow_limits`](crate::Client::flow_limits)).
    pub(crate) fn new(
        registry: &Registry,
        flow: &std::collections::BTreeMap<String, crate::flow::FlowControl>,
        orchestrator_flow: &std::collections::BTreeMap<String, crate::flow::FlowControl>,
    ) -> Self {
        FunctionsView {
            orchestrators: registry
                .orchestrators()
                .map(|o| FunctionView {
                    name: o.name.to_owned(),
                    version: o.version,
                    input_type: (o.input_type)(),
                    output_type: (o.output_type)(),
                    flow_control: orchestrator_flow.get(o.name).cloned(),
                })
                .collect(),
            activities: registry
                .activities()
                .map(|a| FunctionView {
                    name: a.name.to_owned(),
                    version: "",
                    input_type: (a.input_type)(),
                    output_type: (a.output_type)(),
                    flow_control: flow.get(a.name).cloned(),
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
                        flow_control: None,
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

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }

    fn payload(json: &str) -> Payload {
        Payload::from_json(json).unwrap_or_else(|_| Payload::null())
    }

    #[test]
    fn history_events_are_flat_objects_with_durable_functions_fields() {
        let events = [
            Event::OrchestratorStarted {
                timestamp: at(1_000),
            },
            Event::TaskScheduled {
                seq: 2,
                name: "say_hello".into(),
                input: payload(r#""Oslo""#),
            },
            Event::OrchestratorStarted {
                timestamp: at(2_000),
            },
            Event::TaskCompleted {
                seq: 2,
                output: payload(r#""hi""#),
            },
            Event::ExecutionFailed {
                failure: Failure {
                    non_retriable: true,
                    ..Failure::application("boom")
                },
            },
        ];
        let json = serde_json::to_value(history(&events, true)).unwrap_or_default();
        let completed = &json[3];
        assert_eq!(completed["eventType"], "TaskCompleted");
        assert_eq!(completed["seq"], 2);
        assert_eq!(completed["functionName"], "say_hello");
        assert_eq!(completed["scheduledTime"], "1970-01-01T00:00:01.000Z");
        assert_eq!(completed["timestamp"], "1970-01-01T00:00:02.000Z");
        assert_eq!(completed["output"], "hi");
        assert_eq!(completed["result"], "hi");
        let failed = &json[4];
        assert_eq!(failed["orchestrationStatus"], "Failed");
        assert_eq!(failed["failure"]["nonRetriable"], true);
        assert!(failed["failure"].get("non_retriable").is_none());
        let without = serde_json::to_value(history(&events, false)).unwrap_or_default();
        assert!(without[3].get("output").is_none());
        assert!(without[3].get("result").is_none());
        assert_eq!(without[3]["functionName"], "say_hello");
    }

    #[test]
    fn deeply_nested_payloads_keep_their_event() {
        let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        let events = [Event::EventRaised {
            name: "deep".into(),
            data: payload(&deep),
        }];
        let text = serde_json::to_string(&history(&events, true)).unwrap_or_default();
        assert!(text.contains(r#""name":"deep""#), "{}", &text[..100]);
        assert!(text.contains(&deep));
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
            created_time: time(status.created_at),
            last_modified_time: time(status.updated_at),
        }
    }
}

/// Activity calls in flight as the API shows them (`GET /instances/{id}/activities`, the
/// command line's `activities --json`): camelCase, times in RFC 3339, timeouts in ms.
pub(crate) fn activities(items: &[ActivityStatus]) -> Vec<serde_json::Value> {
    let ms = |d: Option<std::time::Duration>| {
        d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    items
        .iter()
        .map(|item| {
            serde_json::json!({
                "seq": item.seq,
                "name": item.name,
                "attempt": item.attempt,
                "worker": item.locked_by,
                "leasedUntil": item.locked_until.map(time),
                "startToCloseMs": ms(item.timeouts.start_to_close),
                "scheduleToCloseMs": ms(item.timeouts.schedule_to_close),
                "heartbeatTimeoutMs": ms(item.timeouts.heartbeat_timeout),
                "deadline": item.deadline.map(time),
                "lastHeartbeat": item
                    .heartbeat
                    .as_ref()
                    .and_then(|details| details.decode::<serde_json::Value>().ok()),
                "lastHeartbeatTime": item.heartbeat_at.map(time),
            })
        })
        .collect()
}
