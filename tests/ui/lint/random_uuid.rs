//! Random and time-based UUIDs: `Uuid::new_v4`, `uuid::Uuid::now_v7`.
use duractor::prelude::*;

// A stand-in with uuid's paths (uuid is not a dependency of these tests).
mod uuid {
    pub struct Uuid;
    impl Uuid {
        pub fn new_v4() -> Self {
            Uuid
        }
        pub fn now_v7() -> Self {
            Uuid
        }
    }
}
use uuid::Uuid;

#[orchestrator]
async fn ids(_ctx: OrchestrationContext, _: ()) -> Result<(), duractor::Error> {
    let _order_id = Uuid::new_v4();
    let _trace_id = uuid::Uuid::now_v7();
    Ok(())
}

fn main() {}
