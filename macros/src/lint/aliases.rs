//! The names `use` declarations inside a body bring into scope, and paths as written: how the
//! lint sees through `use std::time::Instant as Clock;` (see "How paths are matched" in
//! [`crate::lint`]).

use std::collections::HashMap;

use syn::visit::{self, Visit};
use syn::{Block, Item, ItemUse, Macro, Path, QSelf, Type, UseTree};

use crate::allow;
use crate::macro_args::{self, ArgBody};

/// The names `use` declarations inside a body bring into scope: `Clock` → `std::time::Instant`.
/// Scopes are not tracked: a `use` anywhere in the body (nested items included) applies to all
/// of it.
#[derive(Default, Debug)]
pub struct Aliases {
    names: HashMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
}

impl Aliases {
    /// The `use` declarations in `block`, its nested blocks and its nested items (those the
    /// lint checks: not the items another duractor macro expands).
    pub fn collect(block: &Block) -> Aliases {
        struct Collector(Aliases);
        impl<'ast> Visit<'ast> for Collector {
            fn visit_item(&mut self, item: &'ast Item) {
                match item {
                    Item::Use(ItemUse { tree, .. }) => self.0.add(Vec::new(), tree),
                    _ if allow::has_item_macro(allow::item_attrs(item)) => {}
                    _ => visit::visit_item(self, item),
                }
            }
            fn visit_macro(&mut self, mac: &'ast Macro) {
                for arg in macro_args::parse(mac.tokens.clone()) {
                    if let ArgBody::Expr(expr) = &arg.body {
                        self.visit_expr(expr);
                    }
                }
            }
        }
        let mut collector = Collector(Aliases::default());
        collector.visit_block(block);
        collector.0
    }

    fn add(&mut self, prefix: Vec<String>, tree: &UseTree) {
        let with = |name: String| {
            let mut path = prefix.clone();
            path.push(name);
            path
        };
        match tree {
            UseTree::Path(p) => self.add(with(unraw(&p.ident)), &p.tree),
            UseTree::Name(n) if n.ident == "self" => {
                if let Some(last) = prefix.last() {
                    self.names.insert(last.clone(), prefix.clone());
                }
            }
            UseTree::Name(n) => {
                self.names.insert(unraw(&n.ident), with(unraw(&n.ident)));
            }
            UseTree::Rename(r) if r.rename == "_" => {}
            UseTree::Rename(r) if r.ident == "self" => {
                self.names.insert(unraw(&r.rename), prefix.clone());
            }
            UseTree::Rename(r) => {
                self.names.insert(unraw(&r.rename), with(unraw(&r.ident)));
            }
            UseTree::Glob(_) => self.globs.push(prefix),
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.add(prefix.clone(), tree);
                }
            }
        }
    }

    /// The full paths `segments` may stand for: through an alias declared in the body, or
    /// as written, or under a glob import. Empty for the user's own paths (`crate::`, …).
    pub(super) fn resolve(&self, segments: &[String], absolute: bool) -> Vec<Vec<String>> {
        let mut path = segments.to_vec();
        if !absolute {
            // Aliases may build on each other (`use std::time; use time::Instant as I;`).
            for _ in 0..4 {
                match path.first().and_then(|first| self.names.get(first)) {
                    Some(target) if target.as_slice() != &path[..1] => {
                        let mut resolved = target.clone();
                        resolved.extend(path[1..].iter().cloned());
                        path = resolved;
                    }
                    _ => break,
                }
            }
        }
        if path
            .first()
            .is_some_and(|first| matches!(first.as_str(), "crate" | "self" | "super" | "Self"))
        {
            return Vec::new();
        }
        let mut candidates = vec![path.clone()];
        if !absolute && path.as_slice() == segments {
            for glob in &self.globs {
                let mut full = glob.clone();
                full.extend(path.iter().cloned());
                candidates.push(full);
            }
        }
        candidates
    }
}

fn unraw(ident: &syn::Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

/// The segments of a path as written (generic arguments dropped) and whether it starts
/// with `::`. `<T>::f` counts as `T::f`, `<T as Trait>::f` as `Trait::f`.
pub(super) fn written_path(qself: Option<&QSelf>, path: &Path) -> Option<(Vec<String>, bool)> {
    let mut segments = Vec::new();
    let mut absolute = path.leading_colon.is_some();
    if let Some(qself) = qself
        && qself.position == 0
    {
        let Type::Path(ty) = &*qself.ty else {
            return None;
        };
        if ty.qself.is_some() {
            return None;
        }
        absolute = ty.path.leading_colon.is_some();
        segments.extend(ty.path.segments.iter().map(|s| unraw(&s.ident)));
    }
    segments.extend(path.segments.iter().map(|s| unraw(&s.ident)));
    (!segments.is_empty()).then_some((segments, absolute))
}
