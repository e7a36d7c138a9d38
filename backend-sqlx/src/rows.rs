//! The rows both drivers read, decoded once: claimed queue messages, claimed activity work
//! items, instance status rows and entity rows.
//!
//! Each shape is a plain tuple of its columns in `SELECT` order, which sqlx decodes from
//! either driver's row; the functions here make store values of them. The drivers keep their
//! own SQL and choose how a failure reaches the caller: the writers pass a row that does not
//! decode back as the attempt's `sqlx::Error` and a stored value that does not decode as the
//! op's outcome; the reads turn both into the caller's error.

use duractor::entity::EntityId;
use duractor::store::{
    ActivityStatus, ActivityWorkItem, EntityStatus, InstanceStatus, OrchestrationMessage,
};
use duractor::{Error, Payload, RuntimeStatus};
use sqlx::{FromRow, Row};

use crate::common::{decode_bounds, decode_event, decode_failure, decode_payload, from_millis};
use crate::error::StoreError;

/// A queue message: `id, instance_id, message, execution`.
type MessageColumns = (i64, String, String, Option<i64>);

/// Claimed messages from rows of `id, instance_id, message, execution`, in queue order. The
/// outer error is a row that does not decode; the inner one a stored event that does not.
pub(crate) fn messages<R: Row>(
    rows: &[R],
) -> Result<Result<Vec<OrchestrationMessage>, Error>, sqlx::Error>
where
    for<'r> MessageColumns: FromRow<'r, R>,
{
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, instance_id, message, execution) = MessageColumns::from_row(row)?;
        let event = match decode_event(&message) {
            Ok(event) => event,
            Err(error) => return Ok(Err(error)),
        };
        messages.push(OrchestrationMessage {
            id,
            instance_id,
            event,
            execution: execution.and_then(|e| u32::try_from(e).ok()),
        });
    }
    messages.sort_by_key(|m| m.id);
    Ok(Ok(messages))
}

/// A claimed work item: `id, instance_id, seq, name, input, attempt, execution, timeouts,
/// heartbeat`.
type ActivityColumns = (
    i64,
    String,
    i64,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

/// Claimed work items from rows of [`ActivityColumns`], in queue order. The outer error is a
/// row that does not decode; the inner one a stored
/// input that is not JSON.
pub(crate) fn activity_items<R: Row>(
    rows: &[R],
) -> Result<Result<Vec<ActivityWorkItem>, Error>, sqlx::Error>
where
    for<'r> ActivityColumns: FromRow<'r, R>,
{
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, instance_id, seq, name, input, attempt, execution, bounds, heartbeat) =
            ActivityColumns::from_row(row)?;
        let (timeouts, deadline) = decode_bounds(bounds.as_deref());
        let heartbeat = match decode_payload(heartbeat) {
            Ok(heartbeat) => heartbeat,
            Err(error) => return Ok(Err(error)),
        };
        let input = match Payload::from_json(input) {
            Ok(input) => input,
            Err(e) => {
                return Ok(Err(Error::store(format!(
                    "a stored activity input is not valid JSON: {e}"
                ))));
            }
        };
        items.push(ActivityWorkItem {
            id,
            instance_id,
            seq: u64::try_from(seq).unwrap_or_default(),
            name,
            input,
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            execution: u32::try_from(execution).unwrap_or_default(),
            timeouts,
            deadline,
            heartbeat,
        });
    }
    items.sort_by_key(|i| i.id);
    Ok(Ok(items))
}

/// The columns of an instance's status, in the order [`instance_status`] reads them.
pub(crate) const INSTANCE_COLUMNS: &str = "instance_id, name, version, status, input, output, \
     failure, custom_status, created_at, updated_at, completed_at";

/// [`INSTANCE_COLUMNS`].
type InstanceColumns = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

/// An orchestration instance's status from a row of [`INSTANCE_COLUMNS`].
pub(crate) fn instance_status<R: Row>(row: &R) -> Result<InstanceStatus, Error>
where
    for<'r> InstanceColumns: FromRow<'r, R>,
{
    status_of(
        InstanceColumns::from_row(row).map_err(|e| undecodable("reading an instance row", e))?,
    )
}

