//! Replays of recorded histories against the current code: the test that fails when a code
//! change would break instances that are running now.

use std::path::Path;

use crate::error::Error;
use crate::history::{Event, orchestrator_of};
use crate::orchestration::{OrchestratorBody, OrchestratorEntry, check_history};

/// Replays `history` (one execution of an instance, as [`Client::history`](crate::Client::history)
/// returns it) against the current code of `orchestrator`.
///
/// `Ok(())` when the code makes the same durable calls in the same order as history recorded;
/// otherwise the error names the position in history, what history recorded there and what
/// the code does now (the same check a worker makes when it loads the instance).
///
/// ```
/// use duractor::prelude::*;
/// use duractor::testing::replay_history;
///
/// #[orchestrator]
/// async fn greet(ctx: OrchestrationContext, name: String) -> Result<String, duractor::Error> {
///     Ok(format!("hello {name}"))
/// }
///
/// let history: Vec<duractor::Event> = serde_json::from_str(
///     r#"[{"OrchestratorStarted":{"timestamp":"2026-01-01T00:00:00Z"}},
///         {"ExecutionStarted":{"name":"greet","input":"ana"}}]"#,
/// ).unwrap();
/// replay_history(Greet, &history).unwrap();
/// ```
pub fn replay_history<O: OrchestratorBody>(
    orchestrator: O,
    history: &[Event],
) -> Result<(), Error> {
    replay_as(orchestrator, "replayed-history", history)
}

/// Reads a history exported with `APP history ID --export` (or a JSON array of
/// [`Event`]s, e.g. `serde_json::to_string(&client.history(id).await?)`) from `path` and
/// replays it (see [`replay_history`]).
///
/// ```no_run
/// # use duractor::prelude::*;
/// # #[orchestrator]
/// # async fn approval(ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> { Ok(()) }
/// #[test]
/// fn running_approvals_still_replay() {
///     duractor::testing::replay_history_file(Approval, "tests/histories/po-1001.json").unwrap();
/// }
/// ```
pub fn replay_history_file<O: OrchestratorBody>(
    orchestrator: O,
    path: impl AsRef<Path>,
) -> Result<(), Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot read the history file `{}`: {e}",
            path.display()
        ))
    })?;
    let history: Vec<Event> = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidArgument(format!(
            "`{}` is not an exported history ({e}); export one with `APP history ID --export > FILE`",
            path.display()
        ))
    })?;
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    replay_as(orchestrator, &name, &history)
}

fn replay_as<O: OrchestratorBody>(
    _orchestrator: O,
    instance_id: &str,
    history: &[Event],
) -> Result<(), Error> {
    match orchestrator_of(history) {
        None => {
            return Err(Error::InvalidArgument(
                "the history has no ExecutionStarted event: it is not one execution of an orchestration instance".to_owned(),
            ));
        }
        Some(name) if name != O::NAME => {
            return Err(Error::InvalidArgument(format!(
                "the history is of orchestrator `{name}`, not `{}`",
                O::NAME
            )));
        }
        Some(_) => {}
    }
    check_history(&OrchestratorEntry::of::<O>(), instance_id, history).map_err(Error::Failed)
}
