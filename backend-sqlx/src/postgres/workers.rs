//! Which worker process answers a lone start.
//!
//! Every worker listens on the schema's work channel, and a notification used to wake them
//! all: for a start on its own (a client starting one instance at a time) every worker then
//! sent a claim, one took the instance and the others found nothing — on two workers, twice
//! the claims, and a second claim competing with the first for the server. Now a lone start's
//! notification names its instance, and only that instance's *lead* claims: the worker whose
//! score for the instance id ([`score`]) is highest among the schema's live workers
//! (rendezvous hashing: the starts spread evenly, and a worker joining or leaving moves only
//! its own share). Every other notification still wakes every worker.
//!
//! The live workers are the listener connections named for this schema in
//! `pg_stat_activity` (a worker names its listener connection once it registers, and a
//! connection ends with its process, so a killed worker drops out at once). Each worker reads
//! that list again when it is older than [`FRESH`], and claims itself while its list is stale,
//! while it is not in it, or before it ever read it: a worker that is unsure claims. A start
//! whose lead died within [`FRESH`] before it is claimed by the next fallback poll (at most the
//! runtime's poll interval, a second by default) — the one case where a lone start waits.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How long a list of the live workers is trusted.
pub(super) const FRESH: Duration = Duration::from_millis(250);

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

/// The lead of `instance_id` among `members` (`None` for no members).
pub(super) fn lead(members: &[u64], instance_id: &str) -> Option<u64> {
    members
        .iter()
        .copied()
        .max_by_key(|member| (score(*member, instance_id), *member))
}

/// This process's view of the schema's workers.
pub(super) struct Workers {
    /// The application name prefix of this schema's workers' listener connections.
    prefix: String,
    /// The name of the store's connections that are not a worker's listener.
    plain_name: String,
    /// This store's id in the list (random per store: the list is of processes' stores, and
    /// any worker of this store answers a wake-up).
    me: u64,
    claiming: Mutex<Claiming>,
    seen: Mutex<Seen>,
}

/// The workers of this store that claim orchestration work: while there are any, its
/// listener carries [`Workers::application_name`]'s worker name.
#[derive(Default)]
struct Claiming {
    owners: HashSet<String>,
    /// Workers that stopped claiming (shutting down): a claim still under way does not make
    /// them claimers again.
    stopped: HashSet<String>,
}

