//! `#[entity]`: on a state type, it names the entity and declares its proxy type; on the
//! type's `impl` block, every method with a `self` receiver becomes an operation, dispatched
//! by name and called through the proxy.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, Pat, ReturnType, Type};

use crate::ast::Errors;
use crate::attr;

/// Expands `#[entity]` on a struct, an enum or an impl block.
pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let result = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(item)) => declare(args, &item.ident, &item.generics, quote!(#item)),
        Ok(Item::Enum(item)) => declare(args, &item.ident, &item.generics, quote!(#item)),
        Ok(Item::Impl(item)) => operations(args, item),
        Ok(other) => Err(syn::Error::new_spanned(
            other,
            "#[entity] goes on the entity's state type (a struct or an enum deriving Default, \
             Serialize and Deserialize) and on that type's `impl` block of operations",
        )),
        Err(error) => Err(error),
    };
    match result {
        Ok(tokens) => tokens,
        Err(error) => {
            let errors = error.to_compile_error();
            quote! { #errors #item }
        }
    }
}

/// The name given with `#[entity(name = "..")]`.
fn parse_name(args: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut errors = Errors::default();
    let values = attr::ENTITY_TYPE.parse(args, &mut errors);
    errors.finish()?;
    Ok(values.str("name").cloned())
}

fn proxy_ident(ty: &syn::Ident) -> syn::Ident {
    format_ident!("{}Proxy", ty)
}

/// `#[entity]` on the state type: its registered name.
fn declare(
    args: TokenStream,
    ident: &syn::Ident,
    generics: &syn::Generics,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    if !generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            generics,
            "entity types cannot be generic: an entity is found by its name alone",
        ));
    }
    let name = parse_name(args)?.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    Ok(quote! {
        #item

        impl ::duractor::__private::EntityType for #ident {
            const NAME: &'static str = #name;
        }
    })
}

/// One operation: a method with a `self` receiver.
struct Operation<'a> {
    method: &'a ImplItemFn,
    takes_context: bool,
    input: Option<(Pat, Type)>,
    output: Output,
}

enum Output {
    Unit,
    Value(Type),
    Result(Type),
}

