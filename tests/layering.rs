//! No import runs up the layers. This test reads every source file under
//! `src/`, resolves each path into the crate (`use crate::…`, `crate::x::…`
//! in code, `super::…` and `self::…`, and a module's own child modules) to
//! the module it names, and fails when a module imports from a layer above
//! its own, or when two modules of one layer import each other. The map is
//! [`LAYERS`]; docs/architecture.md ("Layers") explains it.
//!
//! Test-only code (`#[cfg(test)]` items and modules) is exempt: a test may
//! drive a low layer with a higher one. Comments and string literals are
//! not code, so a path in a doc comment is no import.
//!
//! [`KNOWN_UPWARD`] lists the violations allowed, and is empty. The test
//! fails when one outside the list appears and when a listed one is gone,
//! so the list is always true and can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate, by path from the crate root, with its layer
/// (0 is the bottom). A file belongs to the longest entry its module path
/// starts with; a module that matches none fails the test until it is
/// placed here.
const LAYERS: &[(&str, u8)] = &[
    // 0: pure leaves.
    ("workflow", 0),
    ("pipeline", 0),
    ("protocol", 0),
    ("telemetry", 0),
    // Progress bars of the long-running commands (cli, loadgen).
    ("progress", 0),
    ("failpoints", 0),
    // Path confinement (canonical paths), used by the store.
    ("paths", 0),
    // One duration and rate grammar for flags, config and pipeline files.
    ("durations", 0),
    // Cluster ownership: leases, fair share, fencing, as pure state machines.
    ("cluster", 0),
    // The admission gate: caps, rates, keys and priorities, pure.
    ("capacity", 0),
    // 1: storage, and what is built only on it and the leaves.
    ("storage", 1),
    ("engine::registry", 1),
    ("backup", 1),
    ("verify", 1),
    // 2: the engine, its ports and what drives it in-process.
    ("engine", 2),
    ("transport", 2),
    ("sim", 2),
    ("dst", 2),
    // 3: adapters.
    ("transport::nats", 3),
    ("events", 3),
    ("otel", 3),
    ("http", 3),
    ("console", 3),
    ("admin", 3),
    ("audit", 3),
    ("verify::system", 3),
    ("worker", 3),
    ("loadgen", 3),
    ("workercheck", 3),
    // 4: the command line and wiring.
    ("config", 4),
    ("node", 4),
    ("cli", 4),
    ("main", 4),
    (CRATE_ROOT, 4),
];

/// Stands for `src/lib.rs` in [`LAYERS`].
const CRATE_ROOT: &str = "lib";

/// The violations allowed, as (importing module, imported module): none.
/// Never add one; invert the dependency through a port instead.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

#[test]
fn no_import_runs_up_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    assert!(
        files.len() >= 60,
        "expected the crate's sources under {}, found {} files",
        src.display(),
        files.len()
    );
    let found = check(&files).unwrap_or_else(|e| panic!("{e}"));
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut errors = Vec::new();
    for (edge, wheres) in &found {
        if !known.contains(edge) {
            let how = if layer_of(&edge.0) == layer_of(&edge.1) {
                "in a cycle within one layer"
            } else {
                "up the layers"
            };
            errors.push(format!(
                "`{}` (layer {}) imports `{}` (layer {}), {how}, at {}: move the item \
                 down or invert the dependency through a port",
                edge.0,
                layer_of(&edge.0),
                edge.1,
                layer_of(&edge.1),
                wheres.join(", ")
            ));
        }
    }
    for edge in &known {
        if !found.contains_key(edge) {
            errors.push(format!(
                "`{}` no longer imports `{}` against the layers: remove it from KNOWN_UPWARD",
                edge.0, edge.1
            ));
        }
    }
    assert!(errors.is_empty(), "layering:\n  {}", errors.join("\n  "));
}

