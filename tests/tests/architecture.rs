//! The SDK's layers stay one-way: every module of `sdk/src` imports only from the layers below
//! it (or its own), and no files import each other round a circle.
//!
//! The layers are read from the ```` ```layers ```` block of `docs/architecture.md`, the one
//! place they are declared. Every file is read as tokens (comments and doc text drop out,
//! macro bodies stay in): its `use` items, and every path that starts with `crate::`,
//! `super::` or `self::`. A path is followed through the `use` items of the modules it passes
//! (so `crate::Error` is charged to `error.rs`, where it is defined, not to `lib.rs`, which
//! re-exports it) down to the file that defines the name.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One layer: its name and its top-level modules (`lib` is the crate root).
struct Layer {
    name: String,
    modules: Vec<String>,
}

/// Reads the layers from the ```` ```layers ```` block of a markdown file.
fn read_layers(markdown: &str) -> Vec<Layer> {
    let block = markdown
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has a ```layers block");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, modules) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("a layer line is `name: modules..`, got `{line}`"));
            Layer {
                name: name.trim().to_string(),
                modules: modules.split_whitespace().map(str::to_string).collect(),
            }
        })
        .collect()
}

/// A module path from the crate root, e.g. `["orchestration", "state"]`.
type ModulePath = Vec<String>;

/// One `use` item or path found in a file.
struct Import {
    /// Where it points, from the crate root; `None` for other crates.
    target: Option<ModulePath>,
    /// The name it brings into the module (`use a::B as C` brings `C`); `None` for paths in
    /// code and for globs.
    binds: Option<String>,
    /// Whether it is a `pub use` (a re-export): followed when resolving, but a module that
    /// only re-exports a file does not depend on it.
    reexport: bool,
    /// The module it is written in (an inline `mod tests { .. }` adds a segment).
    module: ModulePath,
    line: usize,
    text: String,
}

/// A file of the crate, read.
struct SourceFile {
    /// Relative to `src/`, e.g. `orchestration/state.rs`.
    path: String,
    module: ModulePath,
    imports: Vec<Import>,
}

/// The crate, read: its files and which file is each module.
struct Crate {
    files: Vec<SourceFile>,
    modules: BTreeMap<ModulePath, usize>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read sdk/src") {
        let path = entry.expect("read sdk/src").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn module_of(relative: &str) -> ModulePath {
    let mut parts: Vec<String> = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        rust_files(src, &mut paths);
        paths.sort();
        let mut files: Vec<SourceFile> = paths
            .iter()
            .map(|path| {
                let relative = path
                    .strip_prefix(src)
                    .expect("under src")
                    .to_string_lossy()
                    .replace('\\', "/");
                SourceFile {
                    module: module_of(&relative),
                    path: relative,
                    imports: Vec::new(),
                }
            })
            .collect();
        let modules: BTreeMap<ModulePath, usize> = files
            .iter()
            .enumerate()
            .map(|(index, file)| (file.module.clone(), index))
            .collect();
        let known: BTreeSet<ModulePath> = modules.keys().cloned().collect();
        for (file, path) in files.iter_mut().zip(&paths) {
            let text = std::fs::read_to_string(path).expect("read a source file");
            let tokens: TokenStream = text
                .parse()
                .unwrap_or_else(|e| panic!("{} does not tokenize: {e}", file.path));
            let tokens: Vec<TokenTree> = tokens.into_iter().collect();
            scan(&tokens, &file.module.clone(), &known, &mut file.imports);
        }
        Crate { files, modules }
    }

    /// The file that defines what `path` names, following `use` items on the way.
    fn resolve(&self, path: &[String], depth: usize) -> Option<usize> {
        if depth > 16 {
            return None;
        }
        let mut module: ModulePath = Vec::new();
        for (index, segment) in path.iter().enumerate() {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.modules.contains_key(&child) {
                module = child;
                continue;
            }
            let file = self.modules[&module];
            let alias = self.files[file].imports.iter().find(|import| {
                import.binds.as_deref() == Some(segment.as_str()) && import.module == module
            });
            return match alias {
                Some(import) => {
                    let mut target = import.target.clone()?;
                    target.extend_from_slice(&path[index + 1..]);
                    self.resolve(&target, depth + 1)
                }
                None => Some(file),
            };
        }
        Some(self.modules[&module])
    }
}

fn is_path_sep(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), at.checked_add(1).and_then(|next| tokens.get(next))),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

fn ident(tokens: &[TokenTree], at: usize) -> Option<String> {
    match tokens.get(at) {
        Some(TokenTree::Ident(ident)) => Some(ident.to_string()),
        _ => None,
    }
}

/// Turns the first segments of a path written in `module` into a path from the crate root;
/// `None` when the path leaves the crate (`std::..`, `serde::..`).
fn anchor(
    segments: &[String],
    module: &ModulePath,
    known: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let mut base = module.clone();
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = module.clone();
            child.push(first.to_string());
            if !known.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    base.extend_from_slice(rest);
    Some(base)
}

/// Reads the use tree that starts at `tokens[at]`, ending at `;`, adding one import per leaf.
#[allow(clippy::too_many_arguments)]
fn use_tree(
    tokens: &[TokenTree],
    mut at: usize,
    prefix: &mut Vec<String>,
    reexport: bool,
    module: &ModulePath,
    known: &BTreeSet<ModulePath>,
    line: usize,
    out: &mut Vec<Import>,
) -> usize {
    let depth = prefix.len();
    loop {
        match tokens.get(at) {
            Some(TokenTree::Ident(name)) if name == "as" => {
                let alias = ident(tokens, at + 1).unwrap_or_default();
                if let Some(import) = out.last_mut() {
                    import.binds = (alias != "_").then_some(alias);
                }
                at += 2;
            }
            Some(TokenTree::Ident(name)) => {
                prefix.push(name.to_string());
                at += 1;
                if is_path_sep(tokens, at) {
                    at += 2;
                    continue;
                }
                let binds = match name.to_string().as_str() {
                    "self" => prefix.get(prefix.len().wrapping_sub(2)).cloned(),
                    other => Some(other.to_string()),
                };
                let segments: Vec<String> = prefix
                    .iter()
                    .filter(|s| *s != "self" || prefix.len() == 1)
                    .cloned()
                    .collect();
                out.push(Import {
                    target: anchor(&segments, module, known),
                    binds,
                    reexport,
                    module: module.clone(),
                    line,
                    text: prefix.join("::"),
                });
                prefix.truncate(depth);
            }
            Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
                out.push(Import {
                    target: anchor(prefix, module, known),
                    binds: None,
                    reexport,
                    module: module.clone(),
                    line,
                    text: format!("{}::*", prefix.join("::")),
                });
                prefix.truncate(depth);
                at += 1;
            }
            Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                let mut i = 0;
                while i < inner.len() {
                    let mut nested = prefix.clone();
                    i = use_tree(&inner, i, &mut nested, reexport, module, known, line, out);
                    i += 1; // the `,`
                }
                prefix.truncate(depth);
                at += 1;
            }
            Some(TokenTree::Punct(p)) if p.as_char() == ':' && is_path_sep(tokens, at) => at += 2,
            _ => return at,
        }
    }
}

/// Collects the imports of a token list written in `module`.
fn scan(
    tokens: &[TokenTree],
    module: &ModulePath,
    known: &BTreeSet<ModulePath>,
    out: &mut Vec<Import>,
) {
    let mut at = 0;
    while at < tokens.len() {
        match &tokens[at] {
            TokenTree::Ident(word) if word == "mod" => {
                if let (Some(name), Some(TokenTree::Group(body))) =
                    (ident(tokens, at + 1), tokens.get(at + 2))
                {
                    let mut inner = module.clone();
                    inner.push(name);
                    let body: Vec<TokenTree> = body.stream().into_iter().collect();
                    scan(&body, &inner, known, out);
                    at += 3;
                    continue;
                }
                at += 1;
            }
            TokenTree::Ident(word) if word == "use" => {
                let reexport = match at.checked_sub(1).map(|i| &tokens[i]) {
                    Some(TokenTree::Ident(vis)) => vis == "pub",
                    Some(TokenTree::Group(g)) => g.delimiter() == Delimiter::Parenthesis,
                    _ => false,
                };
                let line = word.span().start().line;
                at = use_tree(
                    tokens,
                    at + 1,
                    &mut Vec::new(),
                    reexport,
                    module,
                    known,
                    line,
                    out,
                );
            }
            TokenTree::Ident(word)
                if is_path_sep(tokens, at + 1)
                    && (matches!(word.to_string().as_str(), "crate" | "super" | "self")
                        || known.contains(&[module.as_slice(), &[word.to_string()]].concat()))
                    && !is_path_sep(tokens, at.wrapping_sub(2)) =>
            {
                let line = word.span().start().line;
                let mut segments = vec![word.to_string()];
                at += 1;
                while is_path_sep(tokens, at) {
                    match ident(tokens, at + 2) {
                        Some(name) => segments.push(name),
                        None => break,
                    }
                    at += 2;
                }
                at += 1;
                out.push(Import {
                    target: anchor(&segments, module, known),
                    binds: None,
                    reexport: false,
                    module: module.clone(),
                    line,
                    text: segments.join("::"),
                });
            }
            TokenTree::Group(group) => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                scan(&inner, module, known, out);
                at += 1;
            }
            _ => at += 1,
        }
    }
}

/// What is wrong with a crate's layers: one line per upward import or circle.
fn problems(src: &Path, layers: &[Layer]) -> Vec<String> {
    let krate = Crate::read(src);
    let top = |file: &SourceFile| file.module.first().cloned().unwrap_or_else(|| "lib".into());
    let layer_of = |module: &str| {
        layers
            .iter()
            .position(|l| l.modules.iter().any(|m| m == module))
    };
    let mut problems = Vec::new();
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (index, file) in krate.files.iter().enumerate() {
        let Some(own) = layer_of(&top(file)) else {
            problems.push(format!(
                "{}: module `{}` is in no layer of docs/architecture.md",
                file.path,
                top(file)
            ));
            continue;
        };
        for import in &file.imports {
            let Some(target) = import.target.as_ref() else {
                continue;
            };
            let Some(to) = krate.resolve(target, 0) else {
                continue;
            };
            if to == index {
                continue;
            }
            let theirs = layer_of(&top(&krate.files[to])).unwrap_or(0);
            if theirs > own {
                problems.push(format!(
                    "{}:{}: `{}` imports `{}` from {} (layer `{}`), above its own layer `{}`",
                    file.path,
                    import.line,
                    file.module.join("::"),
                    import.text,
                    krate.files[to].path,
                    layers[theirs].name,
                    layers[own].name,
                ));
            }
            // A module's root file (`mod.rs`, `lib.rs`) assembles its own files: it may use
            // them, and they may use it. Circles are looked for among the rest.
            let assembles =
                krate.files[to].module.starts_with(&file.module) && is_root_file(&file.path);
            if !import.reexport && !assembles {
                edges.entry(index).or_default().insert(to);
            }
        }
    }
    for circle in circles(krate.files.len(), &edges) {
        let names: Vec<&str> = circle
            .iter()
            .map(|&f| krate.files[f].path.as_str())
            .collect();
        problems.push(format!(
            "a circle of files importing each other: {}",
            names.join(" → ")
        ));
    }
    problems
}

fn is_root_file(path: &str) -> bool {
    path == "lib.rs" || path.ends_with("/mod.rs") || path == "mod.rs"
}

/// The strongly connected groups of more than one file (Tarjan's algorithm).
fn circles(count: usize, edges: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in self.edges.get(&v).into_iter().flatten() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: vec![None; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in 0..count {
        if walk.index[v].is_none() {
            walk.visit(v);
        }
    }
    walk.found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

#[test]
fn sdk_modules_import_only_from_layers_below() {
    let root = workspace();
    let markdown = std::fs::read_to_string(root.join("docs/architecture.md"))
        .expect("read docs/architecture.md");
    let layers = read_layers(&markdown);
    let problems = problems(&root.join("sdk/src"), &layers);
    assert!(
        problems.is_empty(),
        "the layers of sdk/src (docs/architecture.md) are broken:\n  {}",
        problems.join("\n  ")
    );
}

/// A scratch copy of a tiny crate, to show the check can fail.
fn scratch(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "duractor-architecture-{}-{}",
        std::process::id(),
        files.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

const TINY_LAYERS: &str =
    "```layers\nbottom: error\nmiddle: engine\ntop: runtime\nroot: lib\n```\n";

#[test]
fn an_upward_import_and_a_circle_are_reported() {
    let dir = scratch(&[
        (
            "lib.rs",
            "pub mod error;\npub mod engine;\npub mod runtime;\npub use error::Error;\n",
        ),
        // Upward, through the root's re-export: charged to runtime.rs, where it is defined.
        (
            "error.rs",
            "pub struct Error;\nfn f() -> crate::Runtime { todo!() }\n",
        ),
        ("engine/mod.rs", "mod a;\nmod b;\npub use a::A;\n"),
        ("engine/a.rs", "use super::b::B;\npub struct A(B);\n"),
        ("engine/b.rs", "pub struct B;\nfn g(_: &super::a::A) {}\n"),
        ("runtime.rs", "pub struct Runtime;\nuse crate::engine::A;\n"),
    ]);
    // The root re-exports `Runtime` too, so `crate::Runtime` resolves.
    std::fs::write(
        dir.join("lib.rs"),
        "pub mod error;\npub mod engine;\npub mod runtime;\npub use error::Error;\npub use runtime::Runtime;\n",
    )
    .expect("write");
    let problems = problems(&dir, &read_layers(TINY_LAYERS));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        problems,
        [
            "error.rs:2: `error` imports `crate::Runtime` from runtime.rs (layer `top`), above its own layer `bottom`"
                .to_string(),
            "a circle of files importing each other: engine/a.rs → engine/b.rs".to_string(),
        ]
    );
}

#[test]
fn clean_layers_pass() {
    let dir = scratch(&[
        (
            "lib.rs",
            "pub mod error;\npub mod engine;\npub use error::Error;\n",
        ),
        (
            "error.rs",
            "pub struct Error;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
        ),
        (
            "engine/mod.rs",
            "mod a;\npub use a::A;\nuse crate::Error;\npub struct Shared;\nfn f() { a::helper() }\n",
        ),
        (
            "engine/a.rs",
            "pub struct A(crate::error::Error, super::Shared);\npub fn helper() {}\n",
        ),
    ]);
    let problems = problems(&dir, &read_layers(TINY_LAYERS));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(problems.is_empty(), "{problems:?}");
}
