//! Runnable duractor examples: see the `[[example]]` entries of this package
//! (`cargo run --example hello_cities`).