/// An orchestration instance's status from a JSON array of [`INSTANCE_COLUMNS`] (a
/// statement's `json_build_array(…)`, a notification's payload).
pub(crate) fn instance_status_json(json: &str) -> Result<InstanceStatus, Error> {
    status_of(
        serde_json::from_str(json)
            .map_err(|e| Error::store(format!("an instance row in JSON is not readable: {e}")))?,
    )
}

fn status_of(
    (
        instance_id,
        name,
        version,
        status,
        input,
        output,
        failure,
        custom_status,
        created_at,
        updated_at,
        completed_at,
    ): InstanceColumns,
) -> Result<InstanceStatus, Error> {
    Ok(InstanceStatus {
        instance_id,
        name,
        version,
        status: status.parse::<RuntimeStatus>()?,
        input: Payload::from_json(input)
            .map_err(|e| Error::store(format!("a stored input is not valid JSON: {e}")))?,
        output: decode_payload(output)?,
        failure: decode_failure(failure)?,
        custom_status: decode_payload(custom_status)?,
        created_at: from_millis(created_at),
        updated_at: from_millis(updated_at),
        completed_at: completed_at.map(from_millis),
    })
}

/// An entity: `instance_id, entity_state, lock_owner, created_at, updated_at`.
type EntityColumns = (String, Option<String>, Option<String>, i64, i64);

/// An entity from a row of `instance_id, entity_state, lock_owner, created_at, updated_at`.
pub(crate) fn entity_status<R: Row>(row: &R) -> Result<EntityStatus, Error>
where
    for<'r> EntityColumns: FromRow<'r, R>,
{
    let (instance_id, state, lock_owner, created_at, updated_at) =
        EntityColumns::from_row(row).map_err(|e| undecodable("reading an entity row", e))?;
    let id = EntityId::from_instance_id(&instance_id)
        .ok_or_else(|| Error::store(format!("`{instance_id}` is not an entity id")))?;
    Ok(EntityStatus {
        id,
        state: decode_payload(state)?,
        lock_owner,
        created_at: from_millis(created_at),
        updated_at: from_millis(updated_at),
    })
}

/// A row whose columns do not decode (a missing column, another type). sqlx raises that
/// itself, whatever the database: it is never transient, the same row fails again.
fn undecodable(context: &str, error: sqlx::Error) -> Error {
    StoreError::new(context, false, error).into()
}

/// The columns of an activity status, in the order [`activity_statuses`] reads them.
pub(crate) const ACTIVITY_STATUS_COLUMNS: &str = "id, instance_id, seq, name, attempt, \
     locked_by, locked_until, timeouts, heartbeat, heartbeat_at, flow_key, priority";

/// [`ACTIVITY_STATUS_COLUMNS`].
type ActivityStatusColumns = (
    i64,
    String,
    i64,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i32,
);

/// Activity statuses from rows of [`ACTIVITY_STATUS_COLUMNS`].
pub(crate) fn activity_statuses<R: Row>(rows: &[R]) -> Result<Vec<ActivityStatus>, Error>
where
    for<'r> ActivityStatusColumns: FromRow<'r, R>,
{
    rows.iter()
        .map(|row| {
            let (
                id,
                instance_id,
                seq,
                name,
                attempt,
                locked_by,
                locked_until,
                bounds,
                heartbeat,
                at,
                flow_key,
                priority,
            ) = ActivityStatusColumns::from_row(row)
                .map_err(|e| undecodable("an activity work item row", e))?;
            let (timeouts, deadline) = decode_bounds(bounds.as_deref());
            Ok(ActivityStatus {
                id,
                instance_id,
                seq: u64::try_from(seq).unwrap_or_default(),
                name,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                locked_by,
                locked_until: locked_until.map(from_millis),
                timeouts,
                deadline,
                heartbeat: decode_payload(heartbeat)?,
                heartbeat_at: at.map(from_millis),
                flow_key,
                priority,
            })
        })
        .collect()
}
