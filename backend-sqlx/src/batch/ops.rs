//! The store calls a writer runs: [`Op`]s, each with the [`Reply`] its caller awaits, and
//! [`Writes`], the sending side both stores forward their writes to.

use chrono::{DateTime, Utc};
use duractor::flow::FlowRule;
use duractor::store::{
    ActivityCompletion, ActivityHeartbeat, Admission, ClaimedActivities, EntityCleanup, HeldWork,
    MemoryCall, NewInstance, OrchestrationMessage, PurgeQuery, TurnCommit, TurnCommitted,
};
use duractor::{Error, Event};
use tokio::sync::{mpsc, oneshot};

use crate::common::{millis, now_ms};

/// A store call for the writer: what to do, and where its caller waits for the result.
///
/// Each variant's [`Reply`] has the type its caller awaits, and the outcome an attempt
/// prepares is stored in that reply (by [`Plan::apply`](super::Plan::apply), or by the
/// executor for the ops that run after the merged writes): an op cannot be answered with
/// another op's kind of result.
pub(crate) enum Op {
    Create {
        instance: NewInstance,
        /// Lease the instance and its `ExecutionStarted` message to this owner at once (a
        /// start by a worker's own client: its worker runs it without a claim).
        claim: Option<(String, Lease)>,
        /// The claim is for another process's worker, which the commit's work notification
        /// hands the message ([`crate::batch::plan::Plan::offered`]); the reply carries no
        /// message. A start whose message cannot travel that way (too large, or held by flow
        /// control) is left unclaimed instead.
        offer: bool,
        reply: Reply<Option<OrchestrationMessage>>,
    },
    Enqueue {
        instance_id: String,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
        reply: Reply<()>,
    },
    CleanEntities {
        reply: Reply<EntityCleanup>,
    },
    Abandon {
        owner: String,
        ids: Vec<i64>,
        visible_at: DateTime<Utc>,
        reply: Reply<()>,
    },
    Purge {
        query: PurgeQuery,
        reply: Reply<u64>,
    },
    Turn {
        turn: Box<TurnCommit>,
        /// How long the instance and the new work items stay leased, from when it runs.
        lease: Lease,
        reply: Reply<TurnCommitted>,
    },
    Complete {
        completion: ActivityCompletion,
        lease: Lease,
        reply: Reply<Option<OrchestrationMessage>>,
    },
    ClaimMessages {
        owner: String,
        limit: u32,
        lease: Lease,
        reply: Reply<Vec<OrchestrationMessage>>,
    },
    ClaimActivities {
        owner: String,
        /// Only work items of these activities.
        names: Vec<String>,
        /// The flow-control rules of limited activities among them.
        rules: Vec<FlowRule>,
        limit: u32,
        lease: Lease,
        reply: Reply<ClaimedActivities>,
    },
    /// Lets held instances of flow-controlled orchestrators run as far as the rules allow.
    Admit {
        rules: Vec<FlowRule>,
        reply: Reply<Admission>,
    },
    Renew {
        owner: String,
        held: HeldWork,
        lease: Lease,
        /// The held instances that are no longer held.
        reply: Reply<Vec<String>>,
    },
    /// Heartbeats of running work items; the reply is the ids of `running` the owner no
    /// longer holds.
    Sync {
        owner: String,
        heartbeats: Vec<(i64, String)>,
        running: Vec<i64>,
        reply: Reply<Vec<i64>>,
    },
    /// Work items, leased to `owner`, of calls it keeps in memory; the reply has each one's
    /// id, `None` for a call no longer recorded on an instance `owner` holds.
    Persist {
        owner: String,
        calls: Vec<MemoryCall>,
        lease: Lease,
        reply: Reply<Vec<Option<i64>>>,
    },
    /// Claimable work items of the calls kept in memory on instances whose lease lapsed.
    Recover {
        reply: Reply<u64>,
    },
    Release {
        instance_id: String,
        owner: String,
        reply: Reply<()>,
    },
    ReleaseAll {
        owner: String,
        reply: Reply<()>,
    },
    ResetLeases {
        reply: Reply<()>,
    },
}

