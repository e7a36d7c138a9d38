//! Rule 4, Rust's own trap: iterating a `HashMap`/`HashSet`, whose order is random per
//! process, when the binding is visibly one in the body (its type, or how it was made).

use syn::{Expr, ExprMethodCall, GenericArgument, Path, PathArguments, Type};

use super::aliases::written_path;
use super::rules::RULE_RANDOM;
use super::walk::Linter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HashKind {
    Map,
    Set,
}

/// Methods that iterate a map or set.
const ITERATING_METHODS: &[&str] = &[
    "iter",
    "iter_mut",
    "keys",
    "values",
    "values_mut",
    "into_iter",
    "into_keys",
    "into_values",
    "drain",
];

/// Iterator methods whose result does not depend on the order (`map.keys().count()`).
pub(super) const ORDER_FREE_METHODS: &[&str] = &["count", "min", "max", "any", "all"];

/// Constructors of `HashMap`/`HashSet` with the default (randomly seeded) hasher.
const HASH_CONSTRUCTORS: &[&str] = &["new", "with_capacity", "from", "from_iter", "default"];

/// `(kind, type arguments with the default hasher)` for a type name.
fn hash_type_name(name: &str) -> Option<(HashKind, usize)> {
    match name {
        "HashMap" | "AHashMap" => Some((HashKind::Map, 2)),
        "HashSet" | "AHashSet" => Some((HashKind::Set, 1)),
        _ => None,
    }
}

/// Modules a hash type of the standard library (or a drop-in replacement) is named from.
const HASH_MODULES: &[&str] = &["collections", "hash_map", "hash_set", "hashbrown", "ahash"];

pub(super) fn hash_message(kind: HashKind, name: &str) -> String {
    let (ty, fix) = match kind {
        HashKind::Map => (
            "HashMap",
            "a `BTreeMap` (sorted) or an `IndexMap` (insertion order)",
        ),
        HashKind::Set => (
            "HashSet",
            "a `BTreeSet` (sorted) or an `IndexSet` (insertion order)",
        ),
    };
    format!(
        "{RULE_RANDOM}: iterating the `{ty}` `{name}` visits its entries in an order that is random per process (its hasher is seeded randomly): a replay can make its durable calls in another order than the run that wrote the history; use {fix} instead"
    )
}

impl Linter<'_> {
    /// The kind of a type, if it is visibly a `HashMap`/`HashSet` with the default hasher.
    pub(super) fn hash_type(&self, ty: &Type) -> Option<HashKind> {
        match ty {
            Type::Reference(r) => self.hash_type(&r.elem),
            Type::Paren(p) => self.hash_type(&p.elem),
            Type::Group(g) => self.hash_type(&g.elem),
            Type::Path(p) if p.qself.is_none() => self.hash_path(&p.path, true),
            _ => None,
        }
    }

    /// The kind of a path naming a hash type: `HashMap`, `std::collections::HashMap<K, V>`,
    /// an alias of one. `last`: the type is the path's last segment (else the one before,
    /// as in `HashMap::new`).
    fn hash_path(&self, path: &Path, last: bool) -> Option<HashKind> {
        let (written, absolute) = written_path(None, path)?;
        let type_at = if last {
            path.segments.len().checked_sub(1)?
        } else {
            path.segments.len().checked_sub(2)?
        };
        // A third (or second, for sets) type argument is a custom hasher: deterministic.
        let type_args = match &path.segments[type_at].arguments {
            PathArguments::AngleBracketed(args) => args
                .args
                .iter()
                .filter(|a| matches!(a, GenericArgument::Type(_)))
                .count(),
            _ => 0,
        };
        let ty_written = &written[..=type_at];
        self.aliases
            .resolve(ty_written, absolute)
            .into_iter()
            .find_map(|resolved| {
                let (kind, default_args) = hash_type_name(resolved.last()?)?;
                let module_ok = resolved.len() == 1
                    || HASH_MODULES.contains(&resolved[resolved.len() - 2].as_str());
                (module_ok && type_args <= default_args).then_some(kind)
            })
    }

    /// The kind of a `let` initializer, if it visibly makes a `HashMap`/`HashSet`.
    pub(super) fn hash_init(&self, expr: &Expr) -> Option<HashKind> {
        match expr {
            Expr::Paren(e) => self.hash_init(&e.expr),
            Expr::Group(e) => self.hash_init(&e.expr),
            Expr::Reference(e) => self.hash_init(&e.expr),
            Expr::Path(p) if p.qself.is_none() => p
                .path
                .get_ident()
                .and_then(|id| self.hashes.get(&id.to_string()).copied()),
            Expr::Call(call) => match &*call.func {
                Expr::Path(p) if p.qself.is_none() => {
                    let constructor = p.path.segments.last()?.ident.to_string();
                    if !HASH_CONSTRUCTORS.contains(&constructor.as_str()) {
                        return None;
                    }
                    self.hash_path(&p.path, false)
                }
                _ => None,
            },
            Expr::MethodCall(m) if m.method == "collect" => {
                let turbofish = m.turbofish.as_ref()?;
                turbofish.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => self.hash_type(ty),
                    _ => None,
                })
            }
            Expr::MethodCall(m) if m.method == "clone" => {
                self.hash_binding(&m.receiver).map(|(_, k)| k)
            }
            Expr::Macro(m) => match m.mac.path.segments.last()?.ident.to_string().as_str() {
                "hashmap" => Some(HashKind::Map),
                "hashset" => Some(HashKind::Set),
                _ => None,
            },
            _ => None,
        }
    }

    /// `(name, kind)` if `expr` is (a reference to) a binding known to be a hash map or set.
    pub(super) fn hash_binding(&self, expr: &Expr) -> Option<(String, HashKind)> {
        match expr {
            Expr::Paren(e) => self.hash_binding(&e.expr),
            Expr::Group(e) => self.hash_binding(&e.expr),
            Expr::Reference(e) => self.hash_binding(&e.expr),
            Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => self.hash_binding(&u.expr),
            Expr::Path(p) if p.qself.is_none() => {
                let name = p.path.get_ident()?.to_string();
                let kind = *self.hashes.get(&name)?;
                Some((name, kind))
            }
            _ => None,
        }
    }

    /// `(name, kind)` if the method call iterates a hash map or set.
    pub(super) fn iterates_hash(&self, call: &ExprMethodCall) -> Option<(String, HashKind)> {
        if !ITERATING_METHODS.contains(&call.method.to_string().as_str()) {
            return None;
        }
        self.hash_binding(&call.receiver)
    }
}
