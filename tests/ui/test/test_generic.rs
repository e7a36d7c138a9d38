#[duractor::test]
async fn generic<T: Default>(t: duractor::testing::TestRuntime) {
    let _ = (t, T::default());
}

fn main() {}