#[derive(Default)]
struct Seen {
    /// When the list was read; `None`: never, or marked stale.
    at: Option<Instant>,
    /// The ids the list held.
    members: Vec<u64>,
    /// A read of the list is under way.
    reading: bool,
    /// Bumped by [`Workers::mark_stale`]: a read that started before does not count as fresh.
    generation: u64,
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
    /// Their listener connections are named `duractor:<schema> worker <id>` (the store's
    /// other connections are `duractor:<schema>`); a schema name too long for that in an
    /// application name (63 bytes) is replaced by its tag.
    pub(super) fn new(schema: &str, tag: u64) -> Workers {
        let mut prefix = format!("duractor:{schema} worker ");
        if prefix.len() + 16 > 63 {
            prefix = format!("duractor:{tag:016x} worker ");
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        static STORES: AtomicU64 = AtomicU64::new(0);
        let me = hash_text(&format!(
            "{}:{nanos}:{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::Relaxed)
        ));
        Workers {
            prefix,
            plain_name: format!("duractor:{schema}"),
            me,
            claiming: Mutex::new(Claiming::default()),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The application name prefix of this schema's workers' listener connections.
    #[cfg(test)]
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The worker `owner` claims orchestration work from now on (its first claim), unless it
    /// stopped; true when the store's listener must take the worker name.
    pub(super) fn start_claiming(&self, owner: &str) -> bool {
        let mut claiming = lock(&self.claiming);
        if claiming.owners.contains(owner) || claiming.stopped.contains(owner) {
            return false;
        }
        claiming.owners.insert(owner.to_owned());
        claiming.owners.len() == 1
    }

    /// The worker `owner` claims no more (it stops); true when the store's listener must give
    /// the worker name up.
    pub(super) fn stop_claiming(&self, owner: &str) -> bool {
        let mut claiming = lock(&self.claiming);
        claiming.stopped.insert(owner.to_owned());
        claiming.owners.remove(owner) && claiming.owners.is_empty()
    }

    /// Whether a worker of this store claims orchestration work.
    pub(super) fn is_claiming(&self) -> bool {
        !lock(&self.claiming).owners.is_empty()
    }

    /// The application name this process's listener connection carries while a worker of
    /// this store claims (`claiming`, [`Workers::is_claiming`]): the worker name, else the
    /// store's plain name.
    pub(super) fn application_name(&self, claiming: bool) -> String {
        if claiming {
            format!("{}{:016x}", self.prefix, self.me)
        } else {
            self.plain_name.clone()
        }
    }

    /// Forgets the list: the next lone start is claimed, and the list read again (a read
    /// under way does not count).
    pub(super) fn mark_stale(&self) {
        let mut seen = lock(&self.seen);
        seen.at = None;
        seen.generation += 1;
    }

    /// Whether this process's worker claims the lone start of `instance_id`, and whether the
    /// list must be read again first (the caller starts [`Workers::read`] then).
    pub(super) fn answer(&self, instance_id: &str, now: Instant) -> (Answer, bool) {
        if !self.is_claiming() {
            return (Answer::Claim, false);
        }
        let mut seen = lock(&self.seen);
        let fresh = seen.at.is_some_and(|at| now.duration_since(at) < FRESH);
        if !fresh {
            let read = !seen.reading;
            seen.reading = true;
            return (Answer::Claim, read);
        }
        let answer = if !seen.members.contains(&self.me)
            || lead(&seen.members, instance_id) == Some(self.me)
        {
            Answer::Claim
        } else {
            Answer::Leave
        };
        (answer, false)
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
                    .filter_map(|id| u64::from_str_radix(id, 16).ok())
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
    fn set_members(&self, members: Vec<u64>, at: Instant) {
        let mut seen = lock(&self.seen);
        seen.members = members;
        seen.at = Some(at);
        seen.reading = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_has_one_lead_and_the_leads_spread_evenly() {
        let members: Vec<u64> = ["w1", "w2", "w3"].into_iter().map(hash_text).collect();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let id = format!("{i:032x}");
            let lead = lead(&members, &id).unwrap();
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
            let lead_of_all = lead(&all, &id).unwrap();
            if lead_of_all != all[2] {
                assert_eq!(lead(without_w3, &id), Some(lead_of_all), "{id}");
            }
        }
    }

    #[test]
    fn only_the_lead_leaves_a_start_to_nobody_else() {
        let now = Instant::now();
        let views: Vec<Workers> = (0..2).map(|_| Workers::new("orders", 7)).collect();
        let members: Vec<u64> = views.iter().map(|view| view.me).collect();
        for (view, owner) in views.iter().zip(["w1", "w2"]) {
            assert!(view.start_claiming(owner));
            view.set_members(members.clone(), now);
        }
        let mut led = [0usize; 2];
        for i in 0..200 {
            let id = format!("{i}");
            let claims: Vec<bool> = views
                .iter()
                .map(|view| view.answer(&id, now) == (Answer::Claim, false))
                .collect();
            assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{id}: {claims:?}");
            led[claims.iter().position(|c| *c).unwrap()] += 1;
        }
        assert!(led.iter().all(|n| *n > 60), "{led:?}");
    }

    #[test]
    fn an_unsure_worker_claims() {
        let now = Instant::now();
        let workers = Workers::new("orders", 7);
        let other = hash_text("elsewhere");
        // No worker of this store claims: every wake-up is passed on.
        assert_eq!(workers.answer("a", now), (Answer::Claim, false));
        assert!(workers.start_claiming("w1"));
        assert!(!workers.start_claiming("w1"), "named once");
        // Never read the list: claims, and reads it (once while a read is under way).
        assert_eq!(workers.answer("a", now), (Answer::Claim, true));
        assert_eq!(workers.answer("a", now), (Answer::Claim, false));
        // Not in its own list (its listener not named yet): claims everything.
        workers.set_members(vec![other], now);
        for id in ["a", "b", "c", "d"] {
            assert_eq!(workers.answer(id, now), (Answer::Claim, false));
        }
        // A stale list: claims, and reads again.
        let both = vec![workers.me, other];
        workers.set_members(both.clone(), now);
        let id = (0..)
            .map(|i| i.to_string())
            .find(|id| lead(&both, id) == Some(other))
            .unwrap();
        assert_eq!(workers.answer(&id, now), (Answer::Leave, false));
        assert_eq!(workers.answer(&id, now + FRESH), (Answer::Claim, true));
        // Marked stale (a worker joined or left): claims.
        workers.set_members(both, now);
        workers.mark_stale();
        assert_eq!(workers.answer(&id, now).0, Answer::Claim);
    }

    #[test]
    fn the_listener_carries_the_worker_name_while_a_worker_claims() {
        let workers = Workers::new("orders", 7);
        assert_eq!(
            workers.application_name(workers.is_claiming()),
            "duractor:orders"
        );
        assert!(workers.start_claiming("w1"));
        assert!(
            !workers.start_claiming("w2"),
            "the name is the store's, taken once"
        );
        let name = workers.application_name(workers.is_claiming());
        assert!(name.starts_with("duractor:orders worker "), "{name}");
        assert!(name.len() <= 63);
        assert!(!workers.stop_claiming("w1"), "w2 still claims");
        assert!(workers.stop_claiming("w2"));
        assert_eq!(
            workers.application_name(workers.is_claiming()),
            "duractor:orders"
        );
        // A claim of a stopped worker still under way does not name the listener again.
        assert!(!workers.start_claiming("w2"));
        assert_eq!(
            workers.application_name(workers.is_claiming()),
            "duractor:orders"
        );
        // A schema name too long for the worker name: the schema's tag instead.
        let long = Workers::new(&"s".repeat(63), 7);
        long.start_claiming("w1");
        let name = long.application_name(long.is_claiming());
        assert!(
            name.starts_with("duractor:0000000000000007 worker "),
            "{name}"
        );
        assert!(name.len() <= 63);
        // Two stores of one process have different ids.
        assert_ne!(Workers::new("orders", 7).me, workers.me);
    }
}
