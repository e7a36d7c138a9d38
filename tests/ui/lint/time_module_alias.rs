//! An alias of a module (`use std::time as t;`) and a glob import are resolved too.
use duractor::prelude::*;

#[orchestrator]
async fn timed(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    use std::time as t;
    use std::thread::*;
    let _started = t::SystemTime::now();
    sleep(t::Duration::from_millis(10));
    Ok(())
}

fn main() {}
