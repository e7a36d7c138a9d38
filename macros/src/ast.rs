//! The model of an annotated function, and the signature checks.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::{self, Args};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Activity,
    Orchestrator,
}

impl Kind {
    pub fn attribute(self) -> &'static str {
        match self {
            Kind::Activity => "#[activity]",
            Kind::Orchestrator => "#[orchestrator]",
        }
    }

    pub fn context(self) -> &'static str {
        match self {
            Kind::Activity => "ActivityContext",
            Kind::Orchestrator => "OrchestrationContext",
        }
    }

    fn signature(self) -> String {
        format!(
            "`async fn name(ctx: {}, input: I) -> Result<O, E>`",
            self.context()
        )
    }
}

/// A validated `#[activity]` or `#[orchestrator]` function.
pub struct Function {
    pub kind: Kind,
    pub item: ItemFn,
    /// The registered name.
    pub name: String,
    pub name_span: Span,
    pub version: String,
    /// Default timeouts in ms (activities): start-to-close, schedule-to-close, heartbeat.
    pub timeouts: [u64; 3],
    /// Flow-control limits (activities): concurrency, rate (count, period ms), key pointer.
    pub flow: Option<(u32, (u32, u64), String)>,
    /// The typed handle's name (`SayHello` for `say_hello`).
    pub handle: Ident,
    pub input: Type,
    pub output: Type,
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// How many errors were collected.
    pub fn len(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |all| all.clone().into_iter().count())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// All errors as one; call only after pushing at least one.
    pub fn into_error(self) -> syn::Error {
        self.0
            .unwrap_or_else(|| syn::Error::new(Span::call_site(), "invalid input"))
    }

    pub fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Function {
    pub fn parse(kind: Kind, args: Args, item: TokenStream) -> syn::Result<Function> {
        let item: ItemFn = syn::parse2(item).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!(
                    "{} goes on a free `async fn` with the signature {}",
                    kind.attribute(),
                    kind.signature()
                ),
            )
        })?;
        let mut errors = Errors::default();
        let sig = &item.sig;
        let attr = kind.attribute();

        if sig.asyncness.is_none() {
            errors.spanned(
                sig.fn_token,
                format!(
                    "{attr} functions must be `async`: write {}",
                    kind.signature()
                ),
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.spanned(
                &sig.generics,
                format!("{attr} functions cannot be generic: their input and output types are fixed when they are registered"),
            );
        }
        if let Some(constness) = &sig.constness {
            errors.spanned(constness, format!("{attr} functions cannot be `const`"));
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.spanned(unsafety, format!("{attr} functions cannot be `unsafe`"));
        }
        if let Some(variadic) = &sig.variadic {
            errors.spanned(variadic, format!("{attr} functions cannot be variadic"));
        }

        let params: Vec<&FnArg> = sig.inputs.iter().collect();
        let mut input: Option<Type> = None;
        if let Some(FnArg::Receiver(receiver)) = params.first() {
            errors.spanned(
                receiver,
                format!("{attr} functions cannot take `self`: write a free function with the signature {}", kind.signature()),
            );
        } else if params.len() != 2 {
            let span = if params.is_empty() {
                sig.paren_token.span.join()
            } else {
                sig.inputs.span()
            };
            errors.push(syn::Error::new(
                span,
                format!(
                    "{attr} functions take exactly two parameters, the context and the input: {}; use `()` for no input and a tuple or struct for several values",
                    kind.signature()
                ),
            ));
        } else {
            if let FnArg::Typed(ctx) = params[0]
                && !last_segment_is(&ctx.ty, kind.context())
            {
                errors.spanned(
                    &ctx.ty,
                    format!(
                        "the first parameter of {attr} functions must be the context: `ctx: {}`",
                        kind.context()
                    ),
                );
            }
            if let FnArg::Typed(arg) = params[1] {
                if let Type::Reference(reference) = &*arg.ty {
                    errors.spanned(
                        reference,
                        "the input must be an owned type, since it is deserialized from JSON: use `String` for `&str`, `Vec<T>` for `&[T]`",
                    );
                } else if matches!(&*arg.pat, Pat::Ident(p) if p.by_ref.is_some()) {
                    errors.spanned(&arg.pat, "the input parameter cannot be bound by reference");
                }
                input = Some((*arg.ty).clone());
            }
        }

        let output = match &sig.output {
            ReturnType::Default => {
                errors.spanned(
                    &sig.ident,
                    format!(
                        "{attr} functions must return `Result<O, E>`: write {}",
                        kind.signature()
                    ),
                );
                None
            }
            ReturnType::Type(_, ty) => {
                // Aliases (`AppResult<T>`, `anyhow::Result<T>`) are fine: the generated code
                // checks the type itself (`ResultParts`), so only non-path types stop here.
                if !matches!(&**ty, Type::Path(_) | Type::Group(_) | Type::Paren(_)) {
                    errors.spanned(
                        ty,
                        format!(
                            "{attr} functions must return `Result<O, E>` (`duractor::Error` works as `E`): write {}",
                            kind.signature()
                        ),
                    );
                }
                Some((**ty).clone())
            }
        };

        errors.finish()?;
        let (Some(input), Some(output)) = (input, output) else {
            return Err(syn::Error::new(sig.ident.span(), "invalid signature"));
        };
        let fn_name = sig.ident.to_string();
        let fn_name = fn_name.strip_prefix("r#").unwrap_or(&fn_name).to_owned();
        let (name, name_span) = match &args.name {
            Some(lit) => (lit.value(), lit.span()),
            None => (fn_name.clone(), sig.ident.span()),
        };
        Ok(Function {
            kind,
            handle: Ident::new(&camel_case(&fn_name), sig.ident.span()),
            name,
            name_span,
            version: args.version.map(|v| v.value()).unwrap_or_default(),
            timeouts: args.timeouts,
            flow: args.flow,
            input,
            output,
            item,
        })
    }
}

