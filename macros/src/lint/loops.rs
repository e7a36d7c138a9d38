//! Rule 3, no infinite loops: a `loop`, a `while true` or a `for` over an endless range
//! (`n..`) needs a `break` or a `return` that leaves it; `?` does not count.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::{self, Visit};
use syn::{
    Block, Expr, ExprClosure, ExprForLoop, ExprLoop, ExprWhile, Item, Lifetime, Macro, RangeLimits,
};

use super::rules::RULE_LOOPS;
use super::walk::Linter;

fn loop_message(what: &str, has_try: bool) -> String {
    let try_note = if has_try {
        " (`?` does not count: a loop that ends only on an error runs forever when all goes well)"
    } else {
        ""
    };
    format!(
        "{RULE_LOOPS}: {what} has no `break` or `return`{try_note}, so it never ends: every iteration adds to the instance's history, which grows without bound and is replayed from the start on every turn; end the turn and start a new execution with `ctx.continue_as_new(input)`, or give the loop a `break`"
    )
}

impl Linter<'_> {
    /// Reports the loop `tokens` (described as `what`) if `body` has no way out of it.
    pub(super) fn check_loop_exits(
        &mut self,
        tokens: &dyn ToTokens,
        what: &str,
        body: &Block,
        label: Option<&Lifetime>,
    ) {
        let mut finder = ExitFinder {
            own: label.map(|l| l.ident.to_string()),
            depth: 0,
            nested_labels: Vec::new(),
            exits: false,
            has_try: false,
        };
        finder.visit_block(body);
        if !finder.exits {
            self.errors
                .spanned(tokens, loop_message(what, finder.has_try));
        }
    }
}

/// `true` for `true`, `(true)`.
pub(super) fn is_literal_true(expr: &Expr) -> bool {
    match expr {
        Expr::Lit(lit) => matches!(&lit.lit, syn::Lit::Bool(b) if b.value),
        Expr::Paren(p) => is_literal_true(&p.expr),
        Expr::Group(g) => is_literal_true(&g.expr),
        _ => false,
    }
}

/// `true` for an endless range `n..`, `(n..)`.
pub(super) fn is_endless_range(expr: &Expr) -> bool {
    match expr {
        Expr::Range(r) => r.end.is_none() && matches!(r.limits, RangeLimits::HalfOpen(_)),
        Expr::Paren(p) => is_endless_range(&p.expr),
        Expr::Group(g) => is_endless_range(&g.expr),
        _ => false,
    }
}

/// Looks for a way out of a loop body: a `break` or `continue 'outer` that leaves it, or a
/// `return`. Nested closures, `async` blocks and items are not part of the loop's control flow.
struct ExitFinder {
    own: Option<String>,
    depth: usize,
    nested_labels: Vec<String>,
    exits: bool,
    has_try: bool,
}

impl ExitFinder {
    fn nested<F: FnOnce(&mut Self)>(&mut self, label: Option<&syn::Label>, loops: bool, f: F) {
        if let Some(label) = label {
            self.nested_labels.push(label.name.ident.to_string());
        }
        if loops {
            self.depth += 1;
        }
        f(self);
        if loops {
            self.depth -= 1;
        }
        if label.is_some() {
            self.nested_labels.pop();
        }
    }

    fn leaves(&self, label: &Lifetime) -> bool {
        !self.nested_labels.contains(&label.ident.to_string())
    }
}

impl<'ast> Visit<'ast> for ExitFinder {
    fn visit_expr_break(&mut self, expr: &'ast syn::ExprBreak) {
        match &expr.label {
            None if self.depth == 0 => self.exits = true,
            Some(label) if self.leaves(label) => self.exits = true,
            _ => {}
        }
        visit::visit_expr_break(self, expr);
    }

    fn visit_expr_continue(&mut self, expr: &'ast syn::ExprContinue) {
        if let Some(label) = &expr.label
            && self.leaves(label)
            && self.own.as_deref() != Some(label.ident.to_string().as_str())
        {
            self.exits = true;
        }
    }

    fn visit_expr_return(&mut self, _: &'ast syn::ExprReturn) {
        self.exits = true;
    }

    fn visit_expr_try(&mut self, expr: &'ast syn::ExprTry) {
        self.has_try = true;
        visit::visit_expr_try(self, expr);
    }

    fn visit_expr_loop(&mut self, expr: &'ast ExprLoop) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_loop(this, expr)
        });
    }

    fn visit_expr_while(&mut self, expr: &'ast ExprWhile) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_while(this, expr)
        });
    }

    fn visit_expr_for_loop(&mut self, expr: &'ast ExprForLoop) {
        self.nested(expr.label.as_ref(), true, |this| {
            visit::visit_expr_for_loop(this, expr)
        });
    }

    fn visit_expr_block(&mut self, expr: &'ast syn::ExprBlock) {
        self.nested(expr.label.as_ref(), false, |this| {
            visit::visit_expr_block(this, expr)
        });
    }

    fn visit_expr_closure(&mut self, _: &'ast ExprClosure) {}

    fn visit_expr_async(&mut self, _: &'ast syn::ExprAsync) {}

    fn visit_item(&mut self, _: &'ast Item) {}

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // `return`/`break` in a macro's arguments (or `?` in them) count as written.
        fn scan(tokens: TokenStream, finder: &mut ExitFinder) {
            for tree in tokens {
                match tree {
                    TokenTree::Ident(ident) if ident == "return" || ident == "break" => {
                        finder.exits = true;
                    }
                    TokenTree::Punct(p) if p.as_char() == '?' => finder.has_try = true,
                    TokenTree::Group(group) => scan(group.stream(), finder),
                    _ => {}
                }
            }
        }
        scan(mac.tokens.clone(), self);
    }
}
