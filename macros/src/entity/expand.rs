//! Generates the code of `#[entity]`: on the state type, its registered name
//! (`EntityType`); on the impl block, the typed proxy (`CounterProxy`: one method per
//! operation), the `Entity` impl that dispatches operations by name, and the registration.
//! And the fallback, when [`super::valid`] reported something.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};

use super::model::{Entity, Operation, Operations, Output, StateType};
use super::valid;
use crate::ast::Errors;

/// The code of a checked entity.
pub fn entity(entity: &Entity) -> TokenStream {
    match entity {
        Entity::Type(ty) => state_type(ty),
        Entity::Impl(block) => {
            let operations: Vec<&Operation> = block.operations.iter().collect();
            operations_block(block, &operations)
        }
        Entity::Other(item) => quote!(#item),
    }
}

/// The errors, the item as written, and what other code refers to, so the user sees the real
/// errors and no follow-on ones: the state type's `EntityType` impl (under the type's own name
/// if the given one was refused), or the impl block's proxy, `Entity` impl and registration
/// with the operations that checked. A generic type, a trait impl or a generic impl block gets
/// nothing more than its item.
pub fn fallback(entity: &Entity, errors: Errors) -> TokenStream {
    let errors = errors.into_error().to_compile_error();
    let code = match entity {
        Entity::Type(ty) if ty.generics.params.is_empty() => state_type(ty),
        Entity::Impl(block) if header_is_valid(block) => {
            let operations: Vec<&Operation> = block
                .operations
                .iter()
                .filter(|op| valid::operation_is_valid(op))
                .collect();
            operations_block(block, &operations)
        }
        Entity::Type(StateType { item, .. }) | Entity::Other(item) => quote!(#item),
        Entity::Impl(block) => {
            let item = block.item;
            quote!(#item)
        }
    };
    quote! {
        #errors
        #code
    }
}

fn header_is_valid(block: &Operations) -> bool {
    let mut errors = Errors::default();
    valid::header(block, &mut errors);
    errors.is_empty()
}

/// `#[entity]` on the state type: its registered name.
fn state_type(ty: &StateType) -> TokenStream {
    let StateType { item, ident, .. } = ty;
    let name = ty.name();
    quote! {
        #item

        impl ::duractor::__private::EntityType for #ident {
            const NAME: &'static str = #name;
        }
    }
}

/// `#[entity]` on the impl block: the proxy methods, the `Entity` impl and the registration,
/// for `operations`.
fn operations_block(block: &Operations, operations: &[&Operation]) -> TokenStream {
    let item = block.item;
    let ty = &item.self_ty;
    let Some(ident) = block.ident else {
        // Not reached: `valid::header` requires the type's name.
        return quote!(#item);
    };
    let proxy = format_ident!("{}Proxy", ident);
    let mut proxy_methods = Vec::new();
    let mut arms = Vec::new();
    let mut infos = Vec::new();
    for op in operations {
        let method = &op.method.sig.ident;
        let name = &op.name;
        let span = op.method.sig.ident.span();
        let (input_ty, input_arg) = match op.input() {
            Some(ty) => (quote!(#ty), Some(quote!(input))),
            None => (quote!(()), None),
        };
        let out_ty = match &op.output {
            Output::Unit => quote!(()),
            Output::Value(ty) => quote!(#ty),
            Output::Result(ty) => quote!(<#ty as ::duractor::__private::ResultParts>::Ok),
        };
        let doc = format!("Operation `{name}` of entity [`{ident}`].");
        let (proxy_param, send_arg) = match op.input() {
            Some(ty) => (quote!(, input: #ty), quote!(&input)),
            None => (quote!(), quote!(&())),
        };
        proxy_methods.push(quote_spanned! {span=>
            #[doc = #doc]
            #[allow(dead_code)]
            pub fn #method(&self #proxy_param) -> M::Output<#out_ty> {
                self.0.__send::<#input_ty, #out_ty>(#name, #send_arg)
            }
        });
        let ctx_arg = op.context.is_some().then(|| quote!(ctx,));
        let call = quote!(self.#method(#ctx_arg #input_arg));
        let decode = op.input().map(|ty| {
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

    quote! {
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
    }
}
