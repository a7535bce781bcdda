//! The floors of the house, checked: which top-level module of `src/` may import which.
//!
//! Each module of `src/` (a folder or a file) has a floor in [`FLOORS`]. Production code may
//! import only the modules its row names; the rows are checked to form no cycle, so no import
//! cycle crosses folders and nothing imports upward. Test code (a `tests.rs`, a module under
//! `#[cfg(test)]`) may also reach sideways to any room, never into the wiring (`node`) or the
//! tools above it (`sim`, `bench`, `fuzz_entry`, `main`).
//!
//! How imports are found: every `crate::NAME` path in the code with comments removed, and the
//! names at the top of a `crate::{...}` group (`use crate::{a::X, b}` imports `a` and `b`).
//! That is every way this tree names another module (a `super::super::` that climbs out of a
//! top-level folder would be missed; none does). A new top-level module needs a row here.
//!
//! Run alone: `cargo test --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules its production code may import, lowest floor first.
const FLOORS: &[(&str, &[&str])] = &[
    // Ground floor: what every room reads.
    ("types", &[]),
    ("crypto", &["types"]),
    ("config", &["types", "crypto"]),
    // The sans-IO consensus core and the shard runtime.
    ("consensus", &["types", "crypto"]),
    ("runtime", &["config"]),
    // The rooms, one per shard; a room may knock on the doors of the rooms below it.
    ("store", &["types", "crypto", "runtime", "consensus"]),
    ("exec", &["types", "crypto", "config", "runtime", "store"]),
    (
        "net",
        &[
            "types",
            "crypto",
            "config",
            "runtime",
            "consensus",
            "exec",
            "store",
        ],
    ),
    (
        "consensus_shard",
        &[
            "types",
            "crypto",
            "config",
            "runtime",
            "consensus",
            "exec",
            "net",
            "store",
        ],
    ),
    (
        "rpc",
        &["types", "crypto", "config", "runtime", "exec", "store"],
    ),
    // The wiring: builds a node from the rooms.
    (
        "node",
        &[
            "types",
            "crypto",
            "config",
            "runtime",
            "consensus",
            "store",
            "exec",
            "net",
            "consensus_shard",
            "rpc",
        ],
    ),
    // Tools above the house.
    ("sim", &["types", "crypto", "config", "consensus"]),
    (
        "fuzz_entry",
        &[
            "types",
            "crypto",
            "config",
            "consensus",
            "store",
            "exec",
            "net",
            "rpc",
            "node",
        ],
    ),
    (
        "bench",
        &[
            "types",
            "crypto",
            "config",
            "runtime",
            "consensus",
            "store",
            "exec",
            "net",
            "rpc",
            "node",
        ],
    ),
    ("lib", &[]),
];

