//! Macro arguments read as Rust expressions where they are expressions.
//!
//! A macro call's tokens are not Rust syntax until the macro expands, so neither the lint nor
//! the `.await` rewriting can see into them directly. Most macros an orchestrator calls take
//! comma-separated expressions, though: `format!`, `println!`, `assert!`, `vec!`, `write!`,
//! and the `tracing`/`log` macros, whose fields add small prefixes (`target: ..`, `key = ..`,
//! `?value`, `%value`). [`parse`] splits the tokens at top-level `,` and `;`, strips those
//! prefixes, and parses each piece as an [`Expr`]; pieces that do not parse (a `match`-like
//! DSL, a JSON literal) stay [`ArgBody::Tokens`], which the lint scans token by token for
//! paths. [`to_tokens`] puts the pieces back together, so a rewritten expression can replace
//! the original one without changing anything else the macro sees.

use proc_macro2::{Delimiter, Punct, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use syn::Expr;

/// How many `,`-separated pieces may be joined to form one expression (generic arguments such
/// as `HashMap::<K, V>::new()` and closures such as `|a, b| a + b` contain top-level commas).
const MAX_JOIN: usize = 8;

/// One argument of a macro call.
pub struct Arg {
    /// Tokens before the expression that are not part of it: `target:`, `key =`, `?`, `%`.
    pub prefix: TokenStream,
    pub body: ArgBody,
    /// The `,` or `;` after the argument.
    pub separator: Option<Punct>,
}

pub enum ArgBody {
    Expr(Expr),
    /// Tokens that are not an expression.
    Tokens(TokenStream),
}

/// Splits a macro call's tokens into arguments; see the module docs.
pub fn parse(tokens: TokenStream) -> Vec<Arg> {
    let pieces = split(tokens);
    let mut args = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let (arg, next) = parse_from(&pieces, i);
        args.push(arg);
        i = next;
    }
    args
}

/// The argument starting at piece `i`, and the index of the next piece: the fewest pieces
/// (joined with their `,`) that form an expression, or piece `i` alone as tokens.
fn parse_from(pieces: &[(Vec<TokenTree>, Option<Punct>)], i: usize) -> (Arg, usize) {
    for j in i..pieces.len().min(i + MAX_JOIN) {
        // Only `,` may be part of an expression; `;` always ends one.
        if j > i && pieces[j - 1].1.as_ref().is_some_and(|p| p.as_char() == ';') {
            break;
        }
        let mut joined = TokenStream::new();
        for (k, (tokens, separator)) in pieces[i..=j].iter().enumerate() {
            joined.extend(tokens.iter().cloned());
            if i + k < j
                && let Some(separator) = separator
            {
                joined.extend([TokenTree::Punct(separator.clone())]);
            }
        }
        if let Some((prefix, expr)) = parse_arg(joined) {
            let arg = Arg {
                prefix,
                body: ArgBody::Expr(expr),
                separator: pieces[j].1.clone(),
            };
            return (arg, j + 1);
        }
    }
    let (tokens, separator) = &pieces[i];
    let arg = Arg {
        prefix: TokenStream::new(),
        body: ArgBody::Tokens(tokens.iter().cloned().collect()),
        separator: separator.clone(),
    };
    (arg, i + 1)
}

/// The arguments as tokens again.
pub fn to_tokens(args: &[Arg]) -> TokenStream {
    let mut out = TokenStream::new();
    for arg in args {
        out.extend(arg.prefix.clone());
        match &arg.body {
            ArgBody::Expr(expr) => expr.to_tokens(&mut out),
            ArgBody::Tokens(tokens) => out.extend(tokens.clone()),
        }
        if let Some(separator) = &arg.separator {
            out.extend([TokenTree::Punct(separator.clone())]);
        }
    }
    out
}

/// `true` if `tokens` (at any depth) contain the identifier `word`.
pub fn contains_ident(tokens: &TokenStream, word: &str) -> bool {
    tokens.clone().into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == word,
        TokenTree::Group(group) => contains_ident(&group.stream(), word),
        _ => false,
    })
}

/// Top-level pieces and the `,`/`;` after each; a trailing separator adds no empty piece.
fn split(tokens: TokenStream) -> Vec<(Vec<TokenTree>, Option<Punct>)> {
    let mut pieces = Vec::new();
    let mut current = Vec::new();
    for tree in tokens {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ',' || p.as_char() == ';' => {
                pieces.push((std::mem::take(&mut current), Some(p.clone())));
            }
            _ => current.push(tree),
        }
    }
    if !current.is_empty() {
        pieces.push((current, None));
    }
    pieces
}

