//! Which worker process answers a lone start.
//!
//! Every worker listens on the schema's work channel, and a notification used to wake them
//! all: for a start on its own (a client starting one instance at a time) every worker then
//! sent a claim, one took the instance and the others found nothing — on two workers, twice
//! the claims, and a second claim competing with the first for the server. Now a lone start
//! goes to that instance's *lead*: the worker whose score for the instance id ([`score`]) is
//! highest among the schema's live workers (rendezvous hashing: the starts spread evenly, and
//! a worker joining or leaving moves only its own share). Every other notification still
//! wakes every worker.
//!
//! A client that knows the live workers *hands* the start to its lead: it creates the
//! instance leased to the lead for [`OFFER_LEASE`], and the commit's notification carries the
//! start's message ([`offer_payload`]), so the lead runs it without a claim
//! ([`Workers::offer_to`], [`Workers::hand`]). A client whose list is stale makes a plain
//! lone start: the notification names the instance, and only its lead claims it
//! ([`Workers::answer`]).
//!
//! The live workers are the listener connections named for this schema in
//! `pg_stat_activity` (a worker names its listener connection after its first claim of
//! orchestration work, for its owner id, and a connection ends with its process, so a killed
//! worker drops out at once). Each process reads that list again when it is older than
//! [`FRESH`]; a worker claims itself while its list is stale, while it is not in it, or before
//! it ever read it (a worker that is unsure claims), and a client hands nothing over then. A
//! start whose lead died within [`FRESH`] before is claimed by the next fallback poll (at most
//! the runtime's poll interval, a second by default), after its [`OFFER_LEASE`] if it was
//! handed over — the cases where a lone start waits.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duractor::store::OrchestrationMessage;
use sqlx::PgPool;

/// How long a list of the live workers is trusted.
pub(super) const FRESH: Duration = Duration::from_millis(250);

/// How long a start handed to a worker stays leased to it before any worker may claim it:
/// the worker's first commit of the instance takes its own lease, so this only covers a
/// worker that died (or stopped) between the client's read of the list and the hand-over.
pub(super) const OFFER_LEASE: Duration = Duration::from_secs(3);

/// The work notification's payload that tells every worker the set of workers changed (one
/// registered or stopped): each reads the list again, and claims.
pub(super) const MEMBERSHIP_CHANGED: &str = "*";

/// Locks `mutex`, taking a poisoned one as it is (no critical section here can leave its
/// data half-changed).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// FNV-1a over `bytes`, from `seed`: stable across processes, builds and Rust releases (the
/// workers of one schema must agree).
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a of `text` from FNV's standard seed: the schema's tag in channel and connection
/// names, and a store's id in the list of workers.
pub(super) fn hash_text(text: &str) -> u64 {
    fnv1a(0xcbf2_9ce4_8422_2325, text.as_bytes())
}

/// How strongly `member` is drawn to `instance_id`; the highest score leads.
pub(super) fn score(member: u64, instance_id: &str) -> u64 {
    // A final mix: FNV's last steps alone leave neighbouring ids' scores correlated.
    let mut x = fnv1a(member, instance_id.as_bytes());
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// The lead of `instance_id` among `members` (`None` for no members), each member known by
/// its hash (`hash_of`).
pub(super) fn lead<'a, M>(
    members: &'a [M],
    hash_of: impl Fn(&M) -> u64,
    instance_id: &str,
) -> Option<&'a M> {
    members.iter().max_by_key(|member| {
        let hash = hash_of(member);
        (score(hash, instance_id), hash)
    })
}

/// What starts a work notification's payload that hands a start to one worker: a character
/// no instance id, owner id or JSON text carries unescaped.
const OFFER: char = '\u{1}';

/// The work notification's payload handing the start message `id` of `instance_id` (its
/// event's JSON, `message`) to the worker `owner`, which the commit leased them to.
pub(super) fn offer_payload(owner: &str, id: i64, instance_id: &str, message: &str) -> String {
    format!("{OFFER}{owner}{OFFER}{id}{OFFER}{instance_id}{OFFER}{message}")
}

