//! Generates the typed handle, its trait impl and its registration (`#[activity]`,
//! `#[orchestrator]`), and the durable future of an `#[orchestration_helper]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::visit_mut::{self, VisitMut};
use syn::{FnArg, GenericParam, ItemFn, Lifetime, LifetimeParam, ReturnType, Signature, Type};

use crate::ast::{Errors, Function, Helper, Kind, camel_case};
use crate::lint::{self, Aliases};
use crate::{attr, durable, globals};

/// Expands `#[activity]` / `#[orchestrator]`. Argument and signature errors are reported
/// with a fallback that keeps the function and its handle name, so the user sees the real
/// errors and not follow-on ones. An orchestrator's body is linted whatever its signature, so
/// every error comes at once; lint errors alone do not stop the expansion, so type errors
/// (such as awaiting a future that is not durable) are reported in the same build.
pub fn function(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = match attr::parse(kind, args) {
        Ok(args) => args,
        Err(error) => {
            errors.push(error);
            attr::Args::default()
        }
    };
    let function = Function::parse(kind, args, item.clone());
    let lint = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(item) if kind == Kind::Orchestrator => lint::check(&item.sig, &item.block),
        _ => Ok(()),
    };
    match function {
        Ok(function) if errors.is_empty() => {
            let expanded = expand(function, lint.is_err());
            let lint_errors = lint.err().map(|error| error.to_compile_error());
            quote!(#lint_errors #expanded)
        }
        function => {
            if let Err(error) = function {
                errors.push(error);
            }
            if let Err(error) = lint {
                errors.push(error);
            }
            fallback(errors, item)
        }
    }
}

