//! An in-memory [`Store`] on a [`Clock`] (placeholder: being written).

use crate::clock::Clock;

/// A store that keeps everything in memory, on a clock a test can move.
#[derive(Debug, Default)]
pub struct MemoryStore {
    clock: Clock,
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store on `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        MemoryStore { clock }
    }
}
