//! The escape hatch `#[duractor::allow_nondeterminism(reason = "..")]` on a statement of an
//! orchestrator or helper body: recognizing it, checking its reason, and removing it after
//! linting (rustc does not accept unknown attributes on statements). Also where syn keeps the
//! attributes of a body's statements, expressions and items, which the lint, the global check
//! and the `.await` rewriting read, and which nested items another duractor macro expands
//! (those are left to it).

use syn::{Attribute, Expr, Item, LitStr, Meta, Stmt};

/// The name of the escape hatch, `#[duractor::allow_nondeterminism(reason = "..")]`.
pub const ALLOW: &str = "allow_nondeterminism";

/// `true` for `#[allow_nondeterminism(..)]` and `#[duractor::allow_nondeterminism(..)]`.
pub fn is_allow(attr: &Attribute) -> bool {
    let path = attr.path();
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match segments.as_slice() {
        [name] => name == ALLOW,
        [krate, name] => krate == "duractor" && name == ALLOW,
        _ => false,
    }
}

/// Checks an escape hatch: it must carry a non-empty `reason = ".."`.
pub fn check_allow(attr: &Attribute) -> syn::Result<LitStr> {
    let usage = "write `#[duractor::allow_nondeterminism(reason = \"why this cannot differ between the first run and a replay\")]`";
    let missing = || {
        syn::Error::new_spanned(
            attr,
            format!(
                "`#[duractor::allow_nondeterminism]` needs a reason: {usage}; the reason is what a reviewer reads when searching the code for `allow_nondeterminism`"
            ),
        )
    };
    let Meta::List(list) = &attr.meta else {
        return Err(missing());
    };
    if list.tokens.is_empty() {
        return Err(missing());
    }
    let mut reason: Option<LitStr> = None;
    list.parse_nested_meta(|meta| {
        if !meta.path.is_ident("reason") {
            return Err(meta.error(format!(
                "unknown argument; `#[duractor::allow_nondeterminism]` takes only `reason = \"..\"`: {usage}"
            )));
        }
        let value: LitStr = meta.value()?.parse().map_err(|e| {
            syn::Error::new(e.span(), format!("the reason must be a string literal: {usage}"))
        })?;
        if value.value().trim().is_empty() {
            return Err(syn::Error::new_spanned(
                &value,
                "the reason of `#[duractor::allow_nondeterminism]` must not be empty: say why this statement cannot differ between the first run and a replay",
            ));
        }
        reason = Some(value);
        Ok(())
    })?;
    reason.ok_or_else(missing)
}

/// The attributes of an expression (`None` for kinds that cannot carry any).
macro_rules! expr_attrs {
    ($expr:expr, $($variant:ident)*) => {
        match $expr {
            $(Expr::$variant(e) => Some(&e.attrs),)*
            _ => None,
        }
    };
}

macro_rules! expr_attrs_mut {
    ($expr:expr, $($variant:ident)*) => {
        match $expr {
            $(Expr::$variant(e) => Some(&mut e.attrs),)*
            _ => None,
        }
    };
}

/// The attributes written on an expression.
pub fn expr_attrs(expr: &Expr) -> &[Attribute] {
    expr_attrs!(expr, Array Assign Async Await Binary Block Break Call Cast Closure Const Continue
        Field ForLoop Group If Index Infer Let Lit Loop Macro Match MethodCall Paren Path Range
        RawAddr Reference Repeat Return Struct Try TryBlock Tuple Unary Unsafe While Yield)
    .map_or(&[], Vec::as_slice)
}

/// The attributes written on an expression, to remove the escape hatch after linting.
pub fn expr_attrs_mut(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    expr_attrs_mut!(expr, Array Assign Async Await Binary Block Break Call Cast Closure Const
        Continue Field ForLoop Group If Index Infer Let Lit Loop Macro Match MethodCall Paren Path
        Range RawAddr Reference Repeat Return Struct Try TryBlock Tuple Unary Unsafe While Yield)
}

