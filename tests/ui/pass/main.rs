//! `#[duractor::main]` in its forms: empty, with setup, with a `Result`, with another store.
//! (trybuild runs pass tests: with no arguments the generated main prints its usage and exits
//! 2, so these are compiled as modules of one program whose own `main` exits 0.)

mod empty {
    #[duractor::main]
    async fn main() {}

    pub fn entry() -> std::process::ExitCode {
        main()
    }
}

mod with_setup {
    use std::time::Duration;

    struct Mailer;

    #[duractor::main]
    async fn main(app: &mut duractor::App) -> Result<(), duractor::Error> {
        if app.runs_worker() {
            app.with_shared(Mailer)
                .configure_runtime(|b| b.idle_unload_after(Duration::from_secs(60)));
        }
        app.default_tracing(false);
        Ok(())
    }

    pub fn entry() -> std::process::ExitCode {
        main()
    }
}

mod other_store {
    use std::sync::Arc;

    async fn open(url: &str) -> Result<Arc<dyn duractor::Store>, duractor::Error> {
        duractor_sqlx::open(url).await
    }

    #[duractor::main(store = open)]
    async fn main(_: &mut duractor::App) -> Result<(), String> {
        Ok(())
    }

    pub fn entry() -> std::process::ExitCode {
        main()
    }
}

fn main() {
    // Referenced so they are type-checked and linked, not run.
    let _ = [empty::entry, with_setup::entry, other_store::entry];
}