/// Parses one argument: an optional field prefix, then an expression.
fn parse_arg(tokens: TokenStream) -> Option<(TokenStream, Expr)> {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let at = prefix_len(&trees);
    let prefix: TokenStream = trees[..at].iter().cloned().collect();
    let rest: TokenStream = trees[at..].iter().cloned().collect();
    if rest.is_empty() {
        return None;
    }
    syn::parse2::<Expr>(rest).ok().map(|expr| (prefix, expr))
}

/// The length of a `tracing`-style field prefix: `name:`, `a.b =`, `?`, `%`, or `a.b = ?`.
fn prefix_len(trees: &[TokenTree]) -> usize {
    let is_punct = |i: usize, c: char, spacing: Option<Spacing>| {
        matches!(trees.get(i), Some(TokenTree::Punct(p))
            if p.as_char() == c && spacing.is_none_or(|s| p.spacing() == s))
    };
    let sigil = |i: usize| usize::from(is_punct(i, '?', None) || is_punct(i, '%', None));
    // `target: "x"`, `parent: span`, `name: "x"`
    if matches!(trees.first(), Some(TokenTree::Ident(_)))
        && is_punct(1, ':', Some(Spacing::Alone))
        && !is_punct(2, ':', None)
    {
        return 2;
    }
    // `a.b.c = value`, `a = ?value` (a named format argument `x = 1` too); not `a == b`
    // or `a => b`, whose `=` is joint.
    if matches!(trees.first(), Some(TokenTree::Ident(_))) {
        let mut i = 1;
        while is_punct(i, '.', Some(Spacing::Alone))
            && matches!(trees.get(i + 1), Some(TokenTree::Ident(_)))
        {
            i += 2;
        }
        if is_punct(i, '=', Some(Spacing::Alone)) {
            return i + 1 + sigil(i + 1);
        }
    }
    // `"field name" = value`
    if matches!(trees.first(), Some(TokenTree::Literal(_)))
        && is_punct(1, '=', Some(Spacing::Alone))
    {
        return 2 + sigil(2);
    }
    sigil(0)
}

/// `true` if `tree` is a `(..)` group.
pub fn is_paren_group(tree: Option<&TokenTree>) -> bool {
    matches!(tree, Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn exprs(tokens: TokenStream) -> Vec<String> {
        parse(tokens)
            .iter()
            .map(|arg| match &arg.body {
                ArgBody::Expr(e) => format!("{}|{}", arg.prefix, e.to_token_stream()),
                ArgBody::Tokens(t) => format!("raw:{t}"),
            })
            .collect()
    }

    #[test]
    fn format_arguments_are_expressions() {
        assert_eq!(
            exprs(quote!("{} {x}", a.b(), x = 1 + 2,)),
            ["|\"{} {x}\"", "|a . b ()", "x =|1 + 2"]
        );
    }

    #[test]
    fn tracing_fields_keep_their_prefixes() {
        assert_eq!(
            exprs(quote!(target: "t", user.id = ?id, %name, count, "msg {}", n)),
            [
                "target :|\"t\"",
                "user . id = ?|id",
                "%|name",
                "|count",
                "|\"msg {}\"",
                "|n"
            ]
        );
    }

    #[test]
    fn commas_inside_generics_and_closures_are_joined() {
        assert_eq!(
            exprs(quote!(HashMap::<K, V>::new(), |a, b| a + b)),
            ["|HashMap :: < K , V > :: new ()", "|| a , b | a + b"]
        );
    }

    #[test]
    fn vec_repeat_and_non_expressions() {
        assert_eq!(exprs(quote!(0u8; n)), ["|0u8", "|n"]);
        assert_eq!(
            exprs(quote!(x, Some(ref y) if y > 0)),
            ["|x", "raw:Some (ref y) if y > 0"]
        );
    }

    #[test]
    fn round_trip_keeps_the_tokens() {
        let tokens = quote!(target: "t", user.id = ?id, "{}", HashMap::<K, V>::new(); n,);
        assert_eq!(
            to_tokens(&parse(tokens.clone())).to_string(),
            tokens.to_string()
        );
    }
}
