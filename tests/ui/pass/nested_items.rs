//! Items nested in an orchestrator body: deterministic functions, `impl`s and traits compile;
//! a nested `#[orchestration_helper]` and `#[activity]` are expanded by their own macros (the
//! activity may do I/O).
use duractor::prelude::*;

#[orchestrator]
async fn nested(ctx: OrchestrationContext, words: Vec<String>) -> Result<usize, duractor::Error> {
    const SEPARATOR: &str = " ";

    fn join(words: &[String]) -> String {
        words.join(SEPARATOR)
    }

    trait Measure {
        fn size(&self) -> usize;
        fn doubled(&self) -> usize {
            self.size() * 2
        }
    }

    struct Sentence(String);

    impl Measure for Sentence {
        fn size(&self) -> usize {
            self.0.len()
        }
    }

    #[activity]
    async fn read_config(_ctx: ActivityContext, path: String) -> Result<usize, duractor::Error> {
        Ok(std::fs::read_to_string(path).map(|s| s.len()).unwrap_or(0))
    }

    #[orchestration_helper]
    async fn config_size(ctx: &OrchestrationContext) -> Result<usize, duractor::Error> {
        ctx.call_activity(ReadConfig, "app.toml".to_string()).await
    }

    let sentence = Sentence(join(&words));
    let config = config_size(&ctx).await?;
    Ok(sentence.doubled() + config)
}

fn main() {}