/// Where syn puts the attributes of an expression statement: on its leftmost operand
/// (`#[a] x = f();` carries `#[a]` on `x`), which stands for the whole statement.
pub fn stmt_attr_target(mut expr: &Expr) -> &Expr {
    loop {
        expr = match expr {
            Expr::Assign(e) => &e.left,
            Expr::Binary(e) => &e.left,
            Expr::Cast(e) => &e.expr,
            _ => return expr,
        };
    }
}

/// [`stmt_attr_target`], mutably.
pub fn stmt_attr_target_mut(mut expr: &mut Expr) -> &mut Expr {
    loop {
        expr = match expr {
            Expr::Assign(e) => &mut e.left,
            Expr::Binary(e) => &mut e.left,
            Expr::Cast(e) => &mut e.expr,
            _ => return expr,
        };
    }
}

/// The attributes of an item.
pub fn item_attrs_mut(item: &mut Item) -> Option<&mut Vec<Attribute>> {
    Some(match item {
        Item::Const(i) => &mut i.attrs,
        Item::Enum(i) => &mut i.attrs,
        Item::ExternCrate(i) => &mut i.attrs,
        Item::Fn(i) => &mut i.attrs,
        Item::ForeignMod(i) => &mut i.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Macro(i) => &mut i.attrs,
        Item::Mod(i) => &mut i.attrs,
        Item::Static(i) => &mut i.attrs,
        Item::Struct(i) => &mut i.attrs,
        Item::Trait(i) => &mut i.attrs,
        Item::TraitAlias(i) => &mut i.attrs,
        Item::Type(i) => &mut i.attrs,
        Item::Union(i) => &mut i.attrs,
        Item::Use(i) => &mut i.attrs,
        _ => return None,
    })
}

/// The attributes written on a statement.
pub fn stmt_attrs(stmt: &Stmt) -> &[Attribute] {
    match stmt {
        Stmt::Local(local) => &local.attrs,
        Stmt::Macro(mac) => &mac.attrs,
        Stmt::Expr(expr, _) => expr_attrs(stmt_attr_target(expr)),
        Stmt::Item(item) => item_attrs(item),
    }
}

/// The attributes of an item.
pub fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// duractor's attributes that expand an item on their own.
const ITEM_MACROS: &[&str] = &["activity", "orchestrator", "orchestration_helper", "entity"];

/// `true` if `attrs` hold one of duractor's item macros (`#[activity]`, `#[orchestrator]`,
/// `#[orchestration_helper]`, `#[entity]`, bare or as `duractor::..`). An item nested in an
/// orchestrator body and marked so is left to its own macro: orchestrators and helpers lint
/// themselves, and activities and entities may do what orchestrators must not.
pub fn has_item_macro(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let segments: Vec<String> = attr
            .path()
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect();
        match segments.as_slice() {
            [name] => ITEM_MACROS.contains(&name.as_str()),
            [krate, name] => krate == "duractor" && ITEM_MACROS.contains(&name.as_str()),
            _ => false,
        }
    })
}

/// The attributes written on a statement, mutably.
pub fn stmt_attrs_mut(stmt: &mut Stmt) -> Option<&mut Vec<Attribute>> {
    match stmt {
        Stmt::Local(local) => Some(&mut local.attrs),
        Stmt::Macro(mac) => Some(&mut mac.attrs),
        Stmt::Expr(expr, _) => expr_attrs_mut(stmt_attr_target_mut(expr)),
        Stmt::Item(item) => item_attrs_mut(item),
    }
}

/// Removes the escape hatches from `attrs`; `true` if there was one.
pub fn take_allows(attrs: &mut Vec<Attribute>) -> bool {
    let before = attrs.len();
    attrs.retain(|attr| !is_allow(attr));
    attrs.len() != before
}
