//! A TCP proxy in front of PostgreSQL that makes the network misbehave on purpose, for the
//! fault tests: it can lose the server's answer to a `COMMIT` (after the server received and
//! ran it), delay all traffic, and cut every connection and refuse new ones for a while (the
//! server "going away"). Workers and clients connect to [`PgProxy::url`] instead of the
//! server.
//!
//! It reads just enough of PostgreSQL's wire protocol to find `COMMIT`s: the client's first
//! message (an `SSLRequest`, answered by the server with one byte, or the startup message)
//! has no type byte; every later one is a type byte and a length. A `COMMIT` is a simple
//! query (`Q`) or a `Parse` (`P`) whose text is `COMMIT`, or the execution (a `Bind`, `B`) of
//! a statement that commits on its own: one whose text says so (the PostgreSQL store's
//! guarded turn), prepared earlier on the same connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to traffic, changeable while it runs.
#[derive(Default)]
struct Faults {
    /// Which answers to `COMMIT`s to lose.
    commit_answers: Losing,
    /// Which answers to statements that commit on their own to lose, counted separately.
    own_answers: Losing,
    /// Delay every chunk in both directions by this many milliseconds.
    delay_ms: AtomicU64,
    /// Refuse and cut connections until then.
    down_until: Mutex<Option<Instant>>,
}

/// Losing one answer in `one_in` (0: none), at most `budget` of them.
#[derive(Default)]
struct Losing {
    one_in: AtomicU32,
    budget: AtomicU64,
}

impl Losing {
    fn set(&self, one_in: u32, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        self.one_in.store(one_in, Ordering::Relaxed);
    }

    /// Whether to lose this answer, given a random number.
    fn this_one(&self, random: u64) -> bool {
        let one_in = self.one_in.load(Ordering::Relaxed);
        one_in != 0
            && random.is_multiple_of(u64::from(one_in))
            && self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
    }
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// `COMMIT`s seen.
    pub commits: AtomicU64,
    /// `COMMIT` answers lost on purpose.
    pub commit_answers_dropped: AtomicU64,
    /// Statements that commit on their own, seen (included in `commits`).
    pub own_commits: AtomicU64,
    /// Answers to statements that commit on their own, lost on purpose (included in
    /// `commit_answers_dropped`).
    pub own_commit_answers_dropped: AtomicU64,
    /// Connections cut by an outage.
    pub connections_cut: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Faults,
    stats: ProxyStats,
    /// Open connection pairs, to cut them in an outage.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    rng: AtomicU64,
    stopped: AtomicBool,
}

impl Shared {
    fn is_down(&self) -> bool {
        let down = self
            .faults
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    /// A pseudo-random number (xorshift), good enough for "one in N".
    fn random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Whether to lose the answer to the commit of `kind` just seen.
    fn lose_this_answer(&self, kind: Commit) -> bool {
        let losing = match kind {
            Commit::Statement => &self.faults.commit_answers,
            Commit::OnItsOwn => &self.faults.own_answers,
        };
        losing.this_one(self.random())
    }
}

/// A running proxy; it stops accepting when dropped (open connections end with the test).
pub struct PgProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl PgProxy {
    /// Starts a proxy on a free local port in front of `upstream` (e.g. `127.0.0.1:5432`).
    pub fn start(upstream: SocketAddr) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        let shared = Arc::new(Shared {
            upstream,
            faults: Faults::default(),
            stats: ProxyStats::default(),
            open: Mutex::new(Vec::new()),
            rng: AtomicU64::new(seed),
            stopped: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                if accepting.is_down() {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(accepting.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                accepting.stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                spawn_pair(accepting.clone(), client, server);
            }
        });
        PgProxy { addr, shared }
    }

    /// A PostgreSQL URL like `url`, with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"));
        format!(
            "{scheme}://{}{}/{path}",
            user.unwrap_or_default(),
            self.addr
        )
    }

    /// Loses the server's answer to one `COMMIT` in `one_in` (after the server received it),
    /// then closes that connection; at most `budget` times.
    pub fn drop_commit_answers(&self, one_in: u32, budget: u64) {
        self.shared.faults.commit_answers.set(one_in, budget);
    }

