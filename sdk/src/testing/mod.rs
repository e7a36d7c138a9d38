//! The test kit: orchestrations, activities and entities tested in milliseconds, on the real
//! engine, with a virtual clock.
//!
//! Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! duractor = { version = "0.1", features = ["testing"] }
//! ```
//!
//! See `docs/testing.md`.

mod memory;

pub use memory::MemoryStore;
