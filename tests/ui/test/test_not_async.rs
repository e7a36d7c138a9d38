use duractor::testing::TestRuntime;

#[duractor::test]
fn not_async(t: TestRuntime) {
    let _ = t;
}

fn main() {}
