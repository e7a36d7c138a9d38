//! `#[duractor::test]` forms that must compile: with the kit, without a parameter, returning
//! a `Result`, with other test attributes.

use duractor::testing::TestRuntime;

#[duractor::test]
async fn with_the_kit(t: TestRuntime) {
    assert_eq!(t.elapsed(), std::time::Duration::ZERO);
}

#[duractor::test]
async fn without_a_parameter() {}

#[duractor::test]
async fn returning_a_result(t: TestRuntime) -> Result<(), duractor::Error> {
    t.client().list(Default::default()).await?;
    Ok(())
}

#[duractor::test]
#[ignore = "shows that other attributes stay"]
async fn ignored(_t: TestRuntime) {}

fn main() {}