/// A validated `#[orchestration_helper]` function: any `async fn` (free or a method, with
/// any parameters and return type, possibly generic) whose body is part of an orchestration.
pub struct Helper {
    pub item: ItemFn,
}

impl Helper {
    pub const ATTRIBUTE: &'static str = "#[orchestration_helper]";
    const SIGNATURE: &'static str = "`async fn name(ctx: &OrchestrationContext, ..) -> T`";

    pub fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Helper> {
        let mut errors = Errors::default();
        attr::HELPER.parse(args, &mut errors);
        let item: ItemFn = match syn::parse2(item) {
            Ok(item) => item,
            Err(e) => {
                errors.push(syn::Error::new(
                    e.span(),
                    format!(
                        "{} goes on an `async fn`: {}",
                        Self::ATTRIBUTE,
                        Self::SIGNATURE
                    ),
                ));
                return Err(errors.into_error());
            }
        };
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            errors.spanned(
                sig.fn_token,
                format!(
                    "{} functions must be `async`: write {}; the macro turns the function into one that returns a durable future",
                    Self::ATTRIBUTE,
                    Self::SIGNATURE
                ),
            );
        }
        if let Some(constness) = &sig.constness {
            errors.spanned(
                constness,
                format!("{} functions cannot be `const`", Self::ATTRIBUTE),
            );
        }
        if let Some(variadic) = &sig.variadic {
            errors.spanned(
                variadic,
                format!("{} functions cannot be variadic", Self::ATTRIBUTE),
            );
        }
        errors.finish()?;
        Ok(Helper { item })
    }
}

/// `true` if `ty` is a path whose last segment is `name` (`duractor::ActivityContext`, …).
fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name),
        Type::Group(group) => last_segment_is(&group.elem, name),
        Type::Paren(paren) => last_segment_is(&paren.elem, name),
        _ => false,
    }
}

/// `say_hello` → `SayHello`.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = true;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'F');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::camel_case;

    #[test]
    fn handle_names_are_upper_camel_case() {
        assert_eq!(camel_case("say_hello"), "SayHello");
        assert_eq!(camel_case("w1_chain"), "W1Chain");
        assert_eq!(camel_case("_x"), "X");
        assert_eq!(camel_case("already"), "Already");
    }
}