fn expand(mut function: Function, lint_failed: bool) -> TokenStream {
    if function.kind == Kind::Orchestrator {
        globals::add_checks(&function.item.sig, &mut function.item.block);
        let aliases = Aliases::collect(&function.item.block);
        durable::rewrite_block(&mut function.item.block, &aliases, lint_failed);
    }
    let Function {
        kind,
        item,
        name,
        name_span,
        version,
        timeouts,
        flow,
        handle,
        input,
        output,
    } = &function;
    let vis = &item.vis;
    let fn_name = &item.sig.ident;
    let ok_type = quote_spanned! {output_span(output)=>
        <#output as ::duractor::__private::ResultParts>::Ok
    };
    let name_lit = syn::LitStr::new(name, *name_span);
    let into_result = quote_spanned! {output_span(output)=>
        ::duractor::__private::ResultParts::into_result
    };
    let call_result = quote! {
        match #into_result(#fn_name(ctx, input).await) {
            ::core::result::Result::Ok(value) => ::core::result::Result::Ok(value),
            ::core::result::Result::Err(error) => {
                #[allow(unused_imports)]
                use ::duractor::__private::{ViaDisplay as _, ViaDuractorError as _, ViaStdError as _};
                ::core::result::Result::Err(
                    (&&&::duractor::__private::ErrorWrap(error)).__into_failure(),
                )
            }
        }
    };
    let flow = match flow {
        None => quote!(),
        Some((concurrency, (count, period_ms), key)) => quote! {
            fn flow_control() -> ::core::option::Option<::duractor::flow::FlowControl> {
                ::core::option::Option::Some(::duractor::flow::FlowControl::__declared(
                    #concurrency, #count, #period_ms, #key,
                ))
            }
        },
    };
    let (trait_path, body_path, ctx_type, entry, variant, extra) = match kind {
        Kind::Activity => (
            quote!(::duractor::Activity),
            quote!(::duractor::__private::ActivityBody),
            quote!(::duractor::ActivityContext),
            quote!(::duractor::__private::ActivityEntry),
            quote!(Activity),
            {
                let timeouts = if *timeouts == [0; 3] {
                    quote!()
                } else {
                    let [start_to_close, schedule_to_close, heartbeat] = timeouts;
                    quote! {
                        const TIMEOUTS: ::duractor::ActivityTimeouts =
                            ::duractor::ActivityTimeouts::__from_millis(#start_to_close, #schedule_to_close, #heartbeat);
                    }
                };
                quote!(#timeouts #flow)
            },
        ),
        Kind::Orchestrator => (
            quote!(::duractor::Orchestrator),
            quote!(::duractor::__private::OrchestratorBody),
            quote!(::duractor::OrchestrationContext),
            quote!(::duractor::__private::OrchestratorEntry),
            quote!(Orchestrator),
            quote!(const VERSION: &'static str = #version; #flow),
        ),
    };
    let doc = format!(
        "Typed handle of the {} `{name}` (generated by `{}` on [`{fn_name}`]).",
        match kind {
            Kind::Activity => "activity",
            Kind::Orchestrator => "orchestrator",
        },
        kind.attribute(),
    );
    quote! {
        #item

        #[doc = #doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #vis struct #handle;

        impl #trait_path for #handle {
            const NAME: &'static str = #name_lit;
            #extra
            type Input = #input;
            type Output = #ok_type;
        }

        impl #body_path for #handle {
            fn __invoke(
                ctx: #ctx_type,
                input: Self::Input,
            ) -> ::duractor::__private::LocalBoxFuture<
                'static,
                ::core::result::Result<Self::Output, ::duractor::Failure>,
            > {
                ::std::boxed::Box::pin(async move { #call_result })
            }
        }

        ::duractor::__private::inventory::submit! {
            ::duractor::__private::Registration::#variant(#entry::of::<#handle>())
        }
    }
}

fn output_span(output: &syn::Type) -> proc_macro2::Span {
    syn::spanned::Spanned::span(output)
}

/// The errors, the function as written (minus escape hatches, which rustc would reject on
/// statements), and a bare handle type.
fn fallback(errors: Errors, item: TokenStream) -> TokenStream {
    let errors = errors.finish().err().map(|error| error.to_compile_error());
    let Ok(mut function) = syn::parse2::<ItemFn>(item.clone()) else {
        return quote!(#errors #item);
    };
    durable::strip_allows(&mut function.block);
    let vis = &function.vis;
    let ident = syn::Ident::new(
        &camel_case(&function.sig.ident.to_string()),
        function.sig.ident.span(),
    );
    quote! {
        #errors
        #function
        #[allow(dead_code)]
        #vis struct #ident;
    }
}

/// Expands `#[orchestration_helper]`: lints the body like an orchestrator's, rewrites its
/// `.await`s, and turns `async fn f(..) -> T` into
/// `fn f(..) -> Durable<impl Future<Output = T> + Captures<'l>..>`, a durable future that
/// orchestrators can await, join and select. Every lifetime of the parameters is named and
/// captured, so this works alike in edition 2021 (where return-position `impl Trait` captures
/// only the lifetimes it names) and 2024.
pub fn helper(args: TokenStream, item: TokenStream) -> TokenStream {
    let lint = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => lint::check(&function.sig, &function.block),
        Err(_) => Ok(()),
    };
    let helper = match Helper::parse(args, item.clone()) {
        Ok(helper) => helper,
        Err(error) => {
            let mut errors = Errors::default();
            errors.push(error);
            if let Err(error) = lint {
                errors.push(error);
            }
            let errors = errors.into_error().to_compile_error();
            let Ok(mut function) = syn::parse2::<ItemFn>(item.clone()) else {
                return quote!(#errors #item);
            };
            durable::strip_allows(&mut function.block);
            return quote!(#errors #function);
        }
    };
    let expanded = durable_helper(helper.item, lint.is_err());
    let lint_errors = lint.err().map(|error| error.to_compile_error());
    quote!(#lint_errors #expanded)
}

fn durable_helper(mut function: ItemFn, lint_failed: bool) -> TokenStream {
    globals::add_checks(&function.sig, &mut function.block);
    let aliases = Aliases::collect(&function.block);
    durable::rewrite_block(&mut function.block, &aliases, lint_failed);

    let output: Type = match &function.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let mut sig = function.sig.clone();
    sig.asyncness = None;
    let (lifetimes, output_lifetime) = name_lifetimes(&mut sig);
    let mut output = output;
    if let Some(lifetime) = output_lifetime {
        ElidedLifetimes::Fill(lifetime).visit_type_mut(&mut output);
    }
    let output_span = syn::spanned::Spanned::span(&output);
    sig.output = syn::parse_quote_spanned! {output_span=>
        -> ::duractor::__private::Durable<
            impl ::core::future::Future<Output = #output>
                #(+ ::duractor::__private::Captures<#lifetimes>)*
        >
    };

    // Fixes the async block's output type before the body is checked, so `?` and `return`
    // infer as they do in an `async fn` (the same trick as async-trait).
    let ret = syn::Ident::new("__duractor_ret", Span::mixed_site());
    // (`impl Trait` cannot be named in a `let` or a turbofish: such outputs are inferred.)
    let nameable = !contains_impl_trait(&output);
    let type_hint = nameable.then(|| {
        quote! {
            if let ::core::option::Option::Some(#ret) = ::core::option::Option::None::<#output> {
                #[allow(unreachable_code)]
                return #ret;
            }
        }
    });
    let ret_type = nameable.then(|| quote!(: #output));
    let block = &function.block;
    let body = quote_spanned! {block_span(block)=>
        {
            ::duractor::__private::Durable::__new(async move {
                #type_hint
                let #ret #ret_type = #block;
                #[allow(unreachable_code)]
                #ret
            })
        }
    };
    let attrs = &function.attrs;
    let vis = &function.vis;
    quote! {
        #(#attrs)*
        #vis #sig #body
    }
}

fn block_span(block: &syn::Block) -> Span {
    block.brace_token.span.join()
}

/// Names every elided lifetime of the parameters (`&T` → `&'__duractor0 T`, `'_` → a named
/// one), adds them to the generics, and returns all lifetimes of the signature (to capture
/// them) and the one an elided lifetime in the output stands for, by the elision rules.
fn name_lifetimes(sig: &mut Signature) -> (Vec<Lifetime>, Option<Lifetime>) {
    let mut namer = ElidedLifetimes::Name(Vec::new());
    let mut self_lifetime = None;
    for input in &mut sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                if receiver.colon_token.is_some() {
                    namer.visit_type_mut(&mut receiver.ty);
                    if let Type::Reference(r) = &*receiver.ty {
                        self_lifetime = r.lifetime.clone();
                    }
                } else if let Some((_, lifetime)) = &mut receiver.reference {
                    if lifetime.is_none() {
                        *lifetime = Some(namer.fresh());
                    }
                    self_lifetime = lifetime.clone();
                }
            }
            FnArg::Typed(typed) => namer.visit_type_mut(&mut typed.ty),
        }
    }
    let ElidedLifetimes::Name(named) = namer else {
        return (Vec::new(), None);
    };
    for (i, lifetime) in named.iter().enumerate() {
        sig.generics.params.insert(
            i,
            GenericParam::Lifetime(LifetimeParam::new(lifetime.clone())),
        );
    }
    let all: Vec<Lifetime> = sig
        .generics
        .lifetimes()
        .map(|param| param.lifetime.clone())
        .collect();
    let output = self_lifetime.or_else(|| (all.len() == 1).then(|| all[0].clone()));
    (all, output)
}

/// Names elided lifetimes (`Name`), or fills them with one lifetime (`Fill`). Lifetimes
/// elided inside `fn(&T)` and `Fn(&T)` are higher-ranked and stay as they are.
enum ElidedLifetimes {
    Name(Vec<Lifetime>),
    Fill(Lifetime),
}

impl ElidedLifetimes {
    fn fresh(&mut self) -> Lifetime {
        match self {
            ElidedLifetimes::Name(named) => {
                let lifetime =
                    Lifetime::new(&format!("'__duractor{}", named.len()), Span::call_site());
                named.push(lifetime.clone());
                lifetime
            }
            ElidedLifetimes::Fill(lifetime) => lifetime.clone(),
        }
    }
}

impl VisitMut for ElidedLifetimes {
    fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
        if reference.lifetime.is_none() {
            reference.lifetime = Some(self.fresh());
        }
        visit_mut::visit_type_reference_mut(self, reference);
    }

    fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
        if lifetime.ident == "_" {
            *lifetime = self.fresh();
        }
    }

    fn visit_type_bare_fn_mut(&mut self, _: &mut syn::TypeBareFn) {}

    fn visit_parenthesized_generic_arguments_mut(
        &mut self,
        _: &mut syn::ParenthesizedGenericArguments,
    ) {
    }
}

/// `true` if `ty` contains `impl Trait` (which cannot be named in the body's type hint).
fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    syn::visit::Visit::visit_type(&mut finder, ty);
    finder.0
}

/// `#[duractor::allow_nondeterminism]` reached the compiler: it was not on a statement of an
/// `#[orchestrator]` or `#[orchestration_helper]` body, which would have removed it.
pub fn stray_allow(item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        "`#[duractor::allow_nondeterminism(reason = \"..\")]` only goes on a statement (or `let`, or match arm) inside an `#[orchestrator]` or `#[orchestration_helper]` function, whose lint it turns off for that statement",
    )
    .to_compile_error();
    quote!(#error #item)
}
