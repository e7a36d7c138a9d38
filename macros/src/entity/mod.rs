//! `#[entity]`: on a state type, it names the entity; on the type's `impl` block, every method
//! with a `self` receiver becomes an operation, dispatched by name and called through the
//! generated proxy (`CounterProxy` for `Counter`).
//!
//! Parse → model → validate → expand, like `#[activity]` and `#[orchestrator]`: [`model`] reads
//! the item and its arguments (with [`crate::attr`]) without judging them, [`valid`] reports
//! every problem at its token, all at once, and [`expand`] generates the code. When something
//! was reported, [`expand::fallback`] still declares what other code refers to (the entity's
//! name; its proxy and `Entity` impl with the operations that checked), so that the user sees
//! the real errors and no follow-on ones.

mod expand;
mod model;
mod valid;

use proc_macro2::TokenStream;
use quote::quote;
use syn::Item;

use self::model::Entity;
use crate::ast::Errors;

/// Expands `#[entity]` on a struct, an enum or an impl block.
pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        Err(error) => {
            let error = error.to_compile_error();
            return quote! { #error #item };
        }
    };
    let mut errors = Errors::default();
    let entity = Entity::from_syn(&parsed, args, &mut errors);
    valid::entity(&entity, &mut errors);
    if errors.is_empty() {
        expand::entity(&entity)
    } else {
        expand::fallback(&entity, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::expand;
    use quote::quote;

    #[test]
    fn every_problem_at_once_and_a_fallback_with_the_operations_that_checked() {
        let out = expand(
            quote!(name = "x"),
            quote! {
                impl Counter {
                    fn get(&self) -> i64 { self.value }
                    fn consume(self) -> i64 { self.value }
                    async fn add(&mut self, n: i64) { self.value += n; }
                }
            },
        )
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
        assert!(out.contains("pub struct CounterProxy"), "{out}");
        assert!(out.contains("\"get\" =>"), "{out}");
        assert!(!out.contains("\"consume\" =>") && !out.contains("\"add\" =>"));
    }

    #[test]
    fn a_type_with_a_refused_name_is_declared_under_its_own() {
        let out = expand(
            quote!(name = "a@b"),
            quote!(
                struct Counter;
            ),
        )
        .to_string();
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(
            out.contains("const NAME : & 'static str = \"Counter\""),
            "{out}"
        );
        let out = expand(
            quote!(),
            quote!(
                struct Boxed<T>(T);
            ),
        )
        .to_string();
        assert!(!out.contains("EntityType"), "{out}");
    }
}
