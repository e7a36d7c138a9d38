//! The operating system's randomness: `OsRng`, `getrandom`, `from_entropy`/`from_os_rng`.
use duractor::prelude::*;

// Stand-ins with the real crates' paths (not dependencies of these tests).
mod rand {
    pub mod rngs {
        pub struct OsRng;
        impl OsRng {
            pub fn next_u32(&mut self) -> u32 {
                4
            }
        }
        pub struct StdRng;
        impl StdRng {
            pub fn from_os_rng() -> Self {
                StdRng
            }
        }
    }
}
mod getrandom {
    pub fn fill(_: &mut [u8]) -> Result<(), ()> {
        Ok(())
    }
}
use rand::rngs::{OsRng, StdRng};

#[orchestrator]
async fn keys(_ctx: OrchestrationContext, _: ()) -> Result<u32, duractor::Error> {
    let mut buf = [0u8; 16];
    let _ = getrandom::fill(&mut buf);
    let _seeded = StdRng::from_os_rng();
    Ok(OsRng.next_u32() + u32::from(buf[0]))
}

fn main() {}
