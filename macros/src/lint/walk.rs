//! The syntax-tree visitor: walks the body and the items declared in it, skips what the
//! escape hatch covers (checking its reason), tracks the local names in scope, and asks
//! [`super::rules`], [`super::loops`] and [`super::hashes`] about what it meets.

use std::collections::{HashMap, HashSet};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::visit::{self, Visit};
use syn::{
    Arm, Block, Expr, ExprCall, ExprClosure, ExprForLoop, ExprIf, ExprLoop, ExprMethodCall,
    ExprPath, ExprWhile, FnArg, Item, Local, Macro, Pat, Path, QSelf, Signature, StaticMutability,
    Stmt,
};

use super::aliases::{Aliases, written_path};
use super::hashes::{HashKind, ORDER_FREE_METHODS, hash_message};
use super::loops::{is_endless_range, is_literal_true};
use super::rules::{Use, classify, path_message, static_mut_message, unsafe_message};
use crate::allow;
use crate::ast::Errors;
use crate::macro_args::{self, ArgBody};

/// The lint's state while it walks one function: the offences found so far, and the names in
/// scope at the current node.
pub(super) struct Linter<'a> {
    pub(super) aliases: &'a Aliases,
    pub(super) errors: Errors,
    /// Bindings in scope that are visibly a `HashMap` or `HashSet`.
    pub(super) hashes: HashMap<String, HashKind>,
    /// Names bound in the body (parameters, `let`s, closure parameters, patterns): a call of
    /// a local closure named `rng` is not a call of `rand::rng`.
    pub(super) locals: HashSet<String>,
}

impl<'a> Linter<'a> {
    pub(super) fn new(aliases: &'a Aliases) -> Self {
        Linter {
            aliases,
            errors: Errors::default(),
            hashes: HashMap::new(),
            locals: HashSet::new(),
        }
    }

    /// Lints a function: its parameters (a `HashMap` input is tracked) and its body.
    pub(super) fn lint_fn(&mut self, sig: &Signature, block: &Block) {
        for input in &sig.inputs {
            if let FnArg::Typed(typed) = input {
                self.forget(&typed.pat);
                if let Pat::Ident(pat) = &*typed.pat
                    && let Some(kind) = self.hash_type(&typed.ty)
                {
                    self.hashes.insert(pat.ident.to_string(), kind);
                }
            }
        }
        self.visit_block(block);
    }

    /// Lints a function declared inside the body (a nested `fn`, or a method of a nested
    /// `impl` or `trait`) like the body: what it does runs when the body calls it. It sees
    /// none of the body's local variables.
    fn lint_nested_fn(&mut self, sig: &Signature, block: &Block) {
        if let Some(unsafety) = &sig.unsafety {
            self.errors.spanned(unsafety, unsafe_message());
        }
        let saved = (
            std::mem::take(&mut self.hashes),
            std::mem::take(&mut self.locals),
        );
        self.lint_fn(sig, block);
        (self.hashes, self.locals) = saved;
    }

