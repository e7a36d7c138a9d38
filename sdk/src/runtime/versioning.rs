//! Versioning admission: whether this worker runs an instance, given the version stamped on
//! it at start and the worker's [`Versioning`] policy. Pure; the instance actor acts on the
//! answer.

use std::time::Duration;

use crate::error::Failure;
use crate::history::Event;
use crate::orchestration::OrchestratorEntry;
use crate::registry::Registry;

/// Which instance versions a worker runs; see [`RuntimeBuilder::versioning`](super::RuntimeBuilder::versioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioning {
    /// How an instance's version must relate to the orchestrator's current version.
    pub match_strategy: VersionMatch,
    /// What to do with an instance whose version does not match.
    pub on_mismatch: VersionMismatch,
    /// With [`VersionMismatch::Reject`], how long a rejected instance's messages stay
    /// invisible before a worker looks at them again (default 30 s).
    pub retry_rejected_after: Duration,
}

impl Default for Versioning {
    fn default() -> Self {
        Versioning {
            match_strategy: VersionMatch::default(),
            on_mismatch: VersionMismatch::default(),
            retry_rejected_after: Duration::from_secs(30),
        }
    }
}

/// How an instance's version (stamped at start) must relate to the version of the
/// orchestrator in this worker (`#[orchestrator(version = "..")]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionMatch {
    /// Run every instance, whatever its version (the code branches on `ctx.version()` or
    /// `ctx.is_patched(..)`). The default.
    #[default]
    Any,
    /// Run only instances of exactly this version.
    Strict,
    /// Run instances of this version or older (versions compare numerically: "1.10" > "1.9").
    CurrentOrOlder,
}

/// What a worker does with an instance whose version does not match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VersionMismatch {
    /// Leave it for another worker: its messages go back to the store and become visible
    /// again after [`Versioning::retry_rejected_after`]. The default.
    #[default]
    Reject,
    /// Fail the instance with a version-mismatch error.
    Fail,
}

/// Why this worker does not run an instance.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Leave the instance to a worker with a matching version.
    Reject(String),
    /// Fail the instance.
    Fail(Failure),
}

/// The orchestrator to run the instance whose history (or start messages) is `events`, if
/// `policy` lets this worker run it.
pub(super) fn admit(
    registry: &Registry,
    policy: &Versioning,
    events: &[Event],
) -> Result<OrchestratorEntry, Refusal> {
    let started = events.iter().find_map(|event| match event {
        Event::ExecutionStarted { name, version, .. } => Some((name.as_str(), version.as_str())),
        _ => None,
    });
    let Some((name, version)) = started else {
        return Err(Refusal::Fail(Failure::new(
            "corrupt_history",
            "the history of this instance has no ExecutionStarted event",
        )));
    };
    let entry = match registry.get_orchestrator(name) {
        Ok(entry) => *entry,
        Err(error) => return Err(Refusal::Fail(error.to_failure())),
    };
    let accepted = match policy.match_strategy {
        VersionMatch::Any => true,
        VersionMatch::Strict => version == entry.version,
        VersionMatch::CurrentOrOlder => compare_versions(version, entry.version).is_le(),
    };
    if accepted {
        return Ok(entry);
    }
    let message = format!(
        "instance version `{version}` does not match this worker's orchestrator `{name}` version `{}` \
         (version match strategy {:?})",
        entry.version, policy.match_strategy
    );
    Err(match policy.on_mismatch {
        VersionMismatch::Reject => Refusal::Reject(message),
        VersionMismatch::Fail => {
            let mut failure = Failure::new("version_mismatch", message);
            failure.non_retriable = true;
            Refusal::Fail(failure)
        }
    })
}

/// Orders versions numerically where they are numbers: "1.10" > "1.9" > "1".
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.split(['.', '-'])
            .map(|p| {
                let number = p
                    .parse::<u64>()
                    .unwrap_or(if p.is_empty() { 0 } else { u64::MAX });
                (number, p.to_owned())
            })
            .collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::orchestration::OrchestrationContext;
    use crate::payload::Payload;
    use std::cmp::Ordering;

    #[crate::orchestrator(version = "2")]
    async fn flow(_ctx: OrchestrationContext, _: ()) -> Result<(), Error> {
        Ok(())
    }

    fn started(name: &str, version: &str) -> Vec<Event> {
        vec![Event::ExecutionStarted {
            name: name.into(),
            version: version.into(),
            input: Payload::null(),
            execution: 0,
            parent: None,
        }]
    }

    fn policy(match_strategy: VersionMatch, on_mismatch: VersionMismatch) -> Versioning {
        Versioning {
            match_strategy,
            on_mismatch,
            ..Versioning::default()
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.orchestrator(Flow);
        registry
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("2", "10"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare_versions("", "1"), Ordering::Less);
    }

    #[test]
    fn any_runs_every_version() {
        let any = policy(VersionMatch::Any, VersionMismatch::Fail);
        for version in ["", "1", "2", "3"] {
            let entry = admit(&registry(), &any, &started("flow", version)).unwrap();
            assert_eq!(entry.name, "flow");
        }
    }

    #[test]
    fn strict_rejects_or_fails_other_versions() {
        let strict = policy(VersionMatch::Strict, VersionMismatch::Reject);
        assert!(admit(&registry(), &strict, &started("flow", "2")).is_ok());
        match admit(&registry(), &strict, &started("flow", "1")) {
            Err(Refusal::Reject(why)) => assert_eq!(
                why,
                "instance version `1` does not match this worker's orchestrator `flow` version `2` \
                 (version match strategy Strict)"
            ),
            other => panic!("expected a rejection, got {other:?}"),
        }
        let failing = policy(VersionMatch::Strict, VersionMismatch::Fail);
        match admit(&registry(), &failing, &started("flow", "3")) {
            Err(Refusal::Fail(failure)) => {
                assert_eq!(failure.kind, "version_mismatch");
                assert!(failure.non_retriable);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn current_or_older_runs_older_versions_only() {
        let older = policy(VersionMatch::CurrentOrOlder, VersionMismatch::Reject);
        assert!(admit(&registry(), &older, &started("flow", "1.9")).is_ok());
        assert!(admit(&registry(), &older, &started("flow", "2")).is_ok());
        assert!(matches!(
            admit(&registry(), &older, &started("flow", "10")),
            Err(Refusal::Reject(_))
        ));
    }

    #[test]
    fn unknown_orchestrators_and_histories_without_a_start_fail() {
        let any = Versioning::default();
        match admit(&registry(), &any, &started("nope", "")) {
            Err(Refusal::Fail(failure)) => {
                let expected = registry().get_orchestrator("nope").unwrap_err();
                assert!(matches!(expected, Error::UnknownOrchestrator { .. }));
                assert_eq!(failure.message, expected.to_failure().message);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match admit(&registry(), &any, &[]) {
            Err(Refusal::Fail(failure)) => assert_eq!(failure.kind, "corrupt_history"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
