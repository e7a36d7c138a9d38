//! Rewrites an orchestrator body so the type system checks every `.await`.
//!
//! `expr.await` becomes `::duractor::__private::__durable(expr).await`, which compiles only if
//! `expr` is a `DurableFuture`; the error (with its `on_unimplemented` text) points at `expr`.
//! `async { .. }` blocks become `Durable::__new(async { .. })`: their own awaits are checked
//! the same way, so the block is durable too and can be awaited, joined or selected.
//! Nested items (`fn`, `impl`, …) are left alone: they are not part of the orchestration.

use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Expr, Item};

pub fn rewrite_block(block: &mut Block) {
    Rewriter.visit_block_mut(block);
}

struct Rewriter;

impl VisitMut for Rewriter {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        visit_mut::visit_expr_mut(self, expr);
        match expr {
            Expr::Await(await_expr) => {
                let base = &await_expr.base;
                let span = base.span();
                let wrapped: Expr = syn::parse_quote_spanned! {span=>
                    ::duractor::__private::__durable(#base)
                };
                *await_expr.base = wrapped;
            }
            Expr::Async(block) => {
                let span = block.span();
                let tokens = quote_spanned! {span=>
                    ::duractor::__private::Durable::__new(#block)
                };
                if let Ok(wrapped) = syn::parse2::<Expr>(tokens) {
                    *expr = wrapped;
                }
            }
            _ => {}
        }
    }

    fn visit_item_mut(&mut self, _item: &mut Item) {}
}
