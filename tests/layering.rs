//! The library's top-level modules depend only downward: this test reads the `crate::`
//! paths in `src/` and fails on any cycle between top-level modules, naming it.
//!
//! Unit-test files (`tests.rs`, `*_tests.rs`, and `#[cfg(test)]` modules at the end of a
//! file) may reach up: a test of a lower layer can use a higher one to check it. Doc
//! comments are left out too: a link to a higher module is a pointer, not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its code names, with one file that does.
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and its trailing test module.
fn code(text: &str) -> String {
    let body = text
        .find("#[cfg(test)]\nmod tests {")
        .map_or(text, |at| &text[..at]);
    body.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names after every `crate::`, also inside `use crate::{a, b::c}` groups.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or("");
                names.insert(name.trim().to_owned());
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

fn graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    assert!(modules.len() > 5, "no modules found in src/lib.rs");
    let mut files = Vec::new();
    source_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a path");
        let top = first.as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let is_test_file = name.is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"));
        if !modules.contains(&top) || is_test_file {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for used in crate_paths(&code(&text)) {
            if used != top && modules.contains(&used) {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(used)
                    .or_insert_with(|| relative.to_owned());
            }
        }
    }
    graph
}

/// A cycle through the graph, if there is one, as the list of modules along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn top_level_modules_depend_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.values().map(BTreeMap::len).sum::<usize>() > 10,
        "too few dependencies found: the reader is broken"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let file = &graph[&pair[0]][&pair[1]];
                format!("{} -> {} (in src/{})", pair[0], pair[1], file.display())
            })
            .collect();
        panic!(
            "the top-level modules form a cycle:\n  {}",
            steps.join("\n  ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let edge = |a: &str, b: &str| {
        (
            a.to_owned(),
            BTreeMap::from([(b.to_owned(), PathBuf::new())]),
        )
    };
    let acyclic: Graph = [edge("a", "b"), edge("b", "c")].into();
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic: Graph = [edge("a", "b"), edge("b", "c"), edge("c", "a")].into();
    let cycle = find_cycle(&cyclic).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let code =
        code("use crate::{model::Bundle, sim};\n// crate::stream\nfn f() { crate::train::x() }");
    assert_eq!(
        crate_paths(&code),
        ["model", "sim", "train"].map(String::from).into()
    );
}

/// The README's `## Layout` section.
fn readme_layout(root: &Path) -> String {
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    readme
        .split("## Layout")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a ## Layout section")
        .to_owned()
}

#[test]
fn the_readme_layout_names_every_top_level_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layout = readme_layout(root);
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    for module in lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
    {
        let module = module.trim_end_matches(';');
        let (file, dir) = (format!("`src/{module}.rs`"), format!("`src/{module}`"));
        assert!(
            layout.contains(&file) || layout.contains(&dir),
            "README's layout table does not name src/{module}"
        );
        let exists = root.join(format!("src/{module}.rs")).is_file()
            || root.join(format!("src/{module}")).is_dir();
        assert!(exists, "src/lib.rs declares {module}, which has no file");
    }
}

/// The README's layout table lists the layers lowest first: a module uses only
/// modules of its own row or of rows above it.
#[test]
fn the_readme_layout_lists_the_layers_lowest_first() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layout = readme_layout(root);
    let mut row_of: BTreeMap<String, usize> = BTreeMap::new();
    for (row, line) in layout
        .lines()
        .filter(|l| l.starts_with("| `src/"))
        .enumerate()
    {
        let paths = line.split(" | ").next().unwrap_or("");
        for path in paths.split(", ") {
            let module = path
                .trim_start_matches("| ")
                .trim_matches('`')
                .trim_start_matches("src/")
                .trim_end_matches(".rs")
                .split('/')
                .next()
                .unwrap_or("");
            row_of.insert(module.to_owned(), row);
        }
    }
    assert!(row_of.len() > 10, "the layout table was read: {row_of:?}");
    let graph = graph(&root.join("src"));
    for (user, used) in &graph {
        for (module, file) in used {
            let (Some(a), Some(b)) = (row_of.get(user), row_of.get(module)) else {
                panic!("{user} or {module} is not in the README's layout table");
            };
            assert!(
                b <= a,
                "{user} uses {module} (in src/{}), a higher layer by the README's layout table (a later row)",
                file.display()
            );
        }
    }
}

/// What issue 32 moved: the offline jobs do not reach into training (the encoded list
/// has its own layer), and only the list log names the Parquet crate.
#[test]
fn offline_stays_off_train_and_only_the_list_log_names_parquet() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        !graph
            .get("offline")
            .is_some_and(|used| used.contains_key("train")),
        "offline uses train: {:?}",
        graph.get("offline").and_then(|used| used.get("train"))
    );
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let naming: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !f.starts_with(src.join("list_log")))
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("readable source");
            code(&text).contains("parquet::")
        })
        .collect();
    assert!(naming.is_empty(), "outside src/list_log: {naming:?}");
}