#[test]
fn the_layering_check_catches_planted_imports() {
    // Guards against a checker that can never fail: each planted file
    // holds one upward import in one of the forms the crate uses.
    let planted: &[(&str, &str, (&str, &str))] = &[
        (
            "storage/planted.rs",
            "use crate::admin::Request;\n",
            ("storage", "admin"),
        ),
        (
            "workflow/planted.rs",
            "use crate::{pipeline::PipelineDef, engine::{Engine, Metrics}};\n",
            ("workflow", "engine"),
        ),
        (
            "pipeline/planted.rs",
            "fn f() { let _ = crate::cli::main(); }\n",
            ("pipeline", "cli"),
        ),
        (
            "engine/registry.rs",
            "use super::EngineCtx;\n",
            ("engine::registry", "engine"),
        ),
        (
            "transport/mod.rs",
            "pub mod nats;\npub use nats::NatsTransport;\n",
            ("transport", "transport::nats"),
        ),
        (
            "engine/partition.rs",
            "mod inner {\n    fn f() { super::super::super::http::serve(); }\n}\n",
            ("engine", "http"),
        ),
    ];
    for (path, text, edge) in planted {
        let files = vec![(path.to_string(), text.to_string())];
        let found = check(&files).unwrap_or_else(|e| panic!("{path}: {e}"));
        let edge = (edge.0.to_string(), edge.1.to_string());
        assert!(
            found.contains_key(&edge),
            "{path}: planted {edge:?} not caught; found {found:?}"
        );
    }

    // A cycle within one layer.
    let files = vec![
        (
            "admin.rs".to_string(),
            "use crate::loadgen::Report;\n".to_string(),
        ),
        (
            "loadgen/mod.rs".to_string(),
            "use crate::admin::Request;\n".to_string(),
        ),
    ];
    let found = check(&files).unwrap();
    assert!(found.contains_key(&("admin".to_string(), "loadgen".to_string())));
    assert!(found.contains_key(&("loadgen".to_string(), "admin".to_string())));

    // Downward and sideways imports, comments, strings, `$crate` and
    // test-only code are not violations.
    let files = vec![
        (
            "engine/partition.rs".to_string(),
            concat!(
                "use crate::storage::Op;\nuse crate::workflow::decide;\n",
                "use super::registry::PipelineRegistry;\n",
                "// use crate::cli::main;\n/* crate::admin::x */\n",
                "const S: &str = \"crate::http::serve\";\n",
                "const R: &str = r#\"crate::http::\"serve\"\"#;\n",
                "const C: char = '\"';\nfn f<'a>(x: &'a str) {}\n",
                "macro_rules! m { () => { $crate::cli::main() } }\n",
                "#[cfg(test)]\nmod tests {\n    use crate::cli::main;\n}\n",
                "#[cfg(test)]\nmod more;\n",
            )
            .to_string(),
        ),
        (
            "engine/partition/more.rs".to_string(),
            "use crate::admin::Request;\n".to_string(),
        ),
        (
            "events.rs".to_string(),
            "use crate::engine::registry::PipelineRegistry;\n".to_string(),
        ),
    ];
    let found = check(&files).unwrap();
    assert!(found.is_empty(), "false positives: {found:?}");

    // A module that is not in the map is refused.
    let files = vec![("unplaced.rs".to_string(), "fn f() {}\n".to_string())];
    assert!(check(&files).unwrap_err().contains("unplaced"));
}

/// The layer of the unit named `unit` (a key of [`LAYERS`]).
fn layer_of(unit: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, layer)| *layer)
        .expect("units come from LAYERS")
}

/// Every `.rs` file under `dir`, as (path relative to `src/`, text).
fn read_tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("src/ is readable") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap();
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file, from its place under `src/`.
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] {
        parts.pop();
    }
    parts
}

/// The [`LAYERS`] entry a module path belongs to: the longest one it
/// starts with.
fn unit_of(path: &[String]) -> Option<&'static str> {
    if path.is_empty() {
        return Some(CRATE_ROOT);
    }
    LAYERS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != CRATE_ROOT)
        .filter(|name| {
            let segs: Vec<&str> = name.split("::").collect();
            segs.len() <= path.len() && segs.iter().zip(path).all(|(a, b)| *a == b)
        })
        .max_by_key(|name| name.split("::").count())
}

/// Imports between different units that run up the layers or form a cycle
/// within one layer, each with where it is written (`file:line`).
type Found = BTreeMap<(String, String), Vec<String>>;

