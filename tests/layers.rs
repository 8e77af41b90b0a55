//! The layering ARCHITECTURE.md promises, read from the source: which
//! top-level module of `src/` names which (`crate::x` paths, outside the
//! test modules), no cycle between them, each layer importing only what its
//! list allows, and no source file over 900 lines before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Lines of a source file before its tests, at most.
const MAX_LINES: usize = 900;

/// Modules any layer may use; they import nothing of the crate.
const LEAVES: &[&str] = &["redact", "secret", "text", "time"];

/// What each layer may import besides the leaves (ARCHITECTURE.md, "Who
/// may import whom"). `app`, `main` and `lib` may import anything; any other
/// top-level module must be listed here.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "console",
        &["call", "config", "store", "cache", "timeline", "metrics"],
    ),
    (
        "call",
        &[
            "config",
            "sip",
            "media",
            "conversation",
            "providers",
            "cache",
            "store",
            "timeline",
            "metrics",
        ],
    ),
    (
        "config",
        &[
            "sip",
            "media",
            "conversation",
            "providers",
            "cache",
            "store",
            "metrics",
        ],
    ),
    ("sip", &["media"]),
    ("conversation", &[]),
    ("store", &["timeline", "providers"]),
    ("timeline", &["cache", "media", "metrics"]),
    ("cache", &["media"]),
    ("providers", &["media"]),
    ("media", &["metrics"]),
    ("metrics", &[]),
    ("redact", &[]),
    ("secret", &[]),
    ("text", &[]),
    ("time", &[]),
];

/// Top-level modules bound by no list.
const UNBOUND: &[&str] = &["app", "main", "lib"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file before its tests: up to the first `#[cfg(test)]` at
/// the start of a line that stands on a module (`mod tests`, a test-only
/// `pub(crate) mod line`), not one on a field or a helper inside the code.
fn before_tests(text: &str) -> &str {
    let mut at = 0;
    while let Some(found) = text[at..].find("#[cfg(test)]") {
        let start = at + found;
        let line_start = start == 0 || text.as_bytes()[start - 1] == b'\n';
        let next = text[start + "#[cfg(test)]".len()..]
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("#[") && !l.starts_with("//"));
        let on_module = next.is_some_and(|l| {
            l.strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l)
                .starts_with("mod ")
        });
        if line_start && on_module {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// The top-level modules a piece of code names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

struct Graph {
    /// module → module it names → the files that do.
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Files over the bound, with their lines before tests.
    too_long: Vec<(String, usize)>,
}

fn read_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut modules = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(SRC).expect("under src/");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        modules.insert(name.trim_end_matches(".rs").to_string());
    }
    let mut graph = Graph {
        edges: BTreeMap::new(),
        too_long: Vec::new(),
    };
    for file in &files {
        let relative = file.strip_prefix(SRC).expect("under src/");
        let shown = relative.display().to_string();
        let top = relative
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(file).expect("a source file");
        let code = before_tests(&text);
        let lines = code.lines().count();
        if lines > MAX_LINES {
            graph.too_long.push((shown.clone(), lines));
        }
        let entry = graph.edges.entry(top.clone()).or_default();
        for name in named_modules(code) {
            if name != top && modules.contains(&name) {
                entry.entry(name).or_default().insert(shown.clone());
            }
        }
    }
    graph
}

/// A cycle through the graph, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_reader_sees_paths_groups_and_cycles() {
    let names = named_modules(
        "use crate::media::rtp;\nuse crate::{sip::leg, store};\nlet x = crate::time::now();",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["media", "sip", "store", "time"]
    );
    assert_eq!(before_tests("a\nb\n#[cfg(test)]\nmod tests {}"), "a\nb\n");
    // A test-only field or helper is code; a test-only module is not.
    let code = "struct S {\n    #[cfg(test)]\n    probe: u8,\n}\n#[cfg(test)]\nfn helper() {}\n";
    assert_eq!(before_tests(code), code);
    let line =
        format!("{code}#[cfg(test)]\npub(crate) mod line {{}}\n#[cfg(test)]\nmod tests {{}}\n");
    assert_eq!(before_tests(&line), code);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c")] {
        edges
            .entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default();
    }
    assert_eq!(find_cycle(&edges), None);
    edges
        .entry("c".into())
        .or_default()
        .entry("a".into())
        .or_default();
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn no_top_level_module_imports_in_a_cycle() {
    let graph = read_graph();
    assert!(
        graph.edges.len() > 10,
        "the source tree was not read: {:?}",
        graph.edges.keys().collect::<Vec<_>>()
    );
    if let Some(cycle) = find_cycle(&graph.edges) {
        let through: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                format!(
                    "{} → {} ({:?})",
                    pair[0], pair[1], graph.edges[&pair[0]][&pair[1]]
                )
            })
            .collect();
        panic!("import cycle: {}", through.join(", "));
    }
}

#[test]
fn each_layer_imports_only_what_it_may() {
    let graph = read_graph();
    let mut wrong = Vec::new();
    for (layer, imports) in &graph.edges {
        if UNBOUND.contains(&layer.as_str()) {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| name == layer) else {
            wrong.push(format!("{layer}: a top-level module ALLOWED does not list"));
            continue;
        };
        let is_leaf = LEAVES.contains(&layer.as_str());
        for (name, files) in imports {
            let leaf = LEAVES.contains(&name.as_str()) && !is_leaf;
            if !leaf && !allowed.contains(&name.as_str()) {
                wrong.push(format!("{layer} imports {name} in {files:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_900_lines_before_its_tests() {
    let graph = read_graph();
    assert!(
        graph.too_long.is_empty(),
        "over {MAX_LINES} lines before the tests: {:?}",
        graph.too_long
    );
}
