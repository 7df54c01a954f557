//! No import cycle between two files of a crate: every crate's module graph, read with
//! `syn`, must be acyclic.
//!
//! A file is a node (inline `mod x { }` blocks belong to their file). An edge is every
//! `use` tree and every path (in code, types or macro arguments) that starts with
//! `crate::`, `super::`, `self::` or a declared child module, resolved to the file of the
//! longest module it names: `use crate::Item` of a root re-export is an edge to `lib.rs`.
//! Test code is left out (`#[cfg(test)]` items, files named `tests.rs` or `*_tests.rs`),
//! since test modules reach into their parent by design.
//!
//! Run it alone with `cargo test -p loadwise-testkit --test module_graph`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, ImplItem, Item, Meta, Token, TraitItem, UseTree};

/// A module path from the crate root: `[]` is the root, `["settings", "value"]` is
/// `crate::settings::value`.
type ModulePath = Vec<String>;

/// One crate target's files and the files each one uses.
#[derive(Debug, Default)]
struct Graph {
    /// Every module, inline ones included, and the file it is written in.
    modules: BTreeMap<ModulePath, String>,
    /// Each file and the other files its code names.
    edges: BTreeMap<String, BTreeSet<String>>,
}

/// A parsed file and the module it is.
struct Unit {
    file: String,
    module: ModulePath,
    ast: syn::File,
}

/// Builds the graph of the target whose root file is `root` (`lib.rs`, `main.rs`);
/// `read` gives a file's text from its path relative to `src`, or `None` if it does not exist.
fn build(root: &str, read: &dyn Fn(&str) -> Option<String>) -> Result<Graph, String> {
    let mut graph = Graph::default();
    let mut units = Vec::new();
    let mut queue = VecDeque::from([(root.to_owned(), ModulePath::new())]);
    graph.modules.insert(ModulePath::new(), root.to_owned());
    while let Some((file, module)) = queue.pop_front() {
        let text = read(&file).ok_or_else(|| format!("{file}: not found"))?;
        let ast = syn::parse_file(&text).map_err(|e| format!("{file}: {e}"))?;
        declare(&ast.items, &module, &file, read, &mut graph, &mut queue)?;
        units.push(Unit { file, module, ast });
    }
    for unit in &units {
        let mut uses = Uses { modules: &graph.modules, module: unit.module.clone(), found: BTreeSet::new() };
        uses.visit_file(&unit.ast);
        uses.found.remove(&unit.file);
        graph.edges.insert(unit.file.clone(), uses.found);
    }
    Ok(graph)
}

/// Records the modules `items` declare inside `module` (written in `file`), and queues
/// the files of the out-of-line ones. Test modules are not part of the graph.
fn declare(
    items: &[Item],
    module: &ModulePath,
    file: &str,
    read: &dyn Fn(&str) -> Option<String>,
    graph: &mut Graph,
    queue: &mut VecDeque<(String, ModulePath)>,
) -> Result<(), String> {
    for item in items {
        let Item::Mod(declared) = item else { continue };
        if test_only(&declared.attrs) {
            continue;
        }
        let name = declared.ident.to_string();
        let mut child = module.clone();
        child.push(name.clone());
        if let Some((_, inner)) = &declared.content {
            graph.modules.insert(child.clone(), file.to_owned());
            declare(inner, &child, file, read, graph, queue)?;
            continue;
        }
        if name == "tests" || name.ends_with("_tests") {
            continue;
        }
        if declared.attrs.iter().any(|attr| attr.path().is_ident("path")) {
            return Err(format!("{file}: `#[path]` on `mod {name};` is not followed by this check"));
        }
        // Without `#[path]`, a module's directory is its module path.
        let dir = child.join("/");
        let child_file = [format!("{dir}.rs"), format!("{dir}/mod.rs")]
            .into_iter()
            .find(|candidate| read(candidate).is_some())
            .ok_or_else(|| format!("{file}: no file for `mod {name};`"))?;
        graph.modules.insert(child.clone(), child_file.clone());
        queue.push_back((child_file, child));
    }
    Ok(())
}

/// True for `#[cfg(test)]`, `#[cfg(doctest)]` and `#[cfg(all(test, ...))]`.
fn test_only(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .filter_map(|attr| attr.parse_args::<Meta>().ok())
        .any(|meta| is_test_cfg(&meta))
}

