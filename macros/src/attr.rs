//! Parses attributes: the arguments of `#[activity(name = "..")]` and
//! `#[orchestrator(version = "2")]`. The escape hatch is [`crate::allow`].

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::ast::Kind;

/// The arguments of `#[activity(..)]` / `#[orchestrator(..)]`.
#[derive(Default)]
pub struct Args {
    /// `name = "..."`: the registered name (default: the function's name).
    pub name: Option<LitStr>,
    /// `version = "..."`: the version stamped on new instances (orchestrators only).
    pub version: Option<LitStr>,
}

pub fn parse(kind: Kind, tokens: TokenStream) -> syn::Result<Args> {
    let mut args = Args::default();
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            push(syn::Error::new_spanned(&meta, expected(kind)));
            continue;
        };
        let known =
            nv.path.is_ident("name") || (nv.path.is_ident("version") && kind == Kind::Orchestrator);
        if !known {
            push(syn::Error::new_spanned(&nv.path, expected(kind)));
            continue;
        }
        let value = match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => s.clone(),
            other => {
                push(syn::Error::new_spanned(
                    other,
                    "expected a string literal, e.g. `name = \"charge_card\"`",
                ));
                continue;
            }
        };
        if nv.path.is_ident("name") {
            if value.value().trim().is_empty() {
                push(syn::Error::new_spanned(
                    &value,
                    "the name must not be empty",
                ));
            }
            args.name = Some(value);
        } else {
            args.version = Some(value);
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(args),
    }
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::Activity => "unknown argument; `#[activity]` accepts `name = \"..\"`".to_owned(),
        Kind::Orchestrator => {
            "unknown argument; `#[orchestrator]` accepts `name = \"..\"` and `version = \"..\"`"
                .to_owned()
        }
    }
}
