//! Adds the type-level check of the globals an orchestrator (or helper) body reads: the part
//! of orchestrator rule 1 (no ambient state) that a token-level lint cannot see.
//!
//! Whether `COUNTER` is an `AtomicU32` or a `u32` is a question of types, which only the
//! compiler answers. So for every path in the body that may name a global (see
//! [`may_name_global`]), a statement is added at the start of the block the path is in: a
//! closure that is never called, whose body compiles only if the path's type is not
//! interior-mutable (see the `duractor::__private::NotAmbientState` trait), spanned at the
//! path so that the error points there:
//!
//! ```ignore
//! let _ = || {
//!     use ::duractor::__private::{ViaInteriorMutable as _, ViaPlain as _};
//!     ::duractor::__private::NotAmbientState::__check(
//!         (&&::duractor::__private::AmbientProbe(&COUNTER)).__verdict(),
//!     );
//! };
//! ```
//!
//! The closure is never called, so the check costs nothing at run time, and it captures
//! nothing (globals are not captured), so it changes nothing for the borrow checker or for
//! whether a future is `Send`. It goes at the start of the block because the items and `use`
//! declarations of a block are in scope all through it, so the path names the same global
//! there; each block (a nested `fn`'s body too) gets its own check.
//!
//! Not checked, so that the check never fails for another reason than ambient state:
//! - statements, expressions and match arms under `#[duractor::allow_nondeterminism]`;
//! - `unsafe` blocks and `unsafe fn`s, which the lint rejects (a `static mut` is only read in
//!   them), and `const fn`s and constant expressions (`[0; LEN]`, `const { .. }`), patterns
//!   and types, which cannot read a global at run time;
//! - the function of a call (`MAKE_ID()`: a function, maybe generic, never a static);
//! - associated items (`u32::MAX`, `Self::LIMIT`, `<T as Tr>::ID`): a static never is one;
//! - names that a pattern of the function binds (a local named in capitals);
//! - names declared by a `thread_local!`/`task_local!` in the body that the lint reports, so
//!   that the declaration is reported and not every use as well;
//! - arguments of macros other than the formatting, assertion and logging macros (whose
//!   arguments may be names rather than expressions), and blocks inside macro arguments.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::visit::{self, Visit};
use syn::visit_mut::{self, VisitMut};
use syn::{Arm, Block, Expr, ExprCall, ExprPath, Item, Macro, Pat, Signature, Stmt, Type};

use crate::allow;
use crate::macro_args::{self, ArgBody};

/// Adds the check of every global `block` reads (see the module docs). `sig`: the function's
/// signature, whose parameters are locals.
pub fn add_checks(sig: &Signature, block: &mut Block) {
    let mut unchecked = Unchecked::default();
    for input in &sig.inputs {
        if let syn::FnArg::Typed(typed) = input {
            unchecked.visit_pat(&typed.pat);
        }
    }
    unchecked.visit_block(block);
    Checker {
        unchecked: &unchecked.names,
    }
    .visit_block_mut(block);
}

/// `true` for a path that may name a global: its last segment is named in capitals, as Rust
/// names statics, constants and `thread_local!` keys (`COUNTER`, `crate::state::CACHE`), and
/// the segments before it are modules, not types (`u32::MAX`, `Self::LIMIT`, `Kind::FAST`
/// are associated items or variants, and a static never is one).
fn may_name_global(path: &ExprPath) -> bool {
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<&syn::PathSegment> = path.path.segments.iter().collect();
    let Some((last, modules)) = segments.split_last() else {
        return false;
    };
    last.arguments.is_none()
        && is_capitals(&unraw(&last.ident))
        && modules.iter().all(|segment| {
            let name = unraw(&segment.ident);
            !name.starts_with(|c: char| c.is_ascii_uppercase()) && !PRIMITIVES.contains(&&*name)
        })
}

/// Primitive types, which have associated constants (`u32::MAX`) and no statics.
const PRIMITIVES: &[&str] = &[
    "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
    "i128", "isize", "f16", "f32", "f64", "f128",
];