    /// Reports a `static mut` declared in the body.
    fn check_static(&mut self, static_token: &syn::Token![static], mutability: &StaticMutability) {
        if !matches!(mutability, StaticMutability::None) {
            self.errors
                .spanned(quote!(#static_token #mutability), static_mut_message());
        }
    }

    /// Reports `path` if it names a nondeterministic API. `call`: it is called (one-segment
    /// paths are matched only then, or when they are capitalized, like `OsRng`).
    fn check_path(
        &mut self,
        usage: Use,
        qself: Option<&QSelf>,
        path: &Path,
        call: bool,
        tokens: &dyn ToTokens,
    ) {
        let Some((written, absolute)) = written_path(qself, path) else {
            return;
        };
        if qself.is_none() && !absolute && written.len() == 1 && self.locals.contains(&written[0]) {
            return;
        }
        for candidate in self.aliases.resolve(&written, absolute) {
            if candidate.len() == 1
                && !call
                && !candidate[0].starts_with(|c: char| c.is_ascii_uppercase())
            {
                continue;
            }
            if let Some(kind) = classify(usage, &candidate) {
                let bang = if usage == Use::Macro { "!" } else { "" };
                let lead = if absolute { "::" } else { "" };
                let mut shown = format!("`{lead}{}{bang}`", written.join("::"));
                if candidate != written {
                    shown.push_str(&format!(" (`{}{bang}`)", candidate.join("::")));
                }
                self.errors.spanned(tokens, path_message(kind, &shown));
                return;
            }
        }
    }

    fn check_allow(&mut self, attr: &syn::Attribute) {
        if let Err(error) = allow::check_allow(attr) {
            self.errors.push(error);
        }
    }

    /// Checks every escape hatch in `attrs`; `true` if there is one (the node is then skipped).
    fn allowed(&mut self, attrs: &[syn::Attribute]) -> bool {
        let mut allowed = false;
        for attr in attrs.iter().filter(|a| allow::is_allow(a)) {
            self.check_allow(attr);
            allowed = true;
        }
        allowed
    }

    /// Records the bindings a `let` makes as locals; hash maps and sets are remembered as
    /// such, and every other name they shadow is forgotten as one.
    fn bind(&mut self, pat: &Pat, init: Option<&Expr>) {
        let (ident, ty) = match pat {
            Pat::Ident(p) if p.subpat.is_none() => (&p.ident, None),
            Pat::Type(t) => match &*t.pat {
                Pat::Ident(p) if p.subpat.is_none() => (&p.ident, Some(&*t.ty)),
                _ => {
                    self.forget(pat);
                    return;
                }
            },
            _ => {
                self.forget(pat);
                return;
            }
        };
        let kind = match ty {
            Some(ty) => self.hash_type(ty),
            None => init.and_then(|init| self.hash_init(init)),
        };
        self.forget(pat);
        if let Some(kind) = kind {
            self.hashes.insert(ident.to_string(), kind);
        }
    }

    /// Records the names `pat` binds as locals, which are not hash maps (they shadow any hash
    /// map of the same name). Capitalized names (`None`, unit structs) are patterns, not locals.
    fn forget(&mut self, pat: &Pat) {
        struct Names<'n> {
            hashes: &'n mut HashMap<String, HashKind>,
            locals: &'n mut HashSet<String>,
        }
        impl<'ast> Visit<'ast> for Names<'_> {
            fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
                let name = p.ident.to_string();
                self.hashes.remove(&name);
                if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    self.locals.insert(name);
                }
                visit::visit_pat_ident(self, p);
            }
        }
        Names {
            hashes: &mut self.hashes,
            locals: &mut self.locals,
        }
        .visit_pat(pat);
    }

    /// Runs `f` with the names `pats` bind in scope, then restores the scope.
    fn scoped<'p>(&mut self, pats: impl IntoIterator<Item = &'p Pat>, f: impl FnOnce(&mut Self)) {
        let saved = (self.hashes.clone(), self.locals.clone());
        for pat in pats {
            self.forget(pat);
        }
        f(self);
        (self.hashes, self.locals) = saved;
    }

    /// Scans the tokens of a macro argument that is not an expression for paths and macros.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let punct = |i: usize, c: char| matches!(trees.get(i), Some(TokenTree::Punct(p)) if p.as_char() == c);
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(group) => {
                    self.scan_tokens(group.stream());
                    i += 1;
                }
                TokenTree::Ident(ident) if ident == "unsafe" => {
                    if matches!(trees.get(i + 1), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace)
                    {
                        self.errors.spanned(ident, unsafe_message());
                    }
                    i += 1;
                }
                TokenTree::Ident(_) => {
                    let after_dot = i > 0 && punct(i - 1, '.');
                    let lifetime = i > 0 && punct(i - 1, '\'');
                    let mut end = i + 1;
                    while matches!(trees.get(end), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                        && punct(end + 1, ':')
                        && matches!(trees.get(end + 2), Some(TokenTree::Ident(_)))
                    {
                        end += 3;
                    }
                    let start = if i >= 2
                        && punct(i - 1, ':')
                        && matches!(&trees[i - 2], TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                    {
                        i - 2
                    } else {
                        i
                    };
                    let path_tokens: TokenStream = trees[start..end].iter().cloned().collect();
                    if let (false, false, Ok(path)) = (
                        after_dot,
                        lifetime,
                        syn::parse2::<Path>(path_tokens.clone()),
                    ) {
                        if let (Some(TokenTree::Punct(bang)), Some(TokenTree::Group(group))) =
                            (trees.get(end), trees.get(end + 1))
                            && bang.as_char() == '!'
                        {
                            let mac = Macro {
                                path,
                                bang_token: syn::Token![!](bang.span()),
                                delimiter: match group.delimiter() {
                                    Delimiter::Brace => {
                                        syn::MacroDelimiter::Brace(Default::default())
                                    }
                                    Delimiter::Bracket => {
                                        syn::MacroDelimiter::Bracket(Default::default())
                                    }
                                    _ => syn::MacroDelimiter::Paren(Default::default()),
                                },
                                tokens: group.stream(),
                            };
                            self.lint_macro(&mac, &path_tokens);
                            i = end + 2;
                            continue;
                        }
                        let call = macro_args::is_paren_group(trees.get(end));
                        self.check_path(Use::Path, None, &path, call, &path_tokens);
                    }
                    i = end;
                }
                _ => i += 1,
            }
        }
    }

    /// Checks a macro call: the macro itself, then its arguments.
    fn lint_macro(&mut self, mac: &Macro, path_tokens: &dyn ToTokens) {
        let before = self.errors.len();
        let bang = &mac.bang_token;
        let shown = quote!(#path_tokens #bang);
        self.check_path(Use::Macro, None, &mac.path, true, &shown);
        if self.errors.len() > before {
            // Rejected as a whole: its arguments would only add follow-on errors.
            return;
        }
        for arg in macro_args::parse(mac.tokens.clone()) {
            match &arg.body {
                ArgBody::Expr(expr) => self.visit_expr(expr),
                ArgBody::Tokens(tokens) => self.scan_tokens(tokens.clone()),
            }
        }
    }
}

