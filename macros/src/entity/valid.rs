//! The checks of an `#[entity]` item: every problem is reported at its token, all at once.

use syn::Type;
use syn::spanned::Spanned;

use super::model::{Access, Entity, Operation, Operations, StateType};
use crate::ast::Errors;

/// The shape of an operation, for the messages that need it.
const SHAPE: &str = "`fn name(&mut self, input: I) -> O`, with an optional `ctx: &mut EntityContext` \
                     before the input, at most one input (use a tuple or struct for several), and \
                     `()`, `O` or `Result<O, E>` as the output";

/// Checks everything.
pub fn entity(entity: &Entity, errors: &mut Errors) {
    match entity {
        Entity::Type(ty) => state_type(ty, errors),
        Entity::Impl(block) => {
            header(block, errors);
            for op in &block.operations {
                operation(op, errors);
            }
            if block.operations.is_empty() {
                errors.push(syn::Error::new(
                    block.item.impl_token.span(),
                    "this impl block has no operations: an operation is a method taking `&self` (to read) \
                     or `&mut self` (to change the state)",
                ));
            }
        }
        Entity::Other(item) => errors.spanned(
            item,
            "#[entity] goes on the entity's state type (a struct or an enum deriving Default, \
             Serialize and Deserialize) and on that type's `impl` block of operations",
        ),
    }
}

fn state_type(ty: &StateType, errors: &mut Errors) {
    if !ty.generics.params.is_empty() {
        errors.spanned(
            ty.generics,
            "entity types cannot be generic: an entity is found by its name alone",
        );
    }
}

/// Checks the impl block itself: an inherent impl of a non-generic type, named by a path.
/// Without these errors, the block can carry the entity's code, which the fallback relies on.
pub fn header(block: &Operations, errors: &mut Errors) {
    let item = block.item;
    if let Some((_, path, _)) = &item.trait_ {
        errors.spanned(
            path,
            "`#[entity]` goes on the inherent impl block of the entity type, not on a trait impl",
        );
    }
    if !item.generics.params.is_empty() {
        errors.spanned(&item.generics, "entity types cannot be generic");
    }
    if block.ident.is_none() {
        errors.spanned(&item.self_ty, "expected the entity type's name");
    }
}

/// Checks one operation's signature: `fn name(&self|&mut self, [ctx: &mut EntityContext,]
/// [input: I]) [-> O | -> Result<O, E>]`.
pub fn operation(op: &Operation, errors: &mut Errors) {
    let sig = &op.method.sig;
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
    if op.access == Access::Other {
        errors.spanned(
            op.receiver,
            format!("entity operations take `&self` (to read) or `&mut self` (to change the state), not `self`: {SHAPE}"),
        );
    }
    for param in &op.misplaced_contexts {
        errors.spanned(
            param,
            "the `EntityContext` parameter must come right after `self`",
        );
    }
    if let Some(second) = op.inputs.get(1) {
        errors.spanned(
            second,
            format!("entity operations take at most one input: {SHAPE}"),
        );
    }
    if let Some(Type::Reference(reference)) = op.input() {
        errors.spanned(
            reference,
            "an operation's input must be an owned type, since it is deserialized from JSON: use \
             `String` for `&str`, `Vec<T>` for `&[T]`",
        );
    }
}

/// `true` if `op` passes [`operation`].
pub fn operation_is_valid(op: &Operation) -> bool {
    let mut errors = Errors::default();
    operation(op, &mut errors);
    errors.is_empty()
}
