//! Compile-time errors users can hit, pinned by trybuild: `ui/signature` (wrong function
//! signatures), `ui/lint` (the orchestrator rules: the lint, the durable-await type rule,
//! helpers and the escape hatch), `ui/entity` (wrong `#[entity]` declarations), `ui/main`
//! (misuses of `#[duractor::main]`), `ui/test` (misuses of `#[duractor::test]`) and `ui/pass` (what must compile, with no false
//! positives).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/signature/*.rs");
    t.compile_fail("ui/lint/*.rs");
    t.compile_fail("ui/entity/*.rs");
    t.compile_fail("ui/main/*.rs");
    t.compile_fail("ui/test/*.rs");
    t.pass("ui/pass/*.rs");
}