    /// Loses the server's answer to one statement that commits on its own (a turn's guarded
    /// statement) in `one_in`, then closes that connection; at most `budget` times, besides
    /// [`drop_commit_answers`](Self::drop_commit_answers)'.
    pub fn drop_own_commit_answers(&self, one_in: u32, budget: u64) {
        self.shared.faults.own_answers.set(one_in, budget);
    }

    /// Delays every message with a statement, and every chunk of its answer, by `delay`
    /// (`Duration::ZERO`: none); setting a connection up is not delayed.
    pub fn delay(&self, delay: Duration) {
        self.shared
            .faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Cuts every open connection now and refuses new ones for `duration`: to the workers
    /// and clients, the database went away.
    pub fn outage(&self, duration: Duration) {
        *self
            .shared
            .faults
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + duration);
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (client, server) in open {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            self.shared
                .stats
                .connections_cut
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (client, server) in open {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

/// Pumps one connection both ways on two threads.
fn spawn_pair(shared: Arc<Shared>, client: TcpStream, server: TcpStream) {
    let (Ok(client_write), Ok(server_read), Ok(client_keep), Ok(server_keep)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    shared
        .open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((client_keep, server_keep));
    // Set by the client side when a COMMIT's answer must be lost.
    let lose_answer = Arc::new(Lose::default());
    // Set once the client sends its first query: delays apply to statements, not to setting
    // the connection up.
    let querying = Arc::new(AtomicBool::new(false));
    let upstream = {
        let shared = shared.clone();
        let lose_answer = lose_answer.clone();
        let querying = querying.clone();
        move || client_to_server(&shared, client, server, &lose_answer, &querying)
    };
    let downstream =
        move || server_to_client(&shared, server_read, client_write, &lose_answer, &querying);
    std::thread::spawn(upstream);
    std::thread::spawn(downstream);
}

/// Waits the configured delay, on connections that carry statements.
fn pause(shared: &Shared, querying: &AtomicBool) {
    let delay = shared.faults.delay_ms.load(Ordering::Relaxed);
    if delay > 0 && querying.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(delay));
    }
}

/// Forwards the client's messages, one whole message at a time, watching for `COMMIT`.
fn client_to_server(
    shared: &Shared,
    mut client: TcpStream,
    mut server: TcpStream,
    lose_answer: &Lose,
    querying: &AtomicBool,
) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut started = false;
    let mut committing = Prepared::default();
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        // Forward every complete message in the buffer.
        loop {
            let (len, commit) = if !started {
                // SSLRequest / startup: length first, no type byte.
                let Some(len) = read_len(&buffer, 0) else {
                    break;
                };
                let code = read_len(&buffer, 4);
                if code != Some(80_877_103) {
                    started = true; // a startup message; an SSLRequest is followed by one
                }
                (len, None)
            } else {
                let Some(len) = read_len(&buffer, 1).map(|l| l + 1) else {
                    break;
                };
                let commit = if buffer.len() >= len {
                    committing.commit(&buffer[..len])
                } else {
                    None
                };
                (len, commit)
            };
            if buffer.len() < len {
                break;
            }
            let message: Vec<u8> = buffer.drain(..len).collect();
            if started && matches!(message.first(), Some(b'Q' | b'P' | b'B' | b'E')) {
                querying.store(true, Ordering::Relaxed);
            }
            if let Some(kind) = commit {
                shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                if kind == Commit::OnItsOwn {
                    shared.stats.own_commits.fetch_add(1, Ordering::Relaxed);
                }
                if shared.lose_this_answer(kind) {
                    // Before the server can answer: the answer is the one to lose.
                    lose_answer
                        .own
                        .store(kind == Commit::OnItsOwn, Ordering::SeqCst);
                    lose_answer.now.store(true, Ordering::SeqCst);
                }
            }
            pause(shared, querying);
            if server.write_all(&message).is_err() {
                return close(&client, &server);
            }
        }
    }
    close(&client, &server);
}

/// Forwards the server's answers; after a `COMMIT` chosen to lose its answer, swallows it and
/// closes the connection.
fn server_to_client(
    shared: &Shared,
    mut server: TcpStream,
    mut client: TcpStream,
    lose_answer: &Lose,
    querying: &AtomicBool,
) {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match server.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose_answer.now.load(Ordering::SeqCst) {
            // The server ran the COMMIT; its answer never arrives.
            shared
                .stats
                .commit_answers_dropped
                .fetch_add(1, Ordering::Relaxed);
            if lose_answer.own.load(Ordering::SeqCst) {
                shared
                    .stats
                    .own_commit_answers_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            break;
        }
        pause(shared, querying);
        if client.write_all(&chunk[..n]).is_err() {
            break;
        }
    }
    close(&client, &server);
}

fn close(client: &TcpStream, server: &TcpStream) {
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

fn read_len(buffer: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buffer.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

/// Set by a connection's client side when the answer to what it just forwarded must be lost.
#[derive(Default)]
struct Lose {
    now: AtomicBool,
    /// It is the answer to a statement that commits on its own.
    own: AtomicBool,
}

/// What kind of commit a client message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// A `COMMIT` of a transaction.
    Statement,
    /// The execution of a statement that commits on its own.
    OnItsOwn,
}

/// The statements a connection prepared that commit on their own, by name.
#[derive(Default)]
struct Prepared {
    names: std::collections::HashSet<Vec<u8>>,
}

impl Prepared {
    /// Whether a typed message commits: a `COMMIT` (a simple query, or a `Parse` of it), or a
    /// `Bind` of a statement that commits on its own. Remembers such statements' `Parse`s.
    fn commit(&mut self, message: &[u8]) -> Option<Commit> {
        let body = &message[5..];
        let text = match message[0] {
            b'Q' => c_str(body),
            // Parse: the statement name (a C string), then the query.
            b'P' => {
                let end = body.iter().position(|b| *b == 0)?;
                let text = c_str(&body[end + 1..]);
                if text
                    .windows(COMMITS_ON_ITS_OWN.len())
                    .any(|w| w == COMMITS_ON_ITS_OWN)
                {
                    self.names.insert(body[..end].to_vec());
                }
                text
            }
            // Bind: the portal name, then the statement name.
            b'B' => {
                let end = body.iter().position(|b| *b == 0)?;
                return self
                    .names
                    .contains(c_str(&body[end + 1..]))
                    .then_some(Commit::OnItsOwn);
            }
            _ => return None,
        };
        std::str::from_utf8(text)
            .ok()
            .filter(|q| {
                q.trim()
                    .trim_end_matches(';')
                    .eq_ignore_ascii_case("COMMIT")
            })
            .map(|_| Commit::Statement)
    }
}

/// What the text of a statement that commits on its own says.
const COMMITS_ON_ITS_OWN: &[u8] = b"which commits on its own";

/// The bytes before the first NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed wire message: its type byte, its length, its body.
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = vec![kind];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn commits_are_found_by_text_and_by_the_statement_a_bind_runs() {
        let mut prepared = Prepared::default();
        assert_eq!(
            prepared.commit(&message(b'Q', b"COMMIT\0")),
            Some(Commit::Statement)
        );
        assert_eq!(
            prepared.commit(&message(b'P', b"\0commit;\0\0\0")),
            Some(Commit::Statement)
        );
        assert_eq!(prepared.commit(&message(b'Q', b"SELECT 1\0")), None);
        // A statement that commits on its own: its Parse is not a commit, each Bind of it is.
        let parse = message(
            b'P',
            b"sqlx_s_3\0/* duractor: a guarded batch, which commits on its own */ WITH x\0\0\0",
        );
        assert_eq!(prepared.commit(&parse), None);
        assert_eq!(
            prepared.commit(&message(b'B', b"\0sqlx_s_3\0\0\0\0\0")),
            Some(Commit::OnItsOwn)
        );
        assert_eq!(
            prepared.commit(&message(b'B', b"\0sqlx_s_4\0\0\0\0\0")),
            None
        );
        assert_eq!(prepared.commit(&message(b'E', b"\0\0\0\0\0")), None);
    }
}
