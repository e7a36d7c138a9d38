//! The executor: feeds history into the orchestrator future, event by event.
//!
//! An `Executor` owns one instance's live orchestrator future and the state its
//! [`OrchestrationContext`] reads. It is driven in two ways:
//!
//! * `Executor::replay` rebuilds an instance from recorded history (after a restart or an
//!   unload). Every recorded decision (a `TaskScheduled`, `TimerCreated`,
//!   `SubOrchestrationScheduled`, `PatchApplied`) must match what the code does now at the same
//!   point, else the instance fails with [`Error::NonDeterminism`].
//! * `Executor::run_turn` applies new messages (activity results, fired timers, raised
//!   events, control messages) one at a time, polling the future after each, and returns the
//!   events to append to history and the work to send out.
//!
//! Both paths apply one event and then poll, so the code observes completions in exactly the
//! order history records them: a `select` is won by the first completion in history, on every
//! replay. The future is polled with a no-op waker: durable futures only read the state that
//! applying events changes, so there is nothing to wake. While replaying, `tracing` events
//! emitted by orchestrator code are dropped: they were emitted when the step first ran.
//!
//! [`check_history`] runs a recorded history against the current code without a store: use it
//! in tests to check that a new version of an orchestrator can still replay old instances.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};

use super::actions::Action;
use super::context::OrchestrationContext;
use super::entry::OrchestratorEntry;
use super::state::{CallKind, Completion};
use crate::error::{Error, Failure};
use crate::handles::LocalBoxFuture;
use crate::history::{Event, ParentInstance};
use crate::limits::Limits;
use crate::panics::panic_message;
use crate::payload::Payload;

/// How an execution ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Completed(Payload),
    Failed(Failure),
    Terminated(String),
    /// `continue_as_new`: a new execution starts with `input`, receiving `carried` events.
    ContinuedAsNew {
        input: Payload,
        carried: Vec<(String, Payload)>,
        preserve_events: bool,
    },
}

/// What one turn produced.
#[derive(Debug, Default, Clone)]
pub(crate) struct TurnOutput {
    /// Events to append to history, in order.
    pub(crate) new_events: Vec<Event>,
    /// Durable calls to carry out (activities to run, timers to arm, children to start).
    pub(crate) actions: Vec<Action>,
    /// Set when the execution ended in this turn.
    pub(crate) finished: Option<Outcome>,
    /// Indexes of messages not consumed because the instance is suspended.
    pub(crate) deferred: Vec<usize>,
    /// Sub-orchestrations to terminate with this instance (cascading terminate).
    pub(crate) terminate_children: Vec<String>,
}

impl TurnOutput {
    /// Appends what the next turn of the same execution produced: its events and calls come
    /// after these, and its ending (if any) is the ending. `deferred` indexes the messages of
    /// one turn only, so a turn that deferred messages cannot be followed.
    pub(crate) fn append(&mut self, next: TurnOutput) {
        debug_assert!(self.deferred.is_empty() && self.finished.is_none());
        self.new_events.extend(next.new_events);
        self.actions.extend(next.actions);
        self.finished = next.finished;
        self.deferred = next.deferred;
        self.terminate_children.extend(next.terminate_children);
    }
}

/// One instance's live orchestrator future and its replay state.
pub(crate) struct Executor {
    ctx: OrchestrationContext,
    entry: OrchestratorEntry,
    root: Option<LocalBoxFuture<'static, Result<Payload, Failure>>>,
    outcome: Option<Outcome>,
    parent: Option<ParentInstance>,
    suspended: bool,
    history_len: u64,
}

impl Executor {
    pub(crate) fn new(instance_id: Arc<str>, entry: OrchestratorEntry, limits: Limits) -> Self {
        Executor {
            ctx: OrchestrationContext::new(instance_id, limits),
            entry,
            root: None,
            outcome: None,
            parent: None,
            suspended: false,
            history_len: 0,
        }
    }

    /// The parent to notify when this execution ends, for sub-orchestrations.
    pub(crate) fn parent(&self) -> Option<&ParentInstance> {
        self.parent.as_ref()
    }

    /// The current execution number.
    pub(crate) fn execution(&self) -> u32 {
        self.ctx.state().execution()
    }

    /// The orchestrator's name and version for this instance.
    pub(crate) fn name_and_version(&self) -> (String, String) {
        let state = self.ctx.state();
        (state.name().to_owned(), state.version().to_owned())
    }

    /// `true` when the orchestrator has ended (returned, failed, continued as new) but no
    /// turn has recorded it yet: after a replay of a history that stops short of the end,
    /// such as a rewound one whose failure came from the orchestrator code itself. A turn
    /// with no messages records the outcome.
    pub(crate) fn has_unrecorded_outcome(&self) -> bool {
        self.outcome.is_some()
    }

