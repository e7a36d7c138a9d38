use duractor::prelude::*;

#[derive(Default, Serialize, Deserialize)]
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
