//! `#[duractor::test]`: check `async fn name(t: TestRuntime) { .. }` and expand it into a
//! `#[test] fn name()` that runs the body with a fresh test kit runtime
//! (`::duractor::testing::__run_test`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

use crate::ast::Errors;

const SIGNATURE: &str = "`async fn name(t: TestRuntime) { .. }`";

pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.spanned(
            &args,
            "#[duractor::test] takes no arguments; set the kit up with `TestRuntime::builder()` in a plain `#[tokio::test]` instead",
        );
    }
    let item = match syn::parse2::<ItemFn>(item) {
        Ok(item) => item,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                format!("#[duractor::test] goes on a test function: {SIGNATURE}"),
            ));
            return errors.into_error().to_compile_error();
        }
    };
    check(&item, &mut errors);
    match errors.finish() {
        Ok(()) => expand(item),
        // The function stays as written, but not as a test, so the errors above are the only
        // ones (no "unused import" of what only its signature named).
        Err(error) => {
            let error = error.to_compile_error();
            quote! {
                #error
                #[allow(dead_code)]
                #item
            }
        }
    }
}

fn check(item: &ItemFn, errors: &mut Errors) {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!("#[duractor::test] functions must be `async`: write {SIGNATURE}"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            "#[duractor::test] functions cannot be generic",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "#[duractor::test] functions cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "#[duractor::test] functions cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "#[duractor::test] functions cannot be `extern`");
    }
    for (index, param) in sig.inputs.iter().enumerate() {
        match param {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                format!("#[duractor::test] functions cannot take `self`: write {SIGNATURE}"),
            ),
            FnArg::Typed(_) if index == 0 => {}
            FnArg::Typed(typed) => errors.spanned(
                typed,
                format!(
                    "#[duractor::test] functions take one parameter, the test runtime: write {SIGNATURE}"
                ),
            ),
        }
    }
}

fn expand(item: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let name = &sig.ident;
    let output = &sig.output;
    let (param, check) = match sig.inputs.first() {
        Some(FnArg::Typed(typed)) => {
            let (pat, ty) = (&typed.pat, &typed.ty);
            // Outside the `#[test]` function, so a wrong type is reported in every build, at
            // the type, in duractor's words.
            let check = quote_spanned! {ty.span()=>
                const _: () = ::duractor::testing::__test_parameter::<#ty>();
            };
            (quote!(#pat: #ty), check)
        }
        _ => (
            quote!(_: ::duractor::testing::TestRuntime),
            TokenStream::new(),
        ),
    };
    quote! {
        #check

        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() #output {
            ::duractor::testing::__run_test(|#param| async move #block)
        }
    }
}
