//! Compile-time errors users can hit, pinned by trybuild: `ui/signature` (wrong function
//! signatures), `ui/main` (misuses of `#[duractor::main]`) and `ui/pass` (what must compile).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/signature/*.rs");
    t.compile_fail("ui/main/*.rs");
    t.pass("ui/pass/*.rs");
}