/// A start handed to one worker, as its notification carries it ([`offer_payload`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Offer<'a> {
    pub(super) owner: &'a str,
    pub(super) id: i64,
    pub(super) instance_id: &'a str,
    pub(super) message: &'a str,
}

/// The offer a work notification's payload carries: `None` if it carries none, `Some(Err)`
/// if it is one but garbled.
pub(super) fn parse_offer(payload: &str) -> Option<Result<Offer<'_>, String>> {
    let rest = payload.strip_prefix(OFFER)?;
    let mut parts = rest.splitn(4, OFFER);
    let (Some(owner), Some(id), Some(instance_id), Some(message)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(Err("it has fewer than four parts".to_owned()));
    };
    Some(match id.parse() {
        Ok(id) => Ok(Offer {
            owner,
            id,
            instance_id,
            message,
        }),
        Err(_) => Err(format!("its message id `{id}` is not a number")),
    })
}

/// This process's view of the schema's workers.
pub(super) struct Workers {
    /// The application name prefix of this schema's workers' listener connections.
    prefix: String,
    /// The name of the store's connections that are not a worker's listener.
    plain_name: String,
    claiming: Mutex<Claiming>,
    seen: Mutex<Seen>,
    /// Bumped whenever the name the listener should carry changes.
    renames: AtomicU64,
    /// Starts handed to this store's workers by their notifications, by owner, until their
    /// dispatchers take them ([`Workers::take_offered`]).
    offered: Mutex<HashMap<String, Vec<OrchestrationMessage>>>,
}

/// The workers of this store that claim orchestration work, in the order they started: the
/// first whose id fits a connection name is the one the store's listener is named for (the
/// other workers find it, and hand it starts, by that name).
#[derive(Default)]
struct Claiming {
    owners: Vec<String>,
    /// Workers that stopped claiming (shutting down): a claim still under way does not make
    /// them claimers again.
    stopped: HashSet<String>,
}

#[derive(Default)]
struct Seen {
    /// When the list was read; `None`: never, or marked stale.
    at: Option<Instant>,
    /// The owner ids of the live workers, each with its hash (its member id for [`lead`]).
    members: Vec<(u64, String)>,
    /// A read of the list is under way.
    reading: bool,
    /// Bumped by [`Workers::mark_stale`]: a read that started before does not count as fresh.
    generation: u64,
}

impl Seen {
    /// The lead of `instance_id` in the list, by owner id.
    fn lead(&self, instance_id: &str) -> Option<&str> {
        lead(&self.members, |(hash, _)| *hash, instance_id).map(|(_, owner)| owner.as_str())
    }
}

/// What the listener does with a lone start's notification.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Wake this process's worker: it claims.
    Claim,
    /// Another worker leads the instance.
    Leave,
}

impl Workers {
    /// The view of the workers of `schema`, tagged `tag` (the hash its channel names carry).
    /// Their listener connections are named `duractor:<schema> worker:<owner id>` (the
    /// store's other connections are `duractor:<schema>`; releases before 2026-12-07 named
    /// theirs `… worker <random hex id>`, which this one does not list: it could not hand them
    /// starts); a schema name too long for that in an application name (63 bytes, with room
    /// for a runtime's owner id) is replaced by its tag.
    pub(super) fn new(schema: &str, tag: u64) -> Workers {
        let mut prefix = format!("duractor:{schema} worker:");
        if prefix.len() + OWNER_ROOM > MAX_NAME {
            prefix = format!("duractor:{tag:016x} worker:");
        }
        Workers {
            prefix,
            plain_name: format!("duractor:{schema}"),
            claiming: Mutex::new(Claiming::default()),
            seen: Mutex::new(Seen::default()),
            renames: AtomicU64::new(0),
            offered: Mutex::new(HashMap::new()),
        }
    }

