#[duractor::test]
struct NotATest;

fn main() {}