/// What test code may never import.
const ABOVE_THE_ROOMS: &[&str] = &["node", "sim", "bench", "fuzz_entry", "main"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("non-empty path");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// `text` with `//` comments and string literals blanked (so doc links and messages that name
/// a module are not imports).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                in_string = true;
                out.push('"');
            }
            // A char literal holding a quote or a slash must not open a string or a comment.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\"'") || rest.starts_with("\\\"'") {
                    for _ in 0..rest.find('\'').unwrap_or(0) + 1 {
                        chars.next();
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The byte index of the `}` closing the `{` at `open`.
fn matching_brace(code: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Splits a file's code into production code and the bodies of its `#[cfg(test)]` modules,
/// and names the child files it declares under `#[cfg(test)]` (`#[cfg(test)] mod tests;`).
fn split_tests(code: &str) -> (String, String, Vec<String>) {
    let mut production = String::new();
    let mut tests = String::new();
    let mut test_children = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        production.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let item_end = after.find([';', '{']).unwrap_or(after.len());
        let item = after[..item_end].trim();
        let name = item
            .rsplit_once("mod ")
            .map(|(_, n)| n.trim().to_string())
            .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'));
        if after[item_end..].starts_with(';') {
            if let Some(name) = name {
                test_children.push(name);
            }
            rest = &after[item_end + 1..];
        } else if item_end < after.len() {
            let close = matching_brace(after, item_end);
            tests.push_str(&after[..close.min(after.len())]);
            rest = &after[(close + 1).min(after.len())..];
        } else {
            rest = "";
        }
    }
    production.push_str(rest);
    (production, tests, test_children)
}

/// The top-level modules `code` imports through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before_ok = at == 0
            || !rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[at + "crate::".len()..];
        if before_ok {
            if let Some(group) = after.strip_prefix('{') {
                let close = matching_brace(after, 0);
                let inner = &group[..close.saturating_sub(1)];
                // Top-level entries of the group: split at commas outside nested braces.
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.insert(ident(inner[start..i].trim()));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                found.insert(ident(inner[start..].trim()));
            } else {
                found.insert(ident(after));
            }
        }
        rest = after;
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

struct Scan {
    /// (module, imported module) -> files, for production code.
    production: BTreeMap<(String, String), BTreeSet<String>>,
    /// The same for test code.
    tests: BTreeMap<(String, String), BTreeSet<String>>,
}

fn scan() -> Scan {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    // Files that are test code as a whole: `tests.rs`, and children declared under cfg(test).
    let mut test_files: BTreeSet<PathBuf> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "tests.rs"))
        .cloned()
        .collect();
    let mut texts = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source is UTF-8");
        let code = code_only(&text);
        let (_, _, children) = split_tests(&code);
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().expect("parent").to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in children {
            test_files.insert(dir.join(format!("{child}.rs")));
            test_files.insert(dir.join(&child).join("mod.rs"));
        }
        texts.insert(file.clone(), code);
    }
    let mut scan = Scan {
        production: BTreeMap::new(),
        tests: BTreeMap::new(),
    };
    for (file, code) in &texts {
        let module = top_module(file);
        let name = file
            .strip_prefix(src())
            .expect("under src")
            .display()
            .to_string();
        let (production, tests) = if test_files.contains(file) {
            (String::new(), code.clone())
        } else {
            let (p, t, _) = split_tests(code);
            (p, t)
        };
        for (code, into) in [(production, &mut scan.production), (tests, &mut scan.tests)] {
            for imported in imports(&code) {
                if imported != module {
                    into.entry((module.clone(), imported))
                        .or_default()
                        .insert(name.clone());
                }
            }
        }
    }
    scan
}

fn floors() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    FLOORS
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect()
}

#[test]
fn the_floor_table_has_no_cycle() {
    let floors = floors();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        floors: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(
            !path.contains(&m),
            "the floor table has a cycle: {} -> {m}",
            path.join(" -> ")
        );
        path.push(m);
        for dep in floors.get(m).into_iter().flatten() {
            assert!(
                floors.contains_key(dep),
                "`{m}` names `{dep}`, which has no row"
            );
            visit(dep, floors, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in floors.keys() {
        visit(m, &floors, &mut Vec::new(), &mut done);
    }
}

#[test]
fn production_code_imports_only_the_floors_below_it() {
    let floors = floors();
    let scan = scan();
    let mut wrong = Vec::new();
    let mut modules = BTreeSet::new();
    for ((module, imported), files) in &scan.production {
        modules.insert(module.clone());
        if module == "main" {
            continue; // the binary sits on top of everything
        }
        let Some(allowed) = floors.get(module.as_str()) else {
            wrong.push(format!("`{module}` has no row in FLOORS"));
            continue;
        };
        if !allowed.contains(imported.as_str()) {
            wrong.push(format!(
                "`{module}` imports `{imported}` (in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        modules.len() >= 10,
        "the scan found too few modules ({modules:?}): is it reading src/?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the floors:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn test_code_never_imports_the_wiring_or_the_tools() {
    let scan = scan();
    let mut wrong = Vec::new();
    for ((module, imported), files) in &scan.tests {
        if ABOVE_THE_ROOMS.contains(&module.as_str()) || module == "lib" {
            continue;
        }
        if ABOVE_THE_ROOMS.contains(&imported.as_str()) {
            wrong.push(format!(
                "tests of `{module}` import `{imported}` (in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "test imports above the rooms:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_imports_and_skips_comments_strings_and_tests() {
    let code = code_only(
        "use crate::{a::X, b::{c, d}, e};\n// crate::hidden\nlet s = \"crate::quoted\";\n\
         let c = '\"'; crate::f::g();\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    let (production, tests, _) = split_tests(&code);
    let found: Vec<String> = imports(&production).into_iter().collect();
    assert_eq!(found, ["a", "b", "e", "f"]);
    let found: Vec<String> = imports(&tests).into_iter().collect();
    assert_eq!(found, ["t"]);
}