fn check(files: &[(String, String)]) -> Result<Found, String> {
    let mut test_only: Vec<Vec<String>> = Vec::new();
    let mut refs: Vec<Ref> = Vec::new();
    for (file, text) in files {
        let scan = scan_file(&module_of(file), text);
        test_only.extend(scan.test_only);
        refs.extend(scan.refs.into_iter().map(|mut r| {
            r.at = format!("src/{file}:{}", r.at);
            r
        }));
    }
    let is_test = |m: &[String]| test_only.iter().any(|t| m.starts_with(t));
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unplaced = BTreeSet::new();
    for r in refs.iter().filter(|r| !is_test(&r.from)) {
        let Some(from) = unit_of(&r.from) else {
            unplaced.insert(r.from.join("::"));
            continue;
        };
        // A path to the crate root itself (a glob of it) names no module.
        if r.to.is_empty() || r.to[0] == "*" {
            continue;
        }
        let Some(to) = unit_of(&r.to) else {
            unplaced.insert(r.to[0].clone());
            continue;
        };
        if from != to {
            let wheres = edges.entry((from.to_string(), to.to_string())).or_default();
            if !wheres.contains(&r.at) {
                wheres.push(r.at.clone());
            }
        }
    }
    for (file, _) in files {
        let m = module_of(file);
        if !is_test(&m) && unit_of(&m).is_none() {
            unplaced.insert(m.join("::"));
        }
    }
    if !unplaced.is_empty() {
        return Err(format!(
            "modules not in the layer map (add them to LAYERS in tests/layering.rs and to docs/architecture.md): {}",
            unplaced.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut found = Found::new();
    for ((from, to), wheres) in &edges {
        let (lf, lt) = (layer_of(from), layer_of(to));
        let violates = lt > lf || (lt == lf && reaches(&edges, to, from));
        if violates {
            found.insert((from.clone(), to.clone()), wheres.clone());
        }
    }
    Ok(found)
}

/// Whether `from` reaches `to` through imports within one layer.
fn reaches(edges: &BTreeMap<(String, String), Vec<String>>, from: &str, to: &str) -> bool {
    let layer = layer_of(from);
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if !seen.insert(n.clone()) {
            continue;
        }
        for (a, b) in edges.keys() {
            if *a == n && layer_of(b) == layer {
                stack.push(b.clone());
            }
        }
    }
    false
}

/// One path into the crate: from the module it is written in to the
/// module path it names.
struct Ref {
    from: Vec<String>,
    to: Vec<String>,
    at: String,
}

struct Scan {
    refs: Vec<Ref>,
    /// Child modules declared `#[cfg(test)] mod x;`.
    test_only: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Reads the paths into the crate out of one file whose module path is
/// `module`.
fn scan_file(module: &[String], text: &str) -> Scan {
    let toks = tokens(&code_only(text));
    let mut refs = Vec::new();
    let mut test_only = Vec::new();
    // Inline modules we are in: (name, brace depth inside it).
    let mut inline: Vec<(String, i32)> = Vec::new();
    // Child modules declared by `mod x;` or `mod x {`, by parent module.
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut depth = 0i32;
    let mut i = 0;
    let here = |inline: &Vec<(String, i32)>| -> Vec<String> {
        let mut m = module.to_vec();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        let (tok, line) = &toks[i];
        // `#[cfg(test)]`: skip the item it guards.
        if is_cfg_test(&toks, i) {
            let mut j = i + 7;
            while matches!(toks.get(j), Some((Tok::Punct('#'), _))) {
                j = skip_attr(&toks, j);
            }
            if let Some(name) = mod_decl(&toks, j) {
                let mut m = here(&inline);
                m.push(name);
                test_only.push(m);
            }
            i = skip_item(&toks, j);
            continue;
        }
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some((Tok::Ident(name), _)) = toks.get(i + 1) {
                    children
                        .entry(here(&inline))
                        .or_default()
                        .insert(name.clone());
                    if matches!(toks.get(i + 2), Some((Tok::Punct('{'), _))) {
                        inline.push((name.clone(), depth + 1));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(w) => {
                let prev = i.checked_sub(1).map(|p| &toks[p].0);
                let starts = !matches!(prev, Some(Tok::PathSep) | Some(Tok::Punct('$')));
                let next_sep = matches!(toks.get(i + 1), Some((Tok::PathSep, _)));
                let m = here(&inline);
                let is_child = children.get(&m).is_some_and(|c| c.contains(w));
                if starts && next_sep && (w == "crate" || w == "super" || w == "self" || is_child) {
                    let (paths, end) = path_tree(&toks, i + 2);
                    for p in paths {
                        let to = match w.as_str() {
                            "crate" => resolve(&[], &p),
                            "super" => {
                                let mut base = m.clone();
                                base.pop();
                                resolve(&base, &p)
                            }
                            "self" => resolve(&m, &p),
                            child => {
                                let mut base = m.clone();
                                base.push(child.to_string());
                                resolve(&base, &p)
                            }
                        };
                        refs.push(Ref {
                            from: m.clone(),
                            to,
                            at: line.to_string(),
                        });
                    }
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scan { refs, test_only }
}

/// `base` joined with `path`, whose leading `super`s climb from `base`.
fn resolve(base: &[String], path: &[String]) -> Vec<String> {
    let mut out = base.to_vec();
    let mut rest = path;
    while let Some((first, tail)) = rest.split_first() {
        match first.as_str() {
            "super" => {
                out.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = tail;
    }
    out.extend(rest.iter().cloned());
    out
}

/// The paths of a use tree or a path starting at `toks[i]` (just after
/// `prefix::`), and the index after it. `a::{b::c, d}` gives `a::b::c` and
/// `a::d`.
fn path_tree(toks: &[(Tok, usize)], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    loop {
        match toks.get(i) {
            Some((Tok::Ident(w), _)) => {
                segs.push(w.clone());
                i += 1;
                if matches!(toks.get(i), Some((Tok::PathSep, _))) {
                    i += 1;
                    continue;
                }
                return (vec![segs], i);
            }
            Some((Tok::Punct('*'), _)) => {
                segs.push("*".to_string());
                return (vec![segs], i + 1);
            }
            Some((Tok::Punct('{'), _)) => {
                i += 1;
                let mut out = Vec::new();
                loop {
                    match toks.get(i) {
                        None => return (out, i),
                        Some((Tok::Punct('}'), _)) => return (out, i + 1),
                        Some((Tok::Punct(','), _)) => i += 1,
                        Some((Tok::Ident(w), _)) if w == "as" => i += 2,
                        Some(_) => {
                            let (subs, end) = path_tree(toks, i);
                            for s in subs {
                                let mut full = segs.clone();
                                full.extend(s);
                                out.push(full);
                            }
                            i = end.max(i + 1);
                        }
                    }
                }
            }
            _ => return (vec![segs], i),
        }
    }
}

/// Whether `#[cfg(test)]` starts at `toks[i]`.
fn is_cfg_test(toks: &[(Tok, usize)], i: usize) -> bool {
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.len() >= i + want.len() && toks[i..i + want.len()].iter().map(|t| &t.0).eq(want.iter())
}

/// The index after the attribute `#[…]` starting at `toks[i]`.
fn skip_attr(toks: &[(Tok, usize)], i: usize) -> usize {
    let mut j = i + 1;
    let mut depth = 0;
    while let Some((t, _)) = toks.get(j) {
        match t {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The name of a `mod name;` declaration starting at `toks[i]` (after a
/// visibility), if that is what is there.
fn mod_decl(toks: &[(Tok, usize)], mut i: usize) -> Option<String> {
    if matches!(toks.get(i), Some((Tok::Ident(w), _)) if w == "pub") {
        i += 1;
        if matches!(toks.get(i), Some((Tok::Punct('('), _))) {
            while !matches!(toks.get(i), Some((Tok::Punct(')'), _)) | None) {
                i += 1;
            }
            i += 1;
        }
    }
    match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
        (Some((Tok::Ident(m), _)), Some((Tok::Ident(name), _)), Some((Tok::Punct(';'), _)))
            if m == "mod" =>
        {
            Some(name.clone())
        }
        _ => None,
    }
}

/// The index after the item starting at `toks[i]`: its `;`, or the `}`
/// that closes its first block.
fn skip_item(toks: &[(Tok, usize)], i: usize) -> usize {
    let mut j = i;
    let mut depth = 0;
    while let Some((t, _)) = toks.get(j) {
        match t {
            Tok::Punct(';') if depth == 0 => return j + 1,
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// Identifiers, `::` and single punctuation, each with its line.
fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// `text` with comments, string and character literals blanked out
/// (newlines kept, so lines still count).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '\''
            && (c.get(i + 1) == Some(&'\\')
                || (c.get(i + 2) == Some(&'\'') && c.get(i + 1).is_some()))
        {
            // A character literal ('x', '\n', '\u{1F600}'); a lifetime has
            // no closing quote and stays.
            let mut j = i + 1;
            if c[j] == '\\' {
                j += 2;
            } else {
                j += 1;
            }
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            for &ch in &c[i..(j + 1).min(c.len())] {
                blank(&mut out, ch);
            }
            i = j + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}