/// `true` for `COUNTER`, `MAX_2`, `X`: capitals, digits and underscores, with a capital.
fn is_capitals(name: &str) -> bool {
    name.chars().any(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn unraw(ident: &syn::Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

/// Macros whose arguments are expressions (`format!`, `assert_eq!`, the `tracing` and `log`
/// macros), by their last segment: globals in their arguments are checked.
const EXPRESSION_MACROS: &[&str] = &[
    "format",
    "format_args",
    "print",
    "println",
    "eprint",
    "eprintln",
    "write",
    "writeln",
    "panic",
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "vec",
    "dbg",
    "todo",
    "unimplemented",
    "unreachable",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "event",
    "log",
];

/// Macros that declare thread-local state; the lint reports them.
const THREAD_LOCAL_MACROS: &[&str] = &["thread_local", "task_local"];

/// `true` if `attrs` hold an escape hatch.
fn allowed(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(allow::is_allow)
}

fn last_segment_in(path: &syn::Path, names: &[&str]) -> bool {
    path.segments
        .last()
        .is_some_and(|last| names.contains(&last.ident.to_string().as_str()))
}

// ---------------------------------------------------------------------------------------------
// Names that are not globals
// ---------------------------------------------------------------------------------------------

/// Names in capitals that are not checked: those a pattern binds anywhere in the function, and
/// those a reported `thread_local!`/`task_local!` declares. Scopes are not tracked.
#[derive(Default)]
struct Unchecked {
    names: HashSet<String>,
}

impl Unchecked {
    /// Records the `static NAME` of a thread-local declaration the lint reports.
    fn thread_local(&mut self, mac: &Macro) {
        if !last_segment_in(&mac.path, THREAD_LOCAL_MACROS) {
            return;
        }
        let trees: Vec<TokenTree> = mac.tokens.clone().into_iter().collect();
        for pair in trees.windows(2) {
            if let [TokenTree::Ident(keyword), TokenTree::Ident(name)] = pair
                && keyword == "static"
            {
                self.names.insert(unraw(name));
            }
        }
    }
}

impl<'ast> Visit<'ast> for Unchecked {
    fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
        let name = unraw(&pat.ident);
        if is_capitals(&name) {
            self.names.insert(name);
        }
        visit::visit_pat_ident(self, pat);
    }

    fn visit_stmt(&mut self, stmt: &'ast Stmt) {
        if allowed(allow::stmt_attrs(stmt)) {
            // Not reported by the lint: its thread-locals are checked where they are used.
            if let Stmt::Local(local) = stmt {
                self.visit_pat(&local.pat);
            }
            return;
        }
        visit::visit_stmt(self, stmt);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.thread_local(mac);
        if last_segment_in(&mac.path, EXPRESSION_MACROS) {
            for arg in macro_args::parse(mac.tokens.clone()) {
                if let ArgBody::Expr(expr) = &arg.body {
                    self.visit_expr(expr);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adding the checks
// ---------------------------------------------------------------------------------------------

/// Walks the body and its nested functions, adding each block's check.
struct Checker<'a> {
    unchecked: &'a HashSet<String>,
}

impl Checker<'_> {
    fn function(&mut self, sig: &Signature, block: &mut Block) {
        if sig.unsafety.is_none() && sig.constness.is_none() {
            self.visit_block_mut(block);
        }
    }
}

impl VisitMut for Checker<'_> {
    fn visit_block_mut(&mut self, block: &mut Block) {
        let mut paths = Vec::new();
        for stmt in &mut block.stmts {
            if allowed(allow::stmt_attrs(stmt)) {
                continue;
            }
            Globals {
                unchecked: self.unchecked,
                paths: &mut paths,
            }
            .visit_stmt(stmt);
            visit_mut::visit_stmt_mut(self, stmt);
        }
        if !paths.is_empty() {
            block.stmts.insert(0, check(&paths));
        }
    }

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if allowed(allow::expr_attrs(expr)) {
            return;
        }
        match expr {
            Expr::Unsafe(_) | Expr::Const(_) => {}
            Expr::Repeat(repeat) => self.visit_expr_mut(&mut repeat.expr),
            _ => visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_arm_mut(&mut self, arm: &mut Arm) {
        if !allowed(&arm.attrs) {
            visit_mut::visit_arm_mut(self, arm);
        }
    }

    fn visit_item_mut(&mut self, item: &mut Item) {
        if allow::has_item_macro(allow::item_attrs(item)) {
            return;
        }
        match item {
            Item::Fn(function) => self.function(&function.sig, &mut function.block),
            Item::Impl(imp) => {
                for item in &mut imp.items {
                    if let syn::ImplItem::Fn(method) = item
                        && !allow::has_item_macro(&method.attrs)
                    {
                        self.function(&method.sig, &mut method.block);
                    }
                }
            }
            Item::Trait(tr) => {
                for item in &mut tr.items {
                    if let syn::TraitItem::Fn(method) = item
                        && let Some(block) = &mut method.default
                    {
                        self.function(&method.sig, block);
                    }
                }
            }
            Item::Mod(module) => {
                for item in module.content.iter_mut().flat_map(|(_, items)| items) {
                    self.visit_item_mut(item);
                }
            }
            _ => {}
        }
    }

    // Paths in macro arguments belong to their statement's check; blocks there get none.
    fn visit_macro_mut(&mut self, _: &mut Macro) {}

    fn visit_pat_mut(&mut self, _: &mut Pat) {}

    fn visit_type_mut(&mut self, _: &mut Type) {}
}

/// Collects the paths that may name a global in one statement, outside its nested blocks
/// (they get their own check) and items.
struct Globals<'a, 'p> {
    unchecked: &'a HashSet<String>,
    paths: &'p mut Vec<ExprPath>,
}

impl<'ast> Visit<'ast> for Globals<'_, '_> {
    fn visit_block(&mut self, _: &'ast Block) {}

    fn visit_item(&mut self, _: &'ast Item) {}

    fn visit_pat(&mut self, _: &'ast Pat) {}

    fn visit_type(&mut self, _: &'ast Type) {}

    fn visit_expr(&mut self, expr: &'ast Expr) {
        if allowed(allow::expr_attrs(expr)) {
            return;
        }
        match expr {
            // `&raw const X` is how a `static mut` is reached without `unsafe`: not a read.
            Expr::Unsafe(_) | Expr::Const(_) | Expr::RawAddr(_) => {}
            Expr::Repeat(repeat) => self.visit_expr(&repeat.expr),
            _ => visit::visit_expr(self, expr),
        }
    }

    fn visit_arm(&mut self, arm: &'ast Arm) {
        if !allowed(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if !matches!(&*call.func, Expr::Path(_)) {
            self.visit_expr(&call.func);
        }
        for arg in &call.args {
            self.visit_expr(arg);
        }
    }

    fn visit_expr_path(&mut self, path: &'ast ExprPath) {
        let local = path
            .path
            .get_ident()
            .is_some_and(|ident| self.unchecked.contains(&unraw(ident)));
        if !local && may_name_global(path) {
            self.paths.push(path.clone());
        }
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        if !last_segment_in(&mac.path, EXPRESSION_MACROS) {
            return;
        }
        for arg in macro_args::parse(mac.tokens.clone()) {
            if let ArgBody::Expr(expr) = &arg.body {
                self.visit_expr(expr);
            }
        }
    }
}

/// The statement that checks `paths`, each spanned at its path: from its first token to its
/// last, so the error underlines the whole path.
fn check(paths: &[ExprPath]) -> Stmt {
    let checks = paths.iter().map(|path| {
        let tokens: Vec<TokenTree> = quote!(#path).into_iter().collect();
        let first = tokens.first().map_or_else(Span::call_site, TokenTree::span);
        let last = tokens.last().map_or_else(Span::call_site, TokenTree::span);
        let probe: TokenStream = quote_spanned! {first=>
            (&&::duractor::__private::AmbientProbe(&#path))
        };
        // The function is spanned like the path too, so that rustc does not add a "required
        // by this call" label under part of it.
        let function: TokenStream = quote_spanned! {first=>
            ::duractor::__private::NotAmbientState::
        };
        quote_spanned! {last=>
            #function __check(#probe.__verdict());
        }
    });
    // `deprecated`: a use of a deprecated constant is the user's to allow, on its statement;
    // its copy here must not warn again. (One of the two traits is always unused.)
    syn::parse_quote! {
        #[allow(deprecated)]
        let _ = || {
            #[allow(unused_imports)]
            use ::duractor::__private::{ViaInteriorMutable as _, ViaPlain as _};
            #(#checks)*
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    /// How many globals get a check in `block`.
    fn checks(mut block: Block) -> usize {
        let sig: Signature =
            parse_quote!(async fn f(ctx: OrchestrationContext, input: ()) -> Result<(), Error>);
        add_checks(&sig, &mut block);
        quote!(#block).to_string().matches("AmbientProbe").count()
    }

    #[test]
    fn paths_named_in_capitals_are_checked() {
        assert_eq!(
            checks(parse_quote!({
                COUNTER.fetch_add(1, Ordering::Relaxed);
                crate::state::CACHE.lock();
                let x = X;
            })),
            3
        );
        assert_eq!(
            checks(parse_quote!({
                let a = u32::MAX + i64::MIN + Self::LIMIT + <T as Tr>::ID;
                let b = Kind::FAST;
                let c = MAKE_ID();
                let d = counter.load(Ordering::Relaxed);
                let e = [0u8; LEN];
                let f = &raw const RUNS;
                let g = unsafe { RUNS };
            })),
            0
        );
    }

    #[test]
    fn locals_and_reported_declarations_are_not_checked() {
        assert_eq!(
            checks(parse_quote!({
                let MAX = 3;
                xs.iter().map(|ITEM| ITEM + MAX);
                thread_local! {
                    static RUNS: Cell<u32> = const { Cell::new(0) };
                }
                RUNS.with(|r| r.get());
            })),
            0
        );
        assert_eq!(
            checks(parse_quote!({
                #[duractor::allow_nondeterminism(reason = "a test")]
                thread_local! {
                    static RUNS: Cell<u32> = const { Cell::new(0) };
                }
                RUNS.with(|r| r.get());
            })),
            1
        );
    }

    #[test]
    fn the_escape_hatch_and_other_macros_skip_the_check() {
        assert_eq!(
            checks(parse_quote!({
                #[duractor::allow_nondeterminism(reason = "metrics only")]
                COUNTER.fetch_add(1, Ordering::Relaxed);
                match n {
                    #[duractor::allow_nondeterminism(reason = "metrics only")]
                    0 => COUNTER.load(Ordering::Relaxed),
                    _ => 0,
                };
                matches!(x, Some(MAX));
                my_dsl!(COUNTER);
            })),
            0
        );
        assert_eq!(
            checks(parse_quote!({
                println!("{}", COUNTER.load(Ordering::Relaxed));
                tracing::info!(hits = ?HITS, "x");
            })),
            2
        );
    }

    #[test]
    fn each_block_and_nested_function_gets_its_own_check() {
        let mut block: Block = parse_quote!({
            let a = 1;
            let b = {
                static LOCAL: AtomicU32 = AtomicU32::new(0);
                LOCAL.load(Ordering::Relaxed)
            };
        });
        let sig: Signature = parse_quote!(async fn f() -> u32);
        add_checks(&sig, &mut block);
        // Nothing at the top: the check is in the inner block, where `LOCAL` is in scope.
        assert_eq!(block.stmts.len(), 2);
        assert!(quote!(#block).to_string().contains("AmbientProbe"));

        assert_eq!(
            checks(parse_quote!({
                fn peek() -> u32 {
                    NEXT_ID.load(Ordering::Relaxed)
                }
                impl Ids {
                    fn next(&self) -> u32 {
                        NEXT_ID.fetch_add(1, Ordering::Relaxed)
                    }
                }
            })),
            2
        );
        assert_eq!(
            checks(parse_quote!({
                #[orchestration_helper]
                async fn next() -> u32 {
                    NEXT_ID.fetch_add(1, Ordering::Relaxed)
                }
                unsafe fn raw() -> u32 {
                    NEXT_ID.load(Ordering::Relaxed)
                }
                const fn limit() -> u32 {
                    MAX
                }
            })),
            0
        );
    }
}
