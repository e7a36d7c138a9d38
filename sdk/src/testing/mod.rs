//! The test kit: orchestrations, activities and entities tested in milliseconds on the real
//! engine — same executor, same replay, same runtime — with a virtual clock, mocked
//! activities, and replays of recorded histories.
//!
//! Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! duractor = { version = "0.1", features = ["testing"] }
//! ```
//!
//! * [`TestRuntime`]: the runtime on a [`MemoryStore`] whose [`Clock`](crate::clock::Clock)
//!   stands still until the test moves it, or skips to the next timer while the test waits;
//! * [`TestRuntime::mock_activity`]: an activity replaced by a closure, its calls recorded
//!   ([`Mock`]); [`failing_first`] for retry tests;
//! * [`replay_history`]: a recorded history (exported with `APP history ID --export`) replayed
//!   against the current code, so a change that would break running instances fails a test;
//! * `#[duractor::test]`: a test function that receives a fresh [`TestRuntime`].
//!
//! See `docs/testing.md`.

mod memory;
mod mocks;
mod replay;
mod runtime;
mod table;

pub use memory::MemoryStore;
pub use mocks::{Mock, failing_first};
pub use replay::{replay_history, replay_history_file};
#[doc(hidden)]
pub use runtime::{__TestParameter, __run_test, __test_parameter};
pub use runtime::{TestRuntime, TestRuntimeBuilder};
pub use table::HistoryTable;
