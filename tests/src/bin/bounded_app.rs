//! The bounded-activities functions (`duractor_tests::bounded`) as an app with the generated
//! main, for the tests of what the HTTP API and the command line show of activity calls in
//! flight: attempts, timeouts, heartbeats, cancellations; and `duractor_tests::policies` for
//! start policies and signal-with-start over HTTP and the command line; and
//! `duractor_tests::schedules` for schedules over HTTP and the command line; and
//! `duractor_tests::flow` for flow-controlled activities on the dashboard.

#[allow(unused_imports)]
use duractor_tests::bounded as _;
#[allow(unused_imports)]
use duractor_tests::flow as _;
#[allow(unused_imports)]
use duractor_tests::policies as _;
#[allow(unused_imports)]
use duractor_tests::schedules as _;

#[duractor::main]
async fn main() {}
