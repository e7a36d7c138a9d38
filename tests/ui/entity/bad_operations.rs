use duractor::prelude::*;

#[entity]
#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[entity]
impl Counter {
    fn consume(self) -> i64 {
        self.value
    }

    fn add_two(&mut self, a: i64, b: i64) {
        self.value += a + b;
    }

    fn label(&self, text: &str) -> String {
        format!("{text}{}", self.value)
    }

    fn late_context(&mut self, n: i64, ctx: &mut EntityContext) {
        self.value += n;
        let _ = ctx;
    }

    fn generic<T: Default>(&mut self) {
        let _ = T::default();
    }
}

fn main() {}