fn is_test_cfg(meta: &Meta) -> bool {
    match meta {
        Meta::Path(path) => path.is_ident("test") || path.is_ident("doctest"),
        Meta::List(list) if list.path.is_ident("all") => list
            .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            .is_ok_and(|inner| inner.iter().any(is_test_cfg)),
        _ => false,
    }
}

/// Collects the files one file's code names, walking its non-test items.
struct Uses<'a> {
    modules: &'a BTreeMap<ModulePath, String>,
    /// The module being walked: the file's own, or an inline one inside it.
    module: ModulePath,
    found: BTreeSet<String>,
}

impl Uses<'_> {
    /// Records the file of the longest module that `segments` names, if it is a path of
    /// this crate.
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else { return };
        let (mut base, mut rest) = match first.as_str() {
            "crate" => (ModulePath::new(), &segments[1..]),
            "self" => (self.module.clone(), &segments[1..]),
            "super" => (parent(&self.module), &segments[1..]),
            name if self.modules.contains_key(&child(&self.module, name)) => (self.module.clone(), segments),
            _ => return,
        };
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base = parent(&base);
            rest = tail;
        }
        for segment in rest {
            let longer = child(&base, segment);
            if !self.modules.contains_key(&longer) {
                break;
            }
            base = longer;
        }
        if let Some(file) = self.modules.get(&base) {
            self.found.insert(file.clone());
        }
    }

    /// Finds `a::b::c` paths among a macro's tokens, which `syn` leaves unparsed.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.scan_tokens(group.stream()),
                TokenTree::Ident(ident) if !after_path_separator(&tokens, i) => {
                    let mut segments = vec![ident.to_string()];
                    while let Some(TokenTree::Ident(next)) = path_separator_then(&tokens, i) {
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if segments.len() >= 2 {
                        self.resolve(&segments);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The token after a `::` that follows `tokens[i]`, if there is one.
fn path_separator_then(tokens: &[TokenTree], i: usize) -> Option<&TokenTree> {
    match (tokens.get(i + 1), tokens.get(i + 2)) {
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':' =>
        {
            tokens.get(i + 3)
        }
        _ => None,
    }
}

/// True if `tokens[i]` follows a `::` (so it is not the start of a path).
fn after_path_separator(tokens: &[TokenTree], i: usize) -> bool {
    i >= 2 && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ':')
}

fn parent(module: &ModulePath) -> ModulePath {
    module[..module.len().saturating_sub(1)].to_vec()
}

fn child(module: &ModulePath, name: &str) -> ModulePath {
    let mut path = module.clone();
    path.push(name.to_owned());
    path
}

/// The paths a `use` tree imports, each as its segments (a glob or `self` ends at its module).
fn flatten(tree: &UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            flatten(&path.tree, prefix, out);
            prefix.pop();
        }
        UseTree::Name(name) if name.ident == "self" => out.push(prefix.clone()),
        UseTree::Name(name) => out.push(child(prefix, &name.ident.to_string())),
        UseTree::Rename(rename) if rename.ident == "self" => out.push(prefix.clone()),
        UseTree::Rename(rename) => out.push(child(prefix, &rename.ident.to_string())),
        UseTree::Glob(_) => out.push(prefix.clone()),
        UseTree::Group(group) => {
            for item in &group.items {
                flatten(item, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        match item {
            Item::Mod(_) if test_only(item_attrs(item)) => {}
            Item::Mod(declared) => {
                if let Some((_, inner)) = &declared.content {
                    self.module.push(declared.ident.to_string());
                    for item in inner {
                        self.visit_item(item);
                    }
                    self.module.pop();
                }
            }
            _ if test_only(item_attrs(item)) => {}
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = match item {
            ImplItem::Const(c) => &c.attrs,
            ImplItem::Fn(f) => &f.attrs,
            ImplItem::Type(t) => &t.attrs,
            ImplItem::Macro(m) => &m.attrs,
            _ => return visit::visit_impl_item(self, item),
        };
        if !test_only(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        let attrs = match item {
            TraitItem::Const(c) => &c.attrs,
            TraitItem::Fn(f) => &f.attrs,
            TraitItem::Type(t) => &t.attrs,
            TraitItem::Macro(m) => &m.attrs,
            _ => return visit::visit_trait_item(self, item),
        };
        if !test_only(attrs) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if item.leading_colon.is_some() {
            return;
        }
        let mut paths = Vec::new();
        flatten(&item.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.resolve(&path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() >= 2 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.resolve(&segments);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.scan_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// An import cycle: the files of its group, and one closed walk through them.
#[derive(Debug)]
struct Cycle {
    group: BTreeSet<String>,
    walk: Vec<String>,
}

/// The graph's cycles, one per strongly connected group of two files or more.
fn cycles(graph: &Graph) -> Vec<Cycle> {
    groups(&graph.edges)
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            let walk = shortest_cycle(&graph.edges, &group);
            Cycle { group, walk }
        })
        .collect()
}

/// Tarjan's strongly connected components.
fn groups(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    #[derive(Default)]
    struct Tarjan<'a> {
        next: usize,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn connect<'a>(t: &mut Tarjan<'a>, edges: &'a BTreeMap<String, BTreeSet<String>>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        for w in edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                connect(t, edges, w);
                let low = t.low[v].min(t.low[w]);
                t.low.insert(v, low);
            } else if t.stack.contains(&w) {
                let low = t.low[v].min(t.index[w]);
                t.low.insert(v, low);
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                group.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            t.found.push(group);
        }
    }
    let mut t = Tarjan::default();
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            connect(&mut t, edges, v);
        }
    }
    t.found
}

/// The shortest closed walk from the group's first file back to itself, within the group.
fn shortest_cycle(edges: &BTreeMap<String, BTreeSet<String>>, group: &BTreeSet<String>) -> Vec<String> {
    let start = group.first().expect("a group has a file").clone();
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(&v).into_iter().flatten().filter(|w| group.contains(*w)) {
            if *w == start {
                // `start` never enters `came_from`, so the walk back ends there.
                let mut walk = vec![v.clone()];
                while let Some(previous) = came_from.get(walk.last().expect("not empty")) {
                    walk.push(previous.clone());
                }
                walk.reverse();
                walk.push(start);
                return walk;
            }
            if *w != start && !came_from.contains_key(w) {
                came_from.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    unreachable!("a strongly connected group has a cycle through each of its files")
}

fn describe(crate_name: &str, cycle: &Cycle) -> String {
    let group: Vec<&str> = cycle.group.iter().map(String::as_str).collect();
    format!("{crate_name}: {} (group of {}: {})", cycle.walk.join(" -> "), group.len(), group.join(", "))
}

fn workspace_crates() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&crates)
        .unwrap_or_else(|e| panic!("{}: {e}", crates.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("src").is_dir())
        .collect();
    found.sort();
    found
}

#[test]
fn no_import_cycle_between_files_of_a_crate() {
    let mut failures = Vec::new();
    let mut files = 0;
    for dir in workspace_crates() {
        let name = dir.file_name().expect("a crate directory").to_string_lossy().into_owned();
        let src = dir.join("src");
        let read = |rel: &str| std::fs::read_to_string(src.join(rel)).ok();
        for root in ["lib.rs", "main.rs"].into_iter().filter(|root| src.join(root).is_file()) {
            let graph = build(root, &read).unwrap_or_else(|e| panic!("{name}: {e}"));
            files += graph.edges.len();
            for cycle in &cycles(&graph) {
                failures.push(describe(&name, cycle));
            }
        }
    }
    // A walk that found almost nothing would pass vacuously.
    assert!(files > 50, "only {files} files found under crates/*/src");
    assert!(
        failures.is_empty(),
        "import cycles between files (a child should name its sibling, `super::sibling::Item`, \
         not the parent's re-export):\n{}",
        failures.join("\n")
    );
}

/// The graph of an in-memory crate given as `(path, text)` pairs, rooted at `lib.rs`.
fn graph_of(files: &[(&str, &str)]) -> Graph {
    let files: BTreeMap<String, String> =
        files.iter().map(|(path, text)| ((*path).to_owned(), (*text).to_owned())).collect();
    build("lib.rs", &|rel| files.get(rel).cloned()).expect("the sources parse")
}

fn walks(files: &[(&str, &str)]) -> Vec<String> {
    cycles(&graph_of(files)).iter().map(|cycle| cycle.walk.join(" -> ")).collect()
}

#[test]
fn a_cycle_through_a_root_re_export_is_found() {
    let found = walks(&[
        ("lib.rs", "mod a; mod b; pub use a::A; pub use b::B;"),
        ("a.rs", "use crate::B; pub struct A(B);"),
        ("b.rs", "pub struct B;"),
    ]);
    assert_eq!(found, ["a.rs -> lib.rs -> a.rs"]);
}

#[test]
fn a_cycle_through_super_in_a_type_is_found() {
    let found = walks(&[
        ("lib.rs", "mod m;"),
        ("m/mod.rs", "mod x; pub use x::X; pub struct Y;"),
        ("m/x.rs", "pub struct X(super::Y);"),
    ]);
    assert_eq!(found, ["m/mod.rs -> m/x.rs -> m/mod.rs"]);
}

#[test]
fn a_child_using_its_sibling_makes_no_cycle() {
    let graph = graph_of(&[
        ("lib.rs", "mod m;"),
        ("m.rs", "mod x; mod y; pub use self::x::X; pub use y::Y;"),
        ("m/x.rs", "use super::y::Y; pub struct X(Y);"),
        ("m/y.rs", "pub struct Y;"),
    ]);
    assert!(cycles(&graph).is_empty());
    assert_eq!(graph.edges["m/x.rs"], BTreeSet::from(["m/y.rs".to_owned()]));
    assert_eq!(graph.edges["m.rs"], BTreeSet::from(["m/x.rs".to_owned(), "m/y.rs".to_owned()]));
}

#[test]
fn test_code_is_left_out() {
    let found = walks(&[
        ("lib.rs", "mod m; pub struct Root;"),
        ("m.rs", "mod x; mod x_tests; pub use x::X; pub struct Y; #[cfg(test)] mod tests;"),
        (
            "m/x.rs",
            "pub struct X; #[cfg(test)] mod tests { use super::super::Y; } \
             impl X { #[cfg(all(test, unix))] fn check() { let _ = crate::Root; } }",
        ),
        ("m/x_tests.rs", "use super::Y;"),
        ("m/tests.rs", "use super::Y;"),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn paths_in_macros_and_inline_modules_count_for_their_file() {
    let graph = graph_of(&[
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", r#"fn f() -> String { format!("{}", crate::b::NAME) }"#),
        ("b.rs", "pub const NAME: &str = \"b\"; mod inner { use crate::c::C; }"),
        ("c.rs", "pub struct C;"),
    ]);
    assert_eq!(graph.edges["a.rs"], BTreeSet::from(["b.rs".to_owned()]));
    assert_eq!(graph.edges["b.rs"], BTreeSet::from(["c.rs".to_owned()]));
}

#[test]
fn a_cycle_is_reported_with_its_files_in_order() {
    let graph = graph_of(&[
        ("lib.rs", "mod a; mod b; pub use a::A;"),
        ("a.rs", "pub struct A(crate::b::B);"),
        ("b.rs", "pub struct B(Box<crate::A>);"),
    ]);
    let found: Vec<String> = cycles(&graph).iter().map(|c| describe("demo", c)).collect();
    assert_eq!(found, ["demo: a.rs -> b.rs -> lib.rs -> a.rs (group of 3: a.rs, b.rs, lib.rs)"]);
}

/// Prints one crate's edges, to untangle a cycle:
/// `MODULE_GRAPH_CRATE=cli cargo test -p loadwise-testkit --test module_graph -- --ignored --nocapture`.
#[test]
#[ignore = "a diagnostic: prints the graph of the crate named by MODULE_GRAPH_CRATE"]
fn print_the_graph_of_one_crate() {
    let Some(name) = std::env::var_os("MODULE_GRAPH_CRATE") else { return };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&name).join("src");
    let read = |rel: &str| std::fs::read_to_string(src.join(rel)).ok();
    for root in ["lib.rs", "main.rs"].into_iter().filter(|root| src.join(root).is_file()) {
        let graph = build(root, &read).unwrap_or_else(|e| panic!("{e}"));
        for (file, uses) in &graph.edges {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            println!("{file} -> {}", uses.join(", "));
        }
        for cycle in cycles(&graph) {
            println!("cycle: {}", describe(&name.to_string_lossy(), &cycle));
        }
    }
}

#[test]
fn globs_self_paths_and_child_paths_are_edges() {
    let graph = graph_of(&[
        ("lib.rs", "mod a; mod b; fn f() { b::go(); }"),
        ("a.rs", "use super::*; mod inner; fn g() { self::inner::go(); }"),
        ("a/inner.rs", "pub fn go() {}"),
        ("b.rs", "pub fn go() {}"),
    ]);
    assert_eq!(graph.edges["lib.rs"], BTreeSet::from(["b.rs".to_owned()]));
    assert_eq!(graph.edges["a.rs"], BTreeSet::from(["a/inner.rs".to_owned(), "lib.rs".to_owned()]));
}
