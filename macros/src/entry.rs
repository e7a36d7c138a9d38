//! `#[duractor::main]`: parse the arguments, model and check `async fn main`, expand into a
//! `fn main` that runs the app's command line (`::duractor::__private::run_main`).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

use crate::ast::Errors;
use crate::attr;

const SIGNATURE: &str = "`async fn main() {}` or `async fn main(app: &mut duractor::App) { .. }`";

/// The arguments of `#[duractor::main(..)]`.
struct Args {
    /// `store = path::to::open`: the function that opens the store a database URL names
    /// (default `::duractor_sqlx::open`).
    store: Option<syn::Path>,
}

/// A checked `async fn main`.
struct Main {
    item: ItemFn,
    /// The span of the single `app` parameter, if there is one.
    app_param: Option<Span>,
    args: Args,
}

pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = parse_args(args, &mut errors);
    let item = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                format!("#[duractor::main] goes on the program's entry point: {SIGNATURE}"),
            ));
            return fallback(errors, None);
        }
    };
    let app_param = check(&item, &mut errors);
    match errors.finish() {
        Ok(()) => expand(Main {
            item,
            app_param,
            args,
        }),
        Err(error) => {
            let mut errors = Errors::default();
            errors.push(error);
            fallback(errors, Some(item))
        }
    }
}

fn parse_args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let values = attr::MAIN.parse(tokens, errors);
    Args {
        store: values.path("store").cloned(),
    }
}

/// Checks the signature; returns the span of the `app` parameter if there is one.
fn check(item: &ItemFn, errors: &mut Errors) -> Option<Span> {
    let sig = &item.sig;
    if sig.ident != "main" {
        errors.spanned(
            &sig.ident,
            format!(
                "#[duractor::main] goes on `main`, the program's entry point; found `{}`: write {SIGNATURE}",
                sig.ident
            ),
        );
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!("#[duractor::main] functions must be `async`: write {SIGNATURE}"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            "#[duractor::main] functions cannot be generic",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "#[duractor::main] functions cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "#[duractor::main] functions cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "#[duractor::main] functions cannot be `extern`");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "#[duractor::main] functions cannot be variadic");
    }
    let mut app_param = None;
    for (index, param) in sig.inputs.iter().enumerate() {
        match param {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                format!("#[duractor::main] functions cannot take `self`: write {SIGNATURE}"),
            ),
            FnArg::Typed(typed) if index == 0 => app_param = Some(typed.ty.span()),
            FnArg::Typed(typed) => errors.spanned(
                typed,
                format!(
                    "#[duractor::main] functions take at most one parameter, the app's setup: write {SIGNATURE}"
                ),
            ),
        }
    }
    app_param
}

fn expand(main: Main) -> TokenStream {
    let Main {
        mut item,
        app_param,
        args,
    } = main;
    let attrs = std::mem::take(&mut item.attrs);
    let user_fn = syn::Ident::new("__duractor_main", item.sig.ident.span());
    item.sig.ident = user_fn.clone();
    let output_span = match &item.sig.output {
        syn::ReturnType::Default => item.sig.ident.span(),
        syn::ReturnType::Type(_, ty) => ty.span(),
    };
    let call = match app_param {
        Some(span) => quote_spanned! {span=> #user_fn(app) },
        None => quote! {{
            let _ = app;
            #user_fn()
        }},
    };
    // Spanned at the return type, so a type that is not `()` or a `Result` is reported there.
    let into_result = quote_spanned! {output_span=>
        ::duractor::__private::MainOutput::into_main_result((#call).await)
    };
    let store = match &args.store {
        Some(path) => quote_spanned! {path.span()=> #path },
        None => quote!(::duractor_sqlx::open),
    };
    quote! {
        #(#attrs)*
        fn main() -> ::std::process::ExitCode {
            #item

            fn __duractor_setup<'a>(
                app: &'a mut ::duractor::App,
            ) -> ::duractor::__private::LocalBoxFuture<
                'a,
                ::core::result::Result<(), ::std::string::String>,
            > {
                ::std::boxed::Box::pin(async move { #into_result })
            }

            fn __duractor_open_store(
                url: ::std::string::String,
            ) -> ::duractor::__private::LocalBoxFuture<
                'static,
                ::core::result::Result<
                    ::std::sync::Arc<dyn ::duractor::Store>,
                    ::duractor::Error,
                >,
            > {
                ::std::boxed::Box::pin(async move { #store(&url).await })
            }

            ::duractor::__private::run_main(
                ::core::option_env!("CARGO_BIN_NAME"),
                __duractor_open_store,
                __duractor_setup,
            )
        }
    }
}

/// The errors, and an empty `fn main` in place of an entry point that did not check, so the
/// user sees the real errors and no "`main` function not found" after them. A function
/// that is not `main` is kept as written.
fn fallback(errors: Errors, item: Option<ItemFn>) -> TokenStream {
    let errors = match errors.finish() {
        Err(error) => error.to_compile_error(),
        Ok(()) => TokenStream::new(),
    };
    match item {
        Some(item) if item.sig.ident != "main" => quote! { #errors #item },
        _ => quote! {
            #errors
            fn main() {}
        },
    }
}
