//! The model of an `#[entity]` item, read from syn without judging it: what the attribute is
//! on, its arguments, and for an impl block each operation's receiver, context parameter,
//! inputs and output. [`super::valid`] judges it; [`super::expand`] generates code from it.

use proc_macro2::TokenStream;
use syn::{
    FnArg, Generics, Ident, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, PatType, ReturnType, Type,
};

use crate::ast::Errors;
use crate::attr;

/// What `#[entity]` is on.
pub enum Entity<'a> {
    /// The state type: a struct or an enum.
    Type(StateType<'a>),
    /// The state type's `impl` block of operations.
    Impl(Operations<'a>),
    /// Anything else.
    Other(&'a Item),
}

/// `#[entity(name = "..")] struct Counter { .. }` (or an enum).
pub struct StateType<'a> {
    pub item: &'a Item,
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    /// The name given with `name = ".."`, if it was accepted.
    pub name: Option<LitStr>,
}

/// `#[entity] impl Counter { .. }`.
pub struct Operations<'a> {
    pub item: &'a ItemImpl,
    /// The entity type's name: the last segment of the implemented type, if that is a path.
    pub ident: Option<&'a Ident>,
    /// The methods with a `self` receiver, in order.
    pub operations: Vec<Operation<'a>>,
}

/// One operation: a method with a `self` receiver.
pub struct Operation<'a> {
    pub method: &'a ImplItemFn,
    /// The registered name: the method's, without `r#`.
    pub name: String,
    pub receiver: &'a syn::Receiver,
    pub access: Access,
    /// `ctx: &mut EntityContext`, when it comes right after the receiver.
    pub context: Option<&'a PatType>,
    /// Parameters typed as an `EntityContext` anywhere else.
    pub misplaced_contexts: Vec<&'a PatType>,
    /// The other parameters: the input, if there is exactly one.
    pub inputs: Vec<&'a PatType>,
    pub output: Output<'a>,
}

/// How an operation takes the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `&self`.
    Read,
    /// `&mut self`.
    Write,
    /// Anything else: `self`, `mut self`, or a typed receiver (`self: Box<Self>`, even
    /// `self: &Self`).
    Other,
}

/// What an operation returns.
pub enum Output<'a> {
    /// Nothing (`()`).
    Unit,
    /// A value, `O`.
    Value(&'a Type),
    /// A `Result<O, E>` (or an alias ending in `Result`): `E` fails the operation.
    Result(&'a Type),
}

impl<'a> Entity<'a> {
    /// Reads `item` and the attribute's arguments; argument errors go to `errors`.
    pub fn from_syn(item: &'a Item, args: TokenStream, errors: &mut Errors) -> Entity<'a> {
        match item {
            Item::Struct(s) => {
                Entity::Type(StateType::new(item, &s.ident, &s.generics, args, errors))
            }
            Item::Enum(e) => {
                Entity::Type(StateType::new(item, &e.ident, &e.generics, args, errors))
            }
            Item::Impl(block) => {
                attr::ENTITY_IMPL.parse(args, errors);
                Entity::Impl(Operations::new(block))
            }
            other => Entity::Other(other),
        }
    }
}

impl<'a> StateType<'a> {
    fn new(
        item: &'a Item,
        ident: &'a Ident,
        generics: &'a Generics,
        args: TokenStream,
        errors: &mut Errors,
    ) -> StateType<'a> {
        let name = attr::ENTITY_TYPE.parse(args, errors).str("name").cloned();
        StateType {
            item,
            ident,
            generics,
            name,
        }
    }

    /// The registered name: the one given, or the type's.
    pub fn name(&self) -> LitStr {
        self.name
            .clone()
            .unwrap_or_else(|| LitStr::new(&self.ident.to_string(), self.ident.span()))
    }
}

impl<'a> Operations<'a> {
    fn new(item: &'a ItemImpl) -> Operations<'a> {
        let ident = match &*item.self_ty {
            Type::Path(path) => path.path.segments.last().map(|segment| &segment.ident),
            _ => None,
        };
        let operations = item
            .items
            .iter()
            .filter_map(|impl_item| match impl_item {
                ImplItem::Fn(method) => Operation::new(method),
                _ => None,
            })
            .collect();
        Operations {
            item,
            ident,
            operations,
        }
    }
}

impl<'a> Operation<'a> {
    /// The operation of `method`, if it has a `self` receiver.
    fn new(method: &'a ImplItemFn) -> Option<Operation<'a>> {
        let sig = &method.sig;
        let Some(FnArg::Receiver(receiver)) = sig.inputs.first() else {
            return None;
        };
        let access = match &receiver.reference {
            Some(_) if receiver.mutability.is_some() => Access::Write,
            Some(_) => Access::Read,
            None => Access::Other,
        };
        let mut params: Vec<&PatType> = sig
            .inputs
            .iter()
            .skip(1)
            .filter_map(|arg| match arg {
                FnArg::Typed(pat) => Some(pat),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let context = match params.first() {
            Some(first) if is_context(&first.ty) => Some(params.remove(0)),
            _ => None,
        };
        let (misplaced_contexts, inputs) = params.into_iter().partition(|p| is_context(&p.ty));
        let output = match &sig.output {
            ReturnType::Default => Output::Unit,
            ReturnType::Type(_, ty) if is_result(ty) => Output::Result(ty),
            ReturnType::Type(_, ty) => Output::Value(ty),
        };
        let name = sig.ident.to_string();
        Some(Operation {
            method,
            name: name.strip_prefix("r#").unwrap_or(&name).to_owned(),
            receiver,
            access,
            context,
            misplaced_contexts,
            inputs,
            output,
        })
    }

    /// The input's type, if the operation takes one.
    pub fn input(&self) -> Option<&'a Type> {
        self.inputs.first().map(|param| &*param.ty)
    }
}

/// `true` for `&mut EntityContext` (or `&EntityContext`, any path ending so).
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
