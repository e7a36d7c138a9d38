use duractor::testing::TestRuntime;

#[duractor::test]
async fn two(t: TestRuntime, extra: u32) {
    let _ = (t, extra);
}

fn main() {}