impl Op {
    /// The op's name, for traces.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Enqueue { .. } => "enqueue",
            Op::CleanEntities { .. } => "clean_entities",
            Op::Abandon { .. } => "abandon",
            Op::Purge { .. } => "purge",
            Op::Turn { .. } => "turn",
            Op::Complete { .. } => "complete",
            Op::ClaimMessages { .. } => "claim_messages",
            Op::ClaimActivities { .. } => "claim_activities",
            Op::Admit { .. } => "admit",
            Op::Renew { .. } => "renew",
            Op::Sync { .. } => "sync",
            Op::Persist { .. } => "persist",
            Op::Recover { .. } => "recover",
            Op::Release { .. } => "release",
            Op::ReleaseAll { .. } => "release_all",
            Op::ResetLeases { .. } => "reset_leases",
        }
    }

    /// Whether this op only claims work (it reads and leases rows, writes nothing else).
    pub(crate) fn is_claim(&self) -> bool {
        matches!(self, Op::ClaimMessages { .. } | Op::ClaimActivities { .. })
    }

    /// Whether this op may commit after the rest of its batch, apart from it
    /// ([`claims_apart`](super::writer::claims_apart)): claims, and admissions of held
    /// instances, change nothing another op reads (they lease rows of their own, or let go
    /// instances held for the flow-control pseudo-owner, which no turn touches); after the
    /// batch, they see what it committed (a slot its turns freed, a child they created).
    pub(crate) fn commits_apart(&self) -> bool {
        self.is_claim() || matches!(self, Op::Admit { .. })
    }

    /// Ops that run after the merged writes, each with statements of its own.
    pub(crate) fn runs_after_writes(&self) -> bool {
        matches!(
            self,
            Op::ClaimMessages { .. }
                | Op::ClaimActivities { .. }
                | Op::Admit { .. }
                | Op::Abandon { .. }
                | Op::Purge { .. }
                | Op::CleanEntities { .. }
                | Op::Renew { .. }
                | Op::Sync { .. }
                | Op::Persist { .. }
                | Op::Recover { .. }
        )
    }

    /// Answers the caller: with the outcome the committed attempt prepared, or with `failed`
    /// when the batch failed.
    pub(crate) fn answer(self, failed: Option<&Error>) {
        match self {
            Op::Create { reply, .. } => reply.send(failed),
            Op::Enqueue { reply, .. }
            | Op::Abandon { reply, .. }
            | Op::Release { reply, .. }
            | Op::ReleaseAll { reply, .. }
            | Op::ResetLeases { reply } => reply.send(failed),
            Op::Turn { reply, .. } => reply.send(failed),
            Op::Complete { reply, .. } => reply.send(failed),
            Op::ClaimMessages { reply, .. } => reply.send(failed),
            Op::ClaimActivities { reply, .. } => reply.send(failed),
            Op::Admit { reply, .. } => reply.send(failed),
            Op::Renew { reply, .. } => reply.send(failed),
            Op::Sync { reply, .. } => reply.send(failed),
            Op::Persist { reply, .. } => reply.send(failed),
            Op::Recover { reply } => reply.send(failed),
            Op::Purge { reply, .. } => reply.send(failed),
            Op::CleanEntities { reply } => reply.send(failed),
        }
    }
}

/// Where the caller of an op waits for its result, and the outcome the current attempt at
/// the batch prepared for it. The outcome is sent only once the batch has committed; an
/// attempt that does not commit is followed by one that prepares its own.
pub(crate) struct Reply<T> {
    caller: oneshot::Sender<Result<T, Error>>,
    outcome: Option<Result<T, Error>>,
}

impl<T> Reply<T> {
    pub(crate) fn new(caller: oneshot::Sender<Result<T, Error>>) -> Self {
        Reply {
            caller,
            outcome: None,
        }
    }

