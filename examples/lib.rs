//! Runnable duractor examples, one app per durable pattern: see the `[[example]]` entries of
//! this package (`cargo run --example chaining -- run hello_cities`).