/// `#[entity]` on the impl block: the proxy methods, the `Entity` impl and registration.
fn operations(args: TokenStream, item: ItemImpl) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    attr::ENTITY_IMPL.parse(args, &mut errors);
    errors.finish()?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "`#[entity]` goes on the inherent impl block of the entity type, not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "entity types cannot be generic",
        ));
    }
    let ty = &item.self_ty;
    let ident = match &**ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|s| s.ident.clone())
            .ok_or_else(|| syn::Error::new_spanned(ty, "expected the entity type's name"))?,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "expected the entity type's name",
            ));
        }
    };
    let mut errors = Errors::default();
    let mut ops = Vec::new();
    let mut methods = 0;
    for impl_item in &item.items {
        if let ImplItem::Fn(method) = impl_item
            && matches!(method.sig.inputs.first(), Some(FnArg::Receiver(_)))
        {
            methods += 1;
            match operation(method) {
                Ok(op) => ops.push(op),
                Err(error) => errors.push(error),
            }
        }
    }
    if methods == 0 {
        errors.push(syn::Error::new(
            item.impl_token.span(),
            "this impl block has no operations: an operation is a method taking `&self` (to read) \
             or `&mut self` (to change the state)",
        ));
    }
    errors.finish()?;

    let proxy = proxy_ident(&ident);
    let mut proxy_methods = Vec::new();
    let mut arms = Vec::new();
    let mut infos = Vec::new();
    for op in &ops {
        let method = &op.method.sig.ident;
        let name = method.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
        let span = op.method.sig.ident.span();
        let (input_ty, input_arg) = match &op.input {
            Some((_, ty)) => (quote!(#ty), Some(quote!(input))),
            None => (quote!(()), None),
        };
        let out_ty = match &op.output {
            Output::Unit => quote!(()),
            Output::Value(ty) => quote!(#ty),
            Output::Result(ty) => quote!(<#ty as ::duractor::__private::ResultParts>::Ok),
        };
        let doc = format!("Operation `{name}` of entity [`{ident}`].");
        let (proxy_param, send_arg) = match &op.input {
            Some((_, ty)) => (quote!(, input: #ty), quote!(&input)),
            None => (quote!(), quote!(&())),
        };
        proxy_methods.push(quote_spanned! {span=>
            #[doc = #doc]
            #[allow(dead_code)]
            pub fn #method(&self #proxy_param) -> M::Output<#out_ty> {
                self.0.__send::<#input_ty, #out_ty>(#name, #send_arg)
            }
        });
        let ctx_arg = op.takes_context.then(|| quote!(ctx,));
        let call = quote!(self.#method(#ctx_arg #input_arg));
        let decode = op.input.as_ref().map(|(_, ty)| {
            quote! {
                let input: #ty = ::duractor::__private::__decode_input(Self::NAME, #name, input)?;
            }
        });
        let result = match &op.output {
            Output::Unit | Output::Value(_) => quote! {
                let output = #call;
                ::duractor::__private::__encode_output(Self::NAME, #name, &output)
            },
            Output::Result(_) => quote! {
                match ::duractor::__private::ResultParts::into_result(#call) {
                    ::core::result::Result::Ok(output) => {
                        ::duractor::__private::__encode_output(Self::NAME, #name, &output)
                    }
                    ::core::result::Result::Err(error) => {
                        #[allow(unused_imports)]
                        use ::duractor::__private::{ViaDisplay as _, ViaDuractorError as _, ViaStdError as _};
                        ::core::result::Result::Err(
                            (&&&::duractor::__private::ErrorWrap(error)).__into_failure(),
                        )
                    }
                }
            },
        };
        arms.push(quote! {
            #name => {
                #decode
                #result
            }
        });
        infos.push(quote! {
            ::duractor::__private::OperationInfo {
                name: #name,
                input_type: ::core::stringify!(#input_ty),
                output_type: ::core::stringify!(#out_ty),
                check_input: |entity, input| {
                    ::duractor::__private::__check_input::<#input_ty>(entity, #name, input)
                },
            }
        });
    }
    let ops_len = infos.len();
    let doc = format!(
        "Typed proxy of entity [`{ident}`]: one method per operation (generated by `#[entity]`)."
    );

    Ok(quote! {
        #item

        #[doc = #doc]
        #[allow(dead_code)]
        pub struct #proxy<M: ::duractor::__private::ProxyMode>(
            ::duractor::__private::ProxyTarget<M>,
        );

        // The proxy is `pub` whatever the entity's visibility; operation types may be private.
        #[allow(private_interfaces)]
        impl<M: ::duractor::__private::ProxyMode> #proxy<M> {
            /// The entity this proxy addresses.
            #[allow(dead_code)]
            pub fn entity_id(&self) -> &::duractor::EntityId {
                self.0.entity()
            }

            #(#proxy_methods)*
        }

        impl ::duractor::Entity for #ty {
            const NAME: &'static str = <#ty as ::duractor::__private::EntityType>::NAME;
            type Proxy<M: ::duractor::__private::ProxyMode> = #proxy<M>;

            fn __proxy<M: ::duractor::__private::ProxyMode>(
                target: ::duractor::__private::ProxyTarget<M>,
            ) -> #proxy<M> {
                #proxy(target)
            }

            #[allow(unused_variables)]
            fn __dispatch(
                &mut self,
                ctx: &mut ::duractor::EntityContext,
                operation: &str,
                input: &::duractor::Payload,
            ) -> ::core::result::Result<::duractor::Payload, ::duractor::Failure> {
                match operation {
                    #(#arms)*
                    other => ::core::result::Result::Err(::duractor::__private::__unknown_operation(
                        Self::NAME,
                        other,
                        <Self as ::duractor::Entity>::__operations(),
                    )),
                }
            }

            fn __operations() -> &'static [::duractor::__private::OperationInfo] {
                const OPERATIONS: [::duractor::__private::OperationInfo; #ops_len] = [#(#infos),*];
                &OPERATIONS
            }
        }

        ::duractor::__private::inventory::submit! {
            ::duractor::__private::Registration::Entity(
                ::duractor::__private::EntityEntry::of::<#ty>()
            )
        }
    })
}

/// Checks one operation's signature: `fn name(&self|&mut self, [ctx: &mut EntityContext,]
/// [input: I]) [-> O | -> Result<O, E>]`.
fn operation(method: &ImplItemFn) -> syn::Result<Operation<'_>> {
    const SHAPE: &str = "`fn name(&mut self, input: I) -> O`, with an optional `ctx: &mut EntityContext` \
                         before the input, at most one input (use a tuple or struct for several), and \
                         `()`, `O` or `Result<O, E>` as the output";
    let sig = &method.sig;
    let mut errors = Errors::default();
    if let Some(asyncness) = &sig.asyncness {
        errors.spanned(
            asyncness,
            "entity operations cannot be `async`: they run one at a time on the entity's state; \
             for asynchronous work, start an orchestration with `ctx.start_orchestration(..)`",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(&sig.generics, "entity operations cannot be generic");
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first()
        && receiver.reference.is_none()
    {
        errors.spanned(
            receiver,
            format!("entity operations take `&self` (to read) or `&mut self` (to change the state), not `self`: {SHAPE}"),
        );
    }
    let mut params: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .skip(1)
        .filter_map(|arg| match arg {
            FnArg::Typed(pat) => Some(pat),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let takes_context = params.first().is_some_and(|p| is_context(&p.ty));
    if takes_context {
        params.remove(0);
    }
    for param in &params {
        if is_context(&param.ty) {
            errors.spanned(
                param,
                "the `EntityContext` parameter must come right after `self`",
            );
        }
    }
    params.retain(|p| !is_context(&p.ty));
    if params.len() > 1 {
        errors.spanned(
            params[1],
            format!("entity operations take at most one input: {SHAPE}"),
        );
    }
    let input = params.first().map(|p| ((*p.pat).clone(), (*p.ty).clone()));
    if let Some((_, Type::Reference(reference))) = &input {
        errors.spanned(
            reference,
            "an operation's input must be an owned type, since it is deserialized from JSON: use \
             `String` for `&str`, `Vec<T>` for `&[T]`",
        );
    }
    let output = match &sig.output {
        ReturnType::Default => Output::Unit,
        ReturnType::Type(_, ty) if is_result(ty) => Output::Result((**ty).clone()),
        ReturnType::Type(_, ty) => Output::Value((**ty).clone()),
    };
    errors.finish()?;
    Ok(Operation {
        method,
        takes_context,
        input,
        output,
    })
}

fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => last_segment(&reference.elem) == Some("EntityContext".into()),
        _ => false,
    }
}

fn is_result(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s == "Result")
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}