    /// Sets the outcome of this op in the current attempt.
    pub(crate) fn set(&mut self, outcome: Result<T, Error>) {
        self.outcome = Some(outcome);
    }

    /// The outcome the current attempt prepared, if it got that far.
    #[cfg(test)]
    pub(crate) fn outcome(&self) -> Option<&Result<T, Error>> {
        self.outcome.as_ref()
    }

    fn send(self, failed: Option<&Error>) {
        let result = match failed {
            Some(error) => Err(error.clone()),
            // Every attempt that commits prepares every op's outcome; an op without one is
            // a bug in its executor, and its caller is told so rather than left waiting.
            None => self.outcome.unwrap_or_else(|| {
                Err(Error::store(
                    "internal error: the writer prepared no outcome for a store call",
                ))
            }),
        };
        // The caller may have stopped waiting.
        let _ = self.caller.send(result);
    }
}

/// A lease length, measured from when the op runs (not from when it was queued: a call that
/// waits behind a slow batch, or for a connection, still gets its whole lease).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease(i64);

impl Lease {
    /// The length of a lease that the caller, now, asked to last until `until`.
    pub(crate) fn until(until: DateTime<Utc>) -> Lease {
        Lease((millis(until) - now_ms()).max(0))
    }

    /// A lease lasting `length` from when its op runs.
    pub(crate) fn lasting(length: std::time::Duration) -> Lease {
        Lease(i64::try_from(length.as_millis()).unwrap_or(i64::MAX))
    }

    /// The lease's deadline for an op running at `now` (Unix ms).
    pub(crate) fn from(self, now: i64) -> i64 {
        now.saturating_add(self.0)
    }
}

/// The sending side of a writer: every write of the [`duractor::Store`] contract as an
/// [`Op`] for the writer, awaiting its reply. Both backends' stores forward to it.
#[derive(Clone)]
pub(crate) struct Writes {
    ops: mpsc::UnboundedSender<Op>,
    /// Which writer, for the error when it has stopped.
    database: &'static str,
}