impl<'ast> Visit<'ast> for Linter<'_> {
    fn visit_block(&mut self, block: &'ast Block) {
        let saved = (self.hashes.clone(), self.locals.clone());
        visit::visit_block(self, block);
        (self.hashes, self.locals) = saved;
    }

    fn visit_stmt(&mut self, stmt: &'ast Stmt) {
        if self.allowed(allow::stmt_attrs(stmt)) {
            // The escape hatch: the statement is not linted (its `.await`s are still checked).
            if let Stmt::Local(local) = stmt {
                self.bind(&local.pat, local.init.as_ref().map(|i| &*i.expr));
            }
            return;
        }
        visit::visit_stmt(self, stmt);
    }

    fn visit_local(&mut self, local: &'ast Local) {
        if let Some(init) = &local.init {
            self.visit_expr(&init.expr);
            if let Some((_, diverge)) = &init.diverge {
                self.visit_expr(diverge);
            }
        }
        self.bind(&local.pat, local.init.as_ref().map(|i| &*i.expr));
    }

    fn visit_item(&mut self, item: &'ast Item) {
        // Nested items are linted like the body: the body calls them, so what they do runs in
        // the orchestration. Not those another duractor macro expands: orchestrators and
        // helpers lint themselves, and activities and entities may do I/O.
        if allow::has_item_macro(allow::item_attrs(item)) {
            return;
        }
        match item {
            Item::Static(s) => {
                self.check_static(&s.static_token, &s.mutability);
                self.visit_expr(&s.expr);
            }
            Item::Macro(m) if m.ident.is_none() => {
                let path = &m.mac.path;
                self.lint_macro(&m.mac, path);
            }
            // `macro_rules!`: its body is patterns and templates, not code.
            Item::Macro(_) => {}
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.lint_nested_fn(&item.sig, &item.block);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !allow::has_item_macro(&item.attrs) {
            self.lint_nested_fn(&item.sig, &item.block);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.lint_nested_fn(&item.sig, block);
        }
    }

    fn visit_foreign_item_static(&mut self, item: &'ast syn::ForeignItemStatic) {
        self.check_static(&item.static_token, &item.mutability);
    }

    fn visit_expr_unsafe(&mut self, expr: &'ast syn::ExprUnsafe) {
        self.errors.spanned(expr.unsafe_token, unsafe_message());
        visit::visit_expr_unsafe(self, expr);
    }

    fn visit_expr(&mut self, expr: &'ast Expr) {
        if self.allowed(allow::expr_attrs(expr)) {
            return;
        }
        visit::visit_expr(self, expr);
    }

    fn visit_arm(&mut self, arm: &'ast Arm) {
        if self.allowed(&arm.attrs) {
            return;
        }
        self.scoped([&arm.pat], |this| {
            if let Some((_, guard)) = &arm.guard {
                this.visit_expr(guard);
            }
            this.visit_expr(&arm.body);
        });
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        match &*call.func {
            Expr::Path(p) if p.attrs.is_empty() => {
                self.check_path(Use::Path, p.qself.as_ref(), &p.path, true, p);
            }
            func => self.visit_expr(func),
        }
        for arg in &call.args {
            self.visit_expr(arg);
        }
    }

    fn visit_expr_path(&mut self, path: &'ast ExprPath) {
        self.check_path(Use::Path, path.qself.as_ref(), &path.path, false, path);
    }

    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        // `map.keys().count()`: the order does not matter.
        if ORDER_FREE_METHODS.contains(&call.method.to_string().as_str())
            && let Expr::MethodCall(inner) = &*call.receiver
            && self.iterates_hash(inner).is_some()
        {
            self.visit_expr(&inner.receiver);
            for arg in inner.args.iter().chain(&call.args) {
                self.visit_expr(arg);
            }
            return;
        }
        if let Some((name, kind)) = self.iterates_hash(call) {
            self.errors.spanned(&call.method, hash_message(kind, &name));
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_for_loop(&mut self, for_loop: &'ast ExprForLoop) {
        if let Some((name, kind)) = self.hash_binding(&for_loop.expr) {
            self.errors
                .spanned(&for_loop.expr, hash_message(kind, &name));
        }
        if is_endless_range(&for_loop.expr) {
            let for_token = &for_loop.for_token;
            let range = &for_loop.expr;
            self.check_loop_exits(
                &quote!(#for_token #range),
                "this `for` loop over an endless range",
                &for_loop.body,
                for_loop.label.as_ref().map(|l| &l.name),
            );
        }
        self.visit_expr(&for_loop.expr);
        self.scoped([&*for_loop.pat], |this| this.visit_block(&for_loop.body));
    }

    fn visit_expr_loop(&mut self, expr: &'ast ExprLoop) {
        self.check_loop_exits(
            &expr.loop_token,
            "this `loop`",
            &expr.body,
            expr.label.as_ref().map(|l| &l.name),
        );
        visit::visit_expr_loop(self, expr);
    }

    fn visit_expr_while(&mut self, expr: &'ast ExprWhile) {
        if is_literal_true(&expr.cond) {
            let while_token = &expr.while_token;
            let cond = &expr.cond;
            self.check_loop_exits(
                &quote!(#while_token #cond),
                "this `while true` loop",
                &expr.body,
                expr.label.as_ref().map(|l| &l.name),
            );
        }
        self.visit_expr(&expr.cond);
        let bound = let_patterns(&expr.cond);
        self.scoped(bound, |this| this.visit_block(&expr.body));
    }

    fn visit_expr_if(&mut self, expr: &'ast ExprIf) {
        self.visit_expr(&expr.cond);
        let bound = let_patterns(&expr.cond);
        self.scoped(bound, |this| this.visit_block(&expr.then_branch));
        if let Some((_, else_branch)) = &expr.else_branch {
            self.visit_expr(else_branch);
        }
    }

    fn visit_expr_closure(&mut self, closure: &'ast ExprClosure) {
        self.scoped(closure.inputs.iter(), |this| this.visit_expr(&closure.body));
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.lint_macro(mac, &mac.path);
    }
}

/// The patterns of the `let`s in an `if`/`while` condition (`if let Some(x) = ..`).
fn let_patterns(cond: &Expr) -> Vec<&Pat> {
    match cond {
        Expr::Let(l) => vec![&*l.pat],
        Expr::Binary(b) => {
            let mut pats = let_patterns(&b.left);
            pats.extend(let_patterns(&b.right));
            pats
        }
        Expr::Paren(p) => let_patterns(&p.expr),
        _ => Vec::new(),
    }
}
