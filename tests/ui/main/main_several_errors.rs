#[duractor::main(port = 8080)]
fn main(a: u8, b: u8) {}
