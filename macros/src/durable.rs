//! Rewrites an orchestrator (or helper) body so the type system checks every `.await`, and
//! removes the escape hatches the lint has read.
//!
//! `expr.await` becomes `::duractor::__private::__durable(expr).await`, which compiles only if
//! `expr` is a `DurableFuture`; the error (with its `on_unimplemented` text) points at `expr`.
//! `async { .. }` blocks become `Durable::__new(async { .. })`: their own awaits are checked
//! the same way, so the block is durable too and can be awaited, joined or selected. Awaits
//! and `async` blocks in macro arguments that parse as expressions (`format!`, `info!`, …)
//! are rewritten too. Nested items (`fn`, `impl`, …) are not part of the orchestration: their
//! `.await`s are left alone (awaiting a nested `async fn` from the body is rejected by the type
//! rule, like any plain `async fn`), and only the escape hatches the lint read in them are
//! removed.
//!
//! When the lint has failed, an awaited expression it rejects (`tokio::time::sleep(d).await`)
//! is left unwrapped, so the offence is reported once, by the lint; when the lint passes,
//! every `.await` is wrapped, so no await can compile unchecked. Inside a statement under
//! `#[duractor::allow_nondeterminism(..)]` every `.await` is wrapped: the escape hatch turns off
//! the lint, never the type rule. The attribute itself is removed, since rustc does not accept
//! unknown attributes on statements.

use proc_macro2::TokenStream;
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Arm, Block, Expr, Item, Macro, Stmt};

use crate::allow;
use crate::lint::{self, Aliases};
use crate::macro_args::{self, ArgBody};

/// Rewrites every `.await` and `async` block of `block`, and removes the escape hatches.
/// `lint_failed`: the lint reported errors for this body (see the module docs).
pub fn rewrite_block(block: &mut Block, aliases: &Aliases, lint_failed: bool) {
    Rewriter {
        aliases,
        allowed: 0,
        strip_only: false,
        lint_failed,
    }
    .visit_block_mut(block);
}

/// Only removes the escape hatches: for a function shown as written after a signature error.
pub fn strip_allows(block: &mut Block) {
    let aliases = Aliases::default();
    Rewriter {
        aliases: &aliases,
        allowed: 0,
        strip_only: true,
        lint_failed: false,
    }
    .visit_block_mut(block);
}

struct Rewriter<'a> {
    aliases: &'a Aliases,
    /// How many escape hatches enclose the current node.
    allowed: usize,
    strip_only: bool,
    lint_failed: bool,
}

impl Rewriter<'_> {
    fn with_allowed(&mut self, allowed: bool, f: impl FnOnce(&mut Self)) {
        self.allowed += usize::from(allowed);
        f(self);
        self.allowed -= usize::from(allowed);
    }
}

impl VisitMut for Rewriter<'_> {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        let allowed = allow::stmt_attrs_mut(stmt).is_some_and(allow::take_allows);
        self.with_allowed(allowed, |this| visit_mut::visit_stmt_mut(this, stmt));
    }

    fn visit_arm_mut(&mut self, arm: &mut Arm) {
        let allowed = allow::take_allows(&mut arm.attrs);
        self.with_allowed(allowed, |this| visit_mut::visit_arm_mut(this, arm));
    }

    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        let allowed = allow::expr_attrs_mut(expr).is_some_and(allow::take_allows);
        self.with_allowed(allowed, |this| this.rewrite_expr(expr));
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        // Only touch macro arguments that have something to rewrite.
        if !(macro_args::contains_ident(&mac.tokens, "await")
            || macro_args::contains_ident(&mac.tokens, "async")
            || macro_args::contains_ident(&mac.tokens, allow::ALLOW))
        {
            return;
        }
        let mut args = macro_args::parse(mac.tokens.clone());
        for arg in &mut args {
            if let ArgBody::Expr(expr) = &mut arg.body {
                self.visit_expr_mut(expr);
            }
        }
        mac.tokens = macro_args::to_tokens(&args);
    }

    fn visit_item_mut(&mut self, item: &mut Item) {
        // Nested items are linted like the body but are not part of the orchestration: their
        // `.await`s are not rewritten (awaiting a nested `async fn` in the body is rejected by
        // the type rule anyway). Only their escape hatches are removed. Items another duractor
        // macro expands keep theirs: that macro reads them.
        if allow::has_item_macro(allow::item_attrs(item)) {
            return;
        }
        let strip_only = std::mem::replace(&mut self.strip_only, true);
        visit_mut::visit_item_mut(self, item);
        self.strip_only = strip_only;
    }

    fn visit_impl_item_fn_mut(&mut self, item: &mut syn::ImplItemFn) {
        if !allow::has_item_macro(&item.attrs) {
            visit_mut::visit_impl_item_fn_mut(self, item);
        }
    }
}

impl Rewriter<'_> {
    fn rewrite_expr(&mut self, expr: &mut Expr) {
        let wrap_await = !self.strip_only
            && match expr {
                Expr::Await(await_expr) => {
                    !self.lint_failed
                        || self.allowed > 0
                        || !lint::offends(&await_expr.base, self.aliases)
                }
                _ => false,
            };
        visit_mut::visit_expr_mut(self, expr);
        if self.strip_only {
            return;
        }
        match expr {
            Expr::Await(await_expr) if wrap_await => {
                // The check is spanned at `.await`, so the error reads "this future is not
                // durable" under the awaited expression and "required by this call" under
                // `await`.
                let base = &await_expr.base;
                let span = await_expr.await_token.span;
                let wrapped: Expr = syn::parse_quote_spanned! {span=>
                    ::duractor::__private::__durable(#base)
                };
                *await_expr.base = wrapped;
            }
            Expr::Async(block) => {
                let span = block.span();
                let tokens: TokenStream = quote_spanned! {span=>
                    ::duractor::__private::Durable::__new(#block)
                };
                if let Ok(wrapped) = syn::parse2::<Expr>(tokens) {
                    *expr = wrapped;
                }
            }
            _ => {}
        }
    }
}
