#[duractor::test]
async fn wrong(runtime: duractor::Runtime) {
    let _ = runtime;
}

fn main() {}