    /// The application name prefix of this schema's workers' listener connections.
    #[cfg(test)]
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The worker the listener is named for: the first claiming one whose id fits the name.
    fn named<'a>(&self, claiming: &'a Claiming) -> Option<&'a str> {
        claiming
            .owners
            .iter()
            // PostgreSQL shows other bytes of an application name escaped: the others would
            // not find the worker by its id.
            .find(|owner| {
                self.prefix.len() + owner.len() <= MAX_NAME
                    && owner.bytes().all(|b| (0x20..=0x7e).contains(&b))
            })
            .map(String::as_str)
    }

    /// The worker `owner` claims orchestration work from now on (its first claim), unless it
    /// stopped; true when the store's listener must take another name.
    pub(super) fn start_claiming(&self, owner: &str) -> bool {
        let mut claiming = lock(&self.claiming);
        if claiming.owners.iter().any(|o| o == owner) || claiming.stopped.contains(owner) {
            return false;
        }
        let before = self.named(&claiming).map(str::to_owned);
        claiming.owners.push(owner.to_owned());
        self.renamed(before.as_deref(), &claiming)
    }

    /// The worker `owner` claims no more (it stops); true when the store's listener must take
    /// another name.
    pub(super) fn stop_claiming(&self, owner: &str) -> bool {
        let mut claiming = lock(&self.claiming);
        claiming.stopped.insert(owner.to_owned());
        let before = self.named(&claiming).map(str::to_owned);
        claiming.owners.retain(|o| o != owner);
        // What it was handed and did not take is let go with its leases when it unregisters.
        lock(&self.offered).remove(owner);
        self.renamed(before.as_deref(), &claiming)
    }

    /// Whether the listener's name changes from the one named for `before`.
    fn renamed(&self, before: Option<&str>, claiming: &Claiming) -> bool {
        let changed = self.named(claiming) != before;
        if changed {
            self.renames.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    /// Bumped whenever [`Workers::application_name`] changes.
    pub(super) fn renames(&self) -> u64 {
        self.renames.load(Ordering::Relaxed)
    }

    /// Whether a worker of this store claims orchestration work.
    pub(super) fn is_claiming(&self) -> bool {
        !lock(&self.claiming).owners.is_empty()
    }

    /// The application name this process's listener connection carries: the worker name of
    /// the first claiming worker of this store, else the store's plain name.
    pub(super) fn application_name(&self) -> String {
        let claiming = lock(&self.claiming);
        match self.named(&claiming) {
            Some(owner) => format!("{}{owner}", self.prefix),
            None => self.plain_name.clone(),
        }
    }

    /// Forgets the list: the next lone start is claimed, and the list read again (a read
    /// under way does not count).
    pub(super) fn mark_stale(&self) {
        let mut seen = lock(&self.seen);
        seen.at = None;
        seen.generation += 1;
    }

    /// The list when it is fresh; otherwise `None`, and whether the caller must start
    /// [`Workers::read`] (no read is under way).
    fn fresh(&self, now: Instant) -> Result<std::sync::MutexGuard<'_, Seen>, bool> {
        let mut seen = lock(&self.seen);
        if seen.at.is_some_and(|at| now.duration_since(at) < FRESH) {
            return Ok(seen);
        }
        let read = !seen.reading;
        seen.reading = true;
        Err(read)
    }

    /// Whether this process's worker claims the lone start of `instance_id`, and whether the
    /// list must be read again first (the caller starts [`Workers::read`] then).
    pub(super) fn answer(&self, instance_id: &str, now: Instant) -> (Answer, bool) {
        let named = {
            let claiming = lock(&self.claiming);
            match self.named(&claiming) {
                Some(owner) => owner.to_owned(),
                None => return (Answer::Claim, false),
            }
        };
        let seen = match self.fresh(now) {
            Ok(seen) => seen,
            Err(read) => return (Answer::Claim, read),
        };
        let listed = seen.members.iter().any(|(_, owner)| *owner == named);
        let answer = if !listed || seen.lead(instance_id) == Some(named.as_str()) {
            Answer::Claim
        } else {
            Answer::Leave
        };
        (answer, false)
    }

    /// The worker a client hands its start of `instance_id` to (the instance's lead), if the
    /// list is fresh and names any; and whether the list must be read again (the caller
    /// starts [`Workers::read`] then, and this start is left to a claim). A store through
    /// which a worker claims hands nothing: its starts are claimed as before (a store shared
    /// by a worker and its own client code, or by several workers, as in the store's
    /// conformance tests, keeps every start claimable by each of them).
    pub(super) fn offer_to(&self, instance_id: &str, now: Instant) -> (Option<String>, bool) {
        if self.is_claiming() {
            return (None, false);
        }
        match self.fresh(now) {
            Ok(seen) => (seen.lead(instance_id).map(str::to_owned), false),
            Err(read) => (None, read),
        }
    }

    /// Whether `owner` is a worker of this store that claims (and so takes what it is
    /// handed).
    pub(super) fn claims(&self, owner: &str) -> bool {
        lock(&self.claiming).owners.iter().any(|o| o == owner)
    }

    /// Keeps `message`, handed to this store's worker `owner`, for its dispatcher; false
    /// (dropped) if `owner` is not a worker of this store that claims: one that stopped lets
    /// it go with its other leases when it unregisters, and another store's is not ours.
    pub(super) fn hand(&self, owner: &str, message: OrchestrationMessage) -> bool {
        let claiming = lock(&self.claiming);
        if !claiming.owners.iter().any(|o| o == owner) {
            return false;
        }
        lock(&self.offered)
            .entry(owner.to_owned())
            .or_default()
            .push(message);
        true
    }

    /// The starts handed to the worker `owner`, taken once.
    pub(super) fn take_offered(&self, owner: &str) -> Vec<OrchestrationMessage> {
        lock(&self.offered).remove(owner).unwrap_or_default()
    }

    /// Reads the list of live workers (of this database: notifications do not cross
    /// databases) from `pg_stat_activity`; on failure the list stays stale (this worker
    /// claims every lone start until a read succeeds).
    pub(super) async fn read(&self, pool: &PgPool) {
        let generation = lock(&self.seen).generation;
        let names: Result<Vec<String>, sqlx::Error> = sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity \
             WHERE datname = current_database() AND left(application_name, length($1)) = $1",
        )
        .bind(&self.prefix)
        .fetch_all(pool)
        .await;
        let mut seen = lock(&self.seen);
        seen.reading = false;
        match names {
            Ok(names) => {
                seen.members = names
                    .iter()
                    .filter_map(|name| name.strip_prefix(&self.prefix))
                    .filter(|owner| !owner.is_empty())
                    .map(|owner| (hash_text(owner), owner.to_owned()))
                    .collect();
                // Marked stale meanwhile (a worker joined or left): read again next time.
                if seen.generation == generation {
                    seen.at = Some(Instant::now());
                }
            }
            Err(error) => {
                tracing::debug!(%error, "reading the live workers failed; claiming every start meanwhile");
            }
        }
    }

    #[cfg(test)]
    fn set_members(&self, members: &[&str], at: Instant) {
        let mut seen = lock(&self.seen);
        seen.members = members
            .iter()
            .map(|owner| (hash_text(owner), (*owner).to_owned()))
            .collect();
        seen.at = Some(at);
        seen.reading = false;
    }
}

