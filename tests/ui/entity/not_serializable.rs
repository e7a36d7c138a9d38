use duractor::prelude::*;

#[entity]
#[derive(Default)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn add(&mut self, n: i64) {
        self.value += n;
    }
}

fn main() {}