    /// Whether the code cancelled call `seq`.
    pub(crate) fn is_cancelled(&self, seq: u64) -> bool {
        self.ctx.state().is_cancelled(seq)
    }

    /// `true` while suspended.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// The custom status, if the code set one since the last call.
    pub(crate) fn take_custom_status(&mut self) -> Option<Payload> {
        self.ctx.state().take_custom_status_change()
    }

    /// Calls made and not completed: what a rewound instance must run again.
    pub(crate) fn open_calls(&self, history: &[Event]) -> Vec<Event> {
        let state = self.ctx.state();
        history
            .iter()
            .filter(|event| match event {
                Event::TaskScheduled { seq, .. }
                | Event::TimerCreated { seq, .. }
                | Event::SubOrchestrationScheduled { seq, .. } => state.is_open(*seq),
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// Rebuilds the orchestrator's state from recorded history.
    ///
    /// Fails with the [`Error::NonDeterminism`] failure when the code's durable calls do not
    /// match what history recorded.
    pub(crate) fn replay(&mut self, history: &[Event]) -> Result<(), Failure> {
        self.ctx.state().begin_replay(
            history
                .iter()
                .filter(|e| e.is_decision())
                .cloned()
                .collect(),
        );
        for event in history {
            if event.is_decision() {
                let produced = self.ctx.state().next_produced();
                match produced {
                    Some(action) if action.matches(event) => self.ctx.state().record(&action),
                    Some(action) => {
                        return Err(self.nondeterminism(event.describe(), action.describe_now()));
                    }
                    None => {
                        let now = if self.outcome.is_some() {
                            "returned before making it".to_owned()
                        } else {
                            "makes no durable call at this point".to_owned()
                        };
                        return Err(self.nondeterminism(event.describe(), now));
                    }
                }
            } else if !event.is_terminal() {
                self.ctx.state().set_position(self.history_len);
                self.apply(event.clone());
            }
            self.history_len += 1;
        }
        let extra = self.ctx.state().next_produced();
        if let Some(action) = extra {
            return Err(
                self.nondeterminism("no further durable call".to_owned(), action.describe_now())
            );
        }
        self.ctx.state().end_replay();
        Ok(())
    }

    fn nondeterminism(&self, recorded: String, now: String) -> Failure {
        Error::NonDeterminism {
            instance_id: self.ctx.instance_id().to_owned(),
            position: self.history_len,
            recorded,
            now,
        }
        .to_failure()
    }

    /// Runs one turn: records `OrchestratorStarted { now }`, then applies each message and
    /// polls after each. Messages that are not expected (a duplicate activity result, a
    /// result for a finished execution) are skipped, so at-least-once delivery never
    /// duplicates a step in history. While suspended, messages other than control messages are
    /// left unconsumed (`deferred`).
    pub(crate) fn run_turn(&mut self, now: DateTime<Utc>, messages: Vec<Event>) -> TurnOutput {
        let mut out = TurnOutput::default();
        self.ctx.state().begin_turn();
        self.record(&mut out, Event::OrchestratorStarted { timestamp: now });
        for (index, message) in messages.into_iter().enumerate() {
            if let Some(outcome) = &mut self.outcome {
                // Events that arrived in the turn that continued-as-new are unprocessed
                // events too: the new execution gets them if it asked for them.
                if let (
                    Outcome::ContinuedAsNew {
                        carried,
                        preserve_events: true,
                        ..
                    },
                    Event::EventRaised { name, data },
                ) = (outcome, &message)
                {
                    carried.push((name.clone(), data.clone()));
                }
                continue;
            }
            if self.suspended && !message.is_control() {
                out.deferred.push(index);
                continue;
            }
            if !self.accepts(&message) {
                tracing::debug!(
                    instance_id = %self.ctx.instance_id(),
                    event = message.kind(),
                    "skipping a message that is not expected (duplicate delivery)"
                );
                continue;
            }
            if let Event::ExecutionTerminated { reason, cascade } = &message {
                if *cascade {
                    out.terminate_children = self.ctx.state().open_children();
                }
                self.outcome = Some(Outcome::Terminated(reason.clone()));
                self.root = None;
            }
            self.record(&mut out, message);
            let produced = self.ctx.state().drain_produced();
            for action in produced {
                self.ctx.state().record(&action);
                self.record(&mut out, action.to_event());
                out.actions.push(action);
            }
            self.check_limits(&out);
        }
        if self.outcome.is_some() {
            // An execution never ends holding entities: release its critical section.
            self.ctx.state().release_critical_section();
        }
        let produced = self.ctx.state().drain_produced();
        for action in produced {
            self.ctx.state().record(&action);
            self.record(&mut out, action.to_event());
            out.actions.push(action);
        }
        if let Some(outcome) = self.outcome.clone() {
            match &outcome {
                Outcome::Completed(output) => self.record(
                    &mut out,
                    Event::ExecutionCompleted {
                        output: output.clone(),
                    },
                ),
                Outcome::Failed(failure) => self.record(
                    &mut out,
                    Event::ExecutionFailed {
                        failure: failure.clone(),
                    },
                ),
                // The terminate message itself was recorded; a new execution replaces this
                // history entirely.
                Outcome::Terminated(_) | Outcome::ContinuedAsNew { .. } => {}
            }
            out.finished = Some(outcome);
        }
        out
    }

    /// Fails the execution when the turn broke a guard rail.
    fn check_limits(&mut self, out: &TurnOutput) {
        if self.outcome.is_some() {
            return;
        }
        let limits = self.ctx.state().limits();
        let failure = if out.actions.len() > limits.max_actions_per_turn {
            Some(Error::LimitExceeded {
                limit: "max_actions_per_turn",
                message: format!(
                    "one turn made {} durable calls; the limit is {} (Limits::max_actions_per_turn). \
                     Split the fan-out into batches or sub-orchestrations",
                    out.actions.len(),
                    limits.max_actions_per_turn
                ),
            })
        } else if self.history_len > limits.max_history_events {
            Some(Error::LimitExceeded {
                limit: "max_history_events",
                message: format!(
                    "the history has {} events; the limit is {} (Limits::max_history_events). \
                     Long-running orchestrations should call `ctx.continue_as_new(..)` to start \
                     over with a fresh history",
                    self.history_len, limits.max_history_events
                ),
            })
        } else {
            None
        };
        if let Some(error) = failure {
            let mut failure = error.to_failure();
            failure.non_retriable = true;
            self.outcome = Some(Outcome::Failed(failure));
            self.root = None;
        }
    }

    /// Appends `event` to the turn's output and applies it (decisions are only recorded).
    fn record(&mut self, out: &mut TurnOutput, event: Event) {
        self.ctx.state().set_position(self.history_len);
        self.history_len += 1;
        if !event.is_decision() && !event.is_terminal() {
            self.apply(event.clone());
        }
        out.new_events.push(event);
    }

    fn accepts(&self, message: &Event) -> bool {
        let state = self.ctx.state();
        match message {
            Event::ExecutionStarted { .. } => self.root.is_none() && self.outcome.is_none(),
            Event::TaskCompleted { seq, .. } | Event::TaskFailed { seq, .. } => {
                state.expects(*seq, CallKind::Activity)
            }
            Event::TimerFired { seq, .. } => state.expects(*seq, CallKind::Timer),
            Event::SubOrchestrationCompleted { seq, .. }
            | Event::SubOrchestrationFailed { seq, .. } => {
                state.expects(*seq, CallKind::SubOrchestration)
            }
            Event::EntityCompleted { seq, .. } | Event::EntityFailed { seq, .. } => {
                state.expects(*seq, CallKind::Entity)
            }
            Event::EntityLockGranted { seq } => state.expects(*seq, CallKind::Lock),
            Event::EventRaised { .. } => self.root.is_some(),
            Event::ExecutionSuspended { .. } => !self.suspended,
            Event::ExecutionResumed { .. } => self.suspended,
            Event::ExecutionTerminated { .. } => true,
            _ => false,
        }
    }

    /// Applies one input event to the state and polls the orchestrator.
    fn apply(&mut self, event: Event) {
        match event {
            Event::OrchestratorStarted { timestamp } => {
                self.ctx.state().set_now(timestamp);
                return;
            }
            Event::ExecutionStarted {
                name,
                input,
                version,
                execution,
                parent,
            } => {
                self.ctx.state().start_execution(name, version, execution);
                self.parent = parent;
                self.root = Some((self.entry.invoke)(self.ctx.clone(), input));
            }
            Event::TaskCompleted { seq, output } => {
                self.ctx
                    .state()
                    .complete(seq, Completion::Activity(Ok(output)));
            }
            Event::TaskFailed {
                seq,
                failure,
                heartbeat,
            } => {
                let mut state = self.ctx.state();
                if let Some(details) = heartbeat {
                    state.keep_failed_heartbeat(seq, details);
                }
                state.complete(seq, Completion::Activity(Err(failure)));
            }
            Event::TimerFired { seq, .. } => self.ctx.state().complete(seq, Completion::Timer),
            Event::SubOrchestrationCompleted { seq, output } => self
                .ctx
                .state()
                .complete(seq, Completion::SubOrchestration(Ok(output))),
            Event::SubOrchestrationFailed { seq, failure } => self
                .ctx
                .state()
                .complete(seq, Completion::SubOrchestration(Err(failure))),
            Event::EntityCompleted { seq, output } => self
                .ctx
                .state()
                .complete(seq, Completion::Entity(Ok(output))),
            Event::EntityFailed { seq, failure } => self
                .ctx
                .state()
                .complete(seq, Completion::Entity(Err(failure))),
            Event::EntityLockGranted { seq } => self.ctx.state().complete(seq, Completion::Lock),
            Event::EventRaised { name, data } => self.ctx.state().raise(&name, data),
            Event::ExecutionSuspended { .. } => {
                self.suspended = true;
                return;
            }
            Event::ExecutionResumed { .. } => {
                self.suspended = false;
                return;
            }
            _ => return,
        }
        self.poll();
    }

    fn poll(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let Some(root) = self.root.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        let replaying = self.ctx.state().is_replaying();
        let state = self.ctx.state_handle();
        let mut poll = || {
            catch_unwind(AssertUnwindSafe(|| {
                state.polling(|| crate::panics::caught(|| root.as_mut().poll(&mut cx)))
            }))
        };
        let result = if replaying {
            // Orchestrator code logged these events when the step first ran.
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), poll)
        } else {
            poll()
        };
        let fatal = self.ctx.state().take_fatal();
        if let Some(failure) = fatal {
            // The execution fails here: calls made in this poll are not carried out.
            self.outcome = Some(Outcome::Failed(failure));
            self.root = None;
            return;
        }
        match result {
            Ok(Poll::Pending) => {
                let request = self.ctx.state().take_continue_request();
                if let Some(request) = request {
                    let carried = if request.preserve_events {
                        self.ctx.state().take_buffered()
                    } else {
                        Vec::new()
                    };
                    self.outcome = Some(Outcome::ContinuedAsNew {
                        input: request.input,
                        carried,
                        preserve_events: request.preserve_events,
                    });
                }
            }
            Ok(Poll::Ready(Ok(output))) => {
                let limits = self.ctx.state().limits();
                self.outcome = Some(
                    match limits.check_payload(
                        &format!("the output of orchestrator `{}`", self.entry.name),
                        &output,
                    ) {
                        Ok(()) => Outcome::Completed(output),
                        Err(error) => Outcome::Failed(error.to_failure()),
                    },
                );
            }
            Ok(Poll::Ready(Err(failure))) => self.outcome = Some(Outcome::Failed(failure)),
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(
                    instance_id = %self.ctx.instance_id(),
                    orchestrator = self.entry.name,
                    at = crate::panics::take_location().as_deref().unwrap_or("?"),
                    "orchestrator panicked: {message}"
                );
                self.outcome = Some(Outcome::Failed(Failure::panic(format!(
                    "orchestrator `{}` panicked: {message}",
                    self.entry.name
                ))));
            }
        }
        if self.outcome.is_some() {
            // Drop the finished future now: durable futures it still holds (a losing timer)
            // must not keep anything alive.
            self.root = None;
        }
    }
}

