//! [`Limits`]: the guard rails on what one instance may do (payload sizes and depth, history
//! length, durable calls per turn), each exceeded one an error naming it.

use crate::error::Error;
use crate::payload::Payload;

/// Guard rails on what one instance may do; see `RuntimeBuilder::limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input, output, event data or custom status, in bytes of JSON (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Most events one execution's history may hold (default 100,000); an eternal
    /// orchestration stays under it with `continue_as_new`.
    pub max_history_events: u64,
    /// Most durable calls one turn may make (default 10,000).
    pub max_actions_per_turn: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_history_events: 100_000,
            max_actions_per_turn: 10_000,
        }
    }
}

/// How deeply a payload's arrays and objects may nest: serde_json's recursion limit, beyond
/// which no payload can be decoded, so deeper ones are refused where they enter.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

impl Limits {
    /// Checks a payload against `max_payload_bytes`, and that it nests at most
    /// [`MAX_PAYLOAD_DEPTH`] levels deep ([`Error::InvalidPayload`] otherwise).
    pub fn check_payload(&self, what: &str, payload: &Payload) -> Result<(), Error> {
        let depth = payload.nesting_depth();
        if depth > MAX_PAYLOAD_DEPTH {
            // Shown as "invalid {what}": "the input of …" reads "invalid input of …".
            return Err(Error::InvalidPayload {
                what: what.strip_prefix("the ").unwrap_or(what).to_owned(),
                message: format!(
                    "its arrays and objects nest {depth} levels deep; the limit is \
                     {MAX_PAYLOAD_DEPTH} (deeper JSON cannot be decoded)"
                ),
            });
        }
        if payload.len() > self.max_payload_bytes {
            return Err(Error::LimitExceeded {
                limit: "max_payload_bytes",
                message: format!(
                    "{what} is {} bytes of JSON; the limit is {} bytes (Limits::max_payload_bytes). \
                     Store large data elsewhere and pass a reference",
                    payload.len(),
                    self.max_payload_bytes
                ),
            });
        }
        Ok(())
    }
}