impl Writes {
    pub(crate) fn new(ops: mpsc::UnboundedSender<Op>, database: &'static str) -> Self {
        Writes { ops, database }
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, Error> {
        let stopped = || Error::store(format!("the {} writer has stopped", self.database));
        let (caller, answer) = oneshot::channel();
        self.ops
            .send(make(Reply::new(caller)))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn create_instance(&self, instance: NewInstance) -> Result<(), Error> {
        self.write(|reply| Op::Create {
            instance,
            claim: None,
            offer: false,
            reply,
        })
        .await
        .map(drop)
    }

    /// Creates an instance leased to `owner`, a worker of another process, which the
    /// commit's work notification hands its start (see [`Op::Create`]'s `offer`).
    pub(crate) async fn create_instance_offered(
        &self,
        instance: NewInstance,
        owner: &str,
        lease: Lease,
    ) -> Result<(), Error> {
        let claim = Some((owner.to_owned(), lease));
        self.write(|reply| Op::Create {
            instance,
            claim,
            offer: true,
            reply,
        })
        .await
        .map(drop)
    }

    pub(crate) async fn create_instance_claimed(
        &self,
        instance: NewInstance,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let claim = Some((owner.to_owned(), Lease::until(lease_until)));
        self.write(|reply| Op::Create {
            instance,
            claim,
            offer: false,
            reply,
        })
        .await
    }

    pub(crate) async fn enqueue(
        &self,
        instance_id: &str,
        event: Event,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        let instance_id = instance_id.to_owned();
        self.write(|reply| Op::Enqueue {
            instance_id,
            event,
            visible_at,
            reply,
        })
        .await
    }

    pub(crate) async fn abandon_messages(
        &self,
        owner: &str,
        ids: &[i64],
        visible_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.write(|reply| Op::Abandon {
            owner,
            ids,
            visible_at,
            reply,
        })
        .await
    }

    pub(crate) async fn purge_instances(&self, query: &PurgeQuery) -> Result<u64, Error> {
        let query = query.clone();
        self.write(|reply| Op::Purge { query, reply }).await
    }

    pub(crate) async fn claim_messages(
        &self,
        owner: &str,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OrchestrationMessage>, Error> {
        let owner = owner.to_owned();
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::ClaimMessages {
            owner,
            limit,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn claim_activities(
        &self,
        owner: &str,
        names: &[String],
        rules: &[FlowRule],
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<ClaimedActivities, Error> {
        let owner = owner.to_owned();
        let names = names.to_vec();
        let rules = rules.to_vec();
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::ClaimActivities {
            owner,
            names,
            rules,
            limit,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn admit_instances(&self, rules: &[FlowRule]) -> Result<Admission, Error> {
        let rules = rules.to_vec();
        self.write(|reply| Op::Admit { rules, reply }).await
    }

    pub(crate) async fn commit_turn(&self, turn: TurnCommit) -> Result<TurnCommitted, Error> {
        let lease = Lease::until(turn.lease_until);
        self.write(|reply| Op::Turn {
            turn: Box::new(turn),
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn complete_activity(
        &self,
        completion: ActivityCompletion,
    ) -> Result<Option<OrchestrationMessage>, Error> {
        let lease = Lease::until(completion.lease_until);
        self.write(|reply| Op::Complete {
            completion,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        held: &HeldWork,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let (owner, held) = (owner.to_owned(), held.clone());
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::Renew {
            owner,
            held,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn sync_activities(
        &self,
        owner: &str,
        heartbeats: &[ActivityHeartbeat],
        running: &[i64],
    ) -> Result<Vec<i64>, Error> {
        let owner = owner.to_owned();
        let heartbeats = heartbeats
            .iter()
            .map(|beat| (beat.item_id, beat.details.as_str().to_owned()))
            .collect();
        let running = running.to_vec();
        self.write(|reply| Op::Sync {
            owner,
            heartbeats,
            running,
            reply,
        })
        .await
    }

    pub(crate) async fn persist_calls(
        &self,
        owner: &str,
        calls: &[MemoryCall],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, Error> {
        let (owner, calls) = (owner.to_owned(), calls.to_vec());
        let lease = Lease::until(lease_until);
        self.write(|reply| Op::Persist {
            owner,
            calls,
            lease,
            reply,
        })
        .await
    }

    pub(crate) async fn recover_calls(&self) -> Result<u64, Error> {
        self.write(|reply| Op::Recover { reply }).await
    }

    pub(crate) async fn release_instance(
        &self,
        instance_id: &str,
        owner: &str,
    ) -> Result<(), Error> {
        let (instance_id, owner) = (instance_id.to_owned(), owner.to_owned());
        self.write(|reply| Op::Release {
            instance_id,
            owner,
            reply,
        })
        .await
    }

    /// Releases everything `owner` holds (a worker stopping).
    pub(crate) async fn release_all(&self, owner: &str) -> Result<(), Error> {
        let owner = owner.to_owned();
        self.write(|reply| Op::ReleaseAll { owner, reply }).await
    }

    /// Voids every lease (the only worker of a file starting).
    pub(crate) async fn reset_leases(&self) -> Result<(), Error> {
        self.write(|reply| Op::ResetLeases { reply }).await
    }

    pub(crate) async fn clean_entities(&self) -> Result<EntityCleanup, Error> {
        self.write(|reply| Op::CleanEntities { reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_measured_from_when_the_op_runs() {
        let lease =
            Lease::until(DateTime::from_timestamp_millis(now_ms() + 30_000).unwrap_or_default());
        // Run 10 s later, the lease still has (about) its 30 s.
        let later = now_ms() + 10_000;
        let until = lease.from(later);
        assert!((until - later - 30_000).abs() < 1_000, "{}", until - later);
        // A deadline in the past is a lease of zero, never negative.
        let past = Lease::until(DateTime::from_timestamp_millis(0).unwrap_or_default());
        assert_eq!(past.from(later), later);
    }
}