/// The longest application name PostgreSQL keeps (`NAMEDATALEN` - 1).
const MAX_NAME: usize = 63;

/// The room a worker name leaves for the owner id: a runtime's is `<pid>-<12 hex digits>`.
const OWNER_ROOM: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_has_one_lead_and_the_leads_spread_evenly() {
        let members: Vec<u64> = ["w1", "w2", "w3"].into_iter().map(hash_text).collect();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let id = format!("{i:032x}");
            let lead = *lead(&members, |m| *m, &id).unwrap();
            counts[members.iter().position(|m| *m == lead).unwrap()] += 1;
        }
        // An even split is 1,000 each.
        assert!(
            counts.iter().all(|c| (850..=1150).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_worker_leaving_moves_only_its_own_instances() {
        let all: Vec<u64> = ["w1", "w2", "w3"].into_iter().map(hash_text).collect();
        let without_w3 = &all[..2];
        for i in 0..1000 {
            let id = format!("instance-{i}");
            let lead_of_all = *lead(&all, |m| *m, &id).unwrap();
            if lead_of_all != all[2] {
                assert_eq!(lead(without_w3, |m| *m, &id), Some(&lead_of_all), "{id}");
            }
        }
    }

    #[test]
    fn only_the_lead_leaves_a_start_to_nobody_else() {
        let now = Instant::now();
        let views: Vec<Workers> = (0..2).map(|_| Workers::new("orders", 7)).collect();
        for (view, owner) in views.iter().zip(["w1", "w2"]) {
            assert!(view.start_claiming(owner));
            view.set_members(&["w1", "w2"], now);
        }
        let client = Workers::new("orders", 7);
        client.set_members(&["w1", "w2"], now);
        let mut led = [0usize; 2];
        for i in 0..200 {
            let id = format!("{i}");
            let claims: Vec<bool> = views
                .iter()
                .map(|view| view.answer(&id, now) == (Answer::Claim, false))
                .collect();
            assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{id}: {claims:?}");
            let leader = claims.iter().position(|c| *c).unwrap();
            led[leader] += 1;
            // A client hands the start to the worker that would claim it.
            let (to, read) = client.offer_to(&id, now);
            assert_eq!(to.as_deref(), Some(["w1", "w2"][leader]), "{id}");
            assert!(!read);
        }
        assert!(led.iter().all(|n| *n > 60), "{led:?}");
    }

    #[test]
    fn an_unsure_worker_claims_and_an_unsure_client_hands_nothing() {
        let now = Instant::now();
        let workers = Workers::new("orders", 7);
        // No worker of this store claims: every wake-up is passed on.
        assert_eq!(workers.answer("a", now), (Answer::Claim, false));
        assert!(workers.start_claiming("w1"));
        assert!(!workers.start_claiming("w1"), "named once");
        // Never read the list: claims, and reads it (once while a read is under way).
        assert_eq!(workers.answer("a", now), (Answer::Claim, true));
        assert_eq!(workers.answer("a", now), (Answer::Claim, false));
        let client = Workers::new("orders", 7);
        assert_eq!(client.offer_to("a", now), (None, true));
        assert_eq!(
            client.offer_to("a", now),
            (None, false),
            "a read is under way"
        );
        // A store through which a worker claims hands nothing over.
        workers.set_members(&["w1"], now);
        assert_eq!(workers.offer_to("a", now), (None, false));
        // Not in its own list (its listener not named yet): claims everything.
        workers.set_members(&["elsewhere"], now);
        for id in ["a", "b", "c", "d"] {
            assert_eq!(workers.answer(id, now), (Answer::Claim, false));
        }
        // A stale list: claims, and reads again; a client hands nothing.
        workers.set_members(&["w1", "elsewhere"], now);
        client.set_members(&["w1", "elsewhere"], now);
        let id = (0..)
            .map(|i| i.to_string())
            .find(|id| client.offer_to(id, now).0.as_deref() == Some("elsewhere"))
            .unwrap();
        assert_eq!(workers.answer(&id, now), (Answer::Leave, false));
        assert_eq!(workers.answer(&id, now + FRESH), (Answer::Claim, true));
        assert_eq!(client.offer_to(&id, now + FRESH), (None, true));
        // Marked stale (a worker joined or left): claims, and a client hands nothing.
        workers.set_members(&["w1", "elsewhere"], now);
        workers.mark_stale();
        assert_eq!(workers.answer(&id, now).0, Answer::Claim);
        client.set_members(&["w1", "elsewhere"], now);
        client.mark_stale();
        assert_eq!(client.offer_to(&id, now).0, None);
    }

    #[test]
    fn the_listener_carries_the_first_claiming_workers_name() {
        let workers = Workers::new("orders", 7);
        assert_eq!(workers.application_name(), "duractor:orders");
        assert!(workers.start_claiming("w1"));
        assert!(!workers.start_claiming("w2"), "the name stays w1's");
        assert_eq!(workers.application_name(), "duractor:orders worker:w1");
        let renames = workers.renames();
        assert!(workers.stop_claiming("w1"), "w2 takes the name");
        assert_eq!(workers.application_name(), "duractor:orders worker:w2");
        assert!(workers.stop_claiming("w2"));
        assert_eq!(workers.application_name(), "duractor:orders");
        assert_eq!(workers.renames(), renames + 2);
        // A claim of a stopped worker still under way does not name the listener again.
        assert!(!workers.start_claiming("w2"));
        assert_eq!(workers.application_name(), "duractor:orders");
        // A schema name too long for the worker name: the schema's tag instead, with room
        // for a runtime's owner id.
        let long = Workers::new(&"s".repeat(63), 7);
        long.start_claiming("4194304-0123456789ab");
        let name = long.application_name();
        assert_eq!(
            name,
            "duractor:0000000000000007 worker:4194304-0123456789ab"
        );
        assert!(name.len() <= MAX_NAME);
        // An owner id that does not fit is not named: the store claims every lone start.
        let odd = Workers::new("orders", 7);
        assert!(!odd.start_claiming(&"o".repeat(60)));
        assert_eq!(odd.application_name(), "duractor:orders");
        assert_eq!(odd.answer("a", Instant::now()).0, Answer::Claim);
    }

    #[test]
    fn a_start_is_handed_only_to_a_claiming_worker_and_taken_once() {
        let workers = Workers::new("orders", 7);
        let message = |id| OrchestrationMessage {
            id,
            instance_id: format!("i{id}"),
            event: duractor::history::Event::EventRaised {
                name: "e".into(),
                data: duractor::Payload::null(),
            },
            execution: None,
        };
        assert!(!workers.hand("w1", message(1)), "w1 does not claim here");
        workers.start_claiming("w1");
        assert!(workers.hand("w1", message(2)));
        assert!(workers.hand("w1", message(3)));
        assert!(workers.take_offered("w2").is_empty());
        let taken: Vec<i64> = workers.take_offered("w1").iter().map(|m| m.id).collect();
        assert_eq!(taken, [2, 3]);
        assert!(workers.take_offered("w1").is_empty());
        workers.stop_claiming("w1");
        assert!(
            !workers.hand("w1", message(4)),
            "a stopped worker takes no more"
        );
    }

    #[test]
    fn an_offer_travels_in_its_payload() {
        let payload = offer_payload("123-abc", 42, "order 7", r#"{"a":"\u0001"}"#);
        assert_eq!(
            parse_offer(&payload),
            Some(Ok(Offer {
                owner: "123-abc",
                id: 42,
                instance_id: "order 7",
                message: r#"{"a":"\u0001"}"#,
            }))
        );
        for plain in ["", "*", "order 7"] {
            assert_eq!(parse_offer(plain), None, "{plain:?}");
        }
        assert!(matches!(
            parse_offer("\u{1}w\u{1}x\u{1}i\u{1}{}"),
            Some(Err(_))
        ));
        assert!(matches!(parse_offer("\u{1}w\u{1}1"), Some(Err(_))));
    }
}
