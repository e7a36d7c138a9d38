#[duractor::main]
fn main() {}