/// Replays `history` with the orchestrator `entry` and reports whether the current code
/// makes the same durable calls: `Err` carries the NonDeterminism failure (or the
/// orchestrator's own failure if it fails during replay).
///
/// ```
/// use duractor::prelude::*;
/// use duractor::registry::OrchestratorEntry;
///
/// #[orchestrator]
/// async fn noop(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
///     Ok(())
/// }
///
/// let history = vec![duractor::Event::ExecutionStarted {
///     name: "noop".into(),
///     version: String::new(),
///     input: duractor::Payload::null(),
///     execution: 0,
///     parent: None,
/// }];
/// duractor::replay::check_history(&OrchestratorEntry::of::<Noop>(), "id-1", &history).unwrap();
/// ```
pub fn check_history(
    entry: &OrchestratorEntry,
    instance_id: &str,
    history: &[Event],
) -> Result<(), Failure> {
    let mut executor = Executor::new(Arc::from(instance_id), *entry, Limits::default());
    executor.replay(history)
}

/// Replays `history` like [`check_history`] and returns the names of the external events the
/// code waits for at its end (sorted): what an instance waits on that history does not record.
pub(crate) fn check_history_and_waits(
    entry: &OrchestratorEntry,
    instance_id: &str,
    history: &[Event],
) -> Result<Vec<String>, Failure> {
    let mut executor = Executor::new(Arc::from(instance_id), *entry, Limits::default());
    executor.replay(history)?;
    Ok(executor.ctx.state().awaited_events())
}
