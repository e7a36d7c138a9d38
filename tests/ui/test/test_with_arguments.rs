use duractor::testing::TestRuntime;

#[duractor::test(start = "2026-01-01T00:00:00Z")]
async fn configured(t: TestRuntime) {
    let _ = t;
}

fn main() {}
