//! The bounded-activities functions (`duractor_tests::bounded`) as an app with the generated
//! main, for the tests of what the HTTP API and the command line show of activity calls in
//! flight: attempts, timeouts, heartbeats, cancellations; and `duractor_tests::policies` for
//! start policies and signal-with-start over HTTP and the command line; and
//! `duractor_tests::schedules` for schedules over HTTP and the command line.

#[allow(unused_imports)]
use duractor_tests::bounded as _;
#[allow(unused_imports)]
use duractor_tests::policies as _;
#[allow(unused_imports)]
use duractor_tests::schedules as _;

#[duractor::main]
async fn main() {}
