//! The tree shows the layers (issue 16 item 6): every library module sits on one layer
//! of ARCHITECTURE.md's "Layers" table and uses only its own layer and the layers listed
//! before it; command-line code (clap, indicatif) lives in the binary only.
//!
//! The table is read from ARCHITECTURE.md, so the map and the check cannot drift. The
//! sources are read as text: comments and literals are blanked, then every path that
//! starts with `crate::`, `super::`, `self::` or a child module's name is resolved to a
//! module and looked up in the table (the longest listed prefix decides: a submodule
//! not listed shares its parent's layer).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer map: module path (`pdp::state`) → (layer index, layer name).
struct Layers {
    of: BTreeMap<String, (usize, String)>,
}

impl Layers {
    /// Reads the table that follows the `## Layers` heading: one row per layer, lowest
    /// first, its modules in backticks in the second column.
    fn parse(markdown: &str) -> Result<Layers, String> {
        let mut of = BTreeMap::new();
        let mut in_section = false;
        let mut rows = 0;
        for line in markdown.lines() {
            if line.starts_with("## ") {
                in_section = line.trim() == "## Layers";
                continue;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if !in_section || cells.len() < 4 || cells[1] == "layer" || cells[1].starts_with("---") {
                continue;
            }
            let name = cells[1].to_string();
            for m in cells[2].split('`').skip(1).step_by(2) {
                if let Some((_, other)) = of.insert(m.to_string(), (rows, name.clone())) {
                    return Err(format!("`{m}` is listed twice (on {other} and on {name})"));
                }
            }
            rows += 1;
        }
        if rows == 0 {
            return Err("no `## Layers` table".to_string());
        }
        Ok(Layers { of })
    }

    /// The entry that places `module` (a path of segments): its longest listed prefix.
    fn place(&self, module: &[String]) -> Option<(&str, usize, &str)> {
        (1..=module.len()).rev().find_map(|n| {
            let key = module[..n].join("::");
            self.of
                .get_key_value(&key)
                .map(|(k, (i, name))| (k.as_str(), *i, name.as_str()))
        })
    }
}

/// One source file of the crate, by its path under `src/`.
struct Source {
    /// e.g. `pdp/mod.rs`.
    path: String,
    text: String,
}

/// The module path of a file under `src/` (`pdp/mod.rs` → `pdp`, `pdp/eval.rs` →
/// `pdp::eval`, `lib.rs` → the root).
fn module_of(path: &str) -> Vec<String> {
    let p = path.strip_suffix(".rs").unwrap_or(path);
    let mut segs: Vec<String> = p.split('/').map(str::to_string).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// The source with comments and the insides of string and char literals replaced by
/// spaces (newlines kept, so line numbers stay right).
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let keep_newline = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        // A raw string (r"..", r#".."#, br".."): the quote after the `r` and its hashes.
        let raw = if prev_ident {
            None
        } else {
            let r = if at(i) == 'b' { i + 1 } else { i };
            let mut q = r + 1;
            while at(q) == '#' {
                q += 1;
            }
            (at(r) == 'r' && at(q) == '"').then_some((q - i + 1, q - r - 1))
        };
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep_newline(c[i]));
                    i += 1;
                }
            }
        } else if let Some((open, hashes)) = raw {
            out.push_str(&" ".repeat(open));
            i += open;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(keep_newline(c[i]));
                i += 1;
            }
        } else if at(i) == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    out.push(' ');
                    out.push(keep_newline(at(i + 1)));
                    i += 2;
                    continue;
                }
                let end = c[i] == '"';
                out.push(keep_newline(c[i]));
                i += 1;
                if end {
                    break;
                }
            }
        } else if at(i) == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A token and its line.
#[derive(Debug, Clone, PartialEq)]
struct Tok {
    text: String,
    line: usize,
}

fn tokens(blanked: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for (n, line) in blanked.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            if c[i].is_alphabetic() || c[i] == '_' {
                let s = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok {
                    text: c[s..i].iter().collect(),
                    line: n + 1,
                });
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                out.push(Tok {
                    text: "::".to_string(),
                    line: n + 1,
                });
                i += 2;
            } else if c[i].is_whitespace() {
                i += 1;
            } else {
                out.push(Tok {
                    text: c[i].to_string(),
                    line: n + 1,
                });
                i += 1;
            }
        }
    }
    out
}

/// The paths a use tree or an expression path names, from `t[*i]` on (after the
/// leading `crate::` or equivalent), each extending `prefix`, with the line of its
/// last segment.
fn use_tree(t: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let line = t.get(i.saturating_sub(1)).map_or(0, |x| x.line);
    let Some(tok) = t.get(*i) else {
        out.push((prefix, line));
        return;
    };
    if tok.text == "{" {
        *i += 1;
        while let Some(tok) = t.get(*i) {
            match tok.text.as_str() {
                "}" => {
                    *i += 1;
                    return;
                }
                "," => *i += 1,
                _ => {
                    let before = *i;
                    use_tree(t, i, prefix.clone(), out);
                    if *i == before {
                        *i += 1;
                    }
                }
            }
        }
    } else if is_ident(&tok.text) {
        let mut p = prefix;
        p.push(tok.text.clone());
        *i += 1;
        if t.get(*i).is_some_and(|x| x.text == "::") {
            *i += 1;
            use_tree(t, i, p, out);
        } else {
            out.push((p, tok.line));
        }
    } else {
        // `*`, or the `<` of a turbofish: the path so far.
        out.push((prefix, line));
    }
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// One reference from a module to another, with where it is written.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    line: usize,
    from: Vec<String>,
    to: Vec<String>,
}

/// Every module path `src` names through `crate::`, `super::`, `self::` or a child
/// module's name; `file_module` is the file's module, `modules` every module of the
/// crate (for child names).
fn references(src: &str, file_module: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<Reference> {
    let t = tokens(&blank(src));
    let mut out = Vec::new();
    // Inline modules (`mod tests { ... }`): (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let here: Vec<String> = file_module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _)| m.clone()))
            .collect();
        let prev = if i > 0 { t[i - 1].text.as_str() } else { "" };
        let text = t[i].text.as_str();
        match text {
            "{" => depth += 1,
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "mod" if t.get(i + 2).is_some_and(|x| x.text == "{") => {
                inline.push((t[i + 1].text.clone(), depth + 1));
                depth += 1;
                i += 3;
                continue;
            }
            _ => {}
        }
        let starts_path = prev != "::" && prev != "$" && t.get(i + 1).is_some_and(|x| x.text == "::");
        if !starts_path || !is_ident(text) {
            i += 1;
            continue;
        }
        let base: Option<Vec<String>> = match text {
            "crate" => {
                i += 2;
                Some(Vec::new())
            }
            "self" => {
                i += 2;
                Some(here.clone())
            }
            "super" => {
                let mut b = here.clone();
                while t.get(i).is_some_and(|x| x.text == "super")
                    && t.get(i + 1).is_some_and(|x| x.text == "::")
                {
                    b.pop();
                    i += 2;
                }
                Some(b)
            }
            child => {
                let mut p = here.clone();
                p.push(child.to_string());
                if modules.contains(&p) {
                    i += 2;
                    Some(p)
                } else {
                    None
                }
            }
        };
        let Some(base) = base else {
            i += 1;
            continue;
        };
        let mut paths = Vec::new();
        use_tree(&t, &mut i, base, &mut paths);
        for (to, line) in paths {
            out.push(Reference {
                line,
                from: here.clone(),
                to,
            });
        }
    }
    out
}

/// The files of the binary: `main.rs`, the modules it declares, and `bin/`.
fn is_binary(path: &str, binary_mods: &BTreeSet<String>) -> bool {
    let top = module_of(path).first().cloned().unwrap_or_default();
    path == "main.rs" || path.starts_with("bin/") || binary_mods.contains(&top)
}

/// The modules `main.rs` declares (`mod cli;`).
fn binary_modules(main: &str) -> BTreeSet<String> {
    let t = tokens(&blank(main));
    t.windows(3)
        .filter(|w| w[0].text == "mod" && w[2].text == ";")
        .map(|w| w[1].text.clone())
        .collect()
}

/// Every breach of the layering in `files` (paths under `src/`), one line each.
fn check(layers: &Layers, files: &[Source]) -> Vec<String> {
    let main = files
        .iter()
        .find(|f| f.path == "main.rs")
        .map(|f| f.text.as_str())
        .unwrap_or("");
    let binary_mods = binary_modules(main);
    let library: Vec<&Source> = files
        .iter()
        .filter(|f| !is_binary(&f.path, &binary_mods) && f.path != "lib.rs")
        .collect();
    let modules: BTreeSet<Vec<String>> = library.iter().map(|f| module_of(&f.path)).collect();
    let mut bad = Vec::new();
    for f in &library {
        let module = module_of(&f.path);
        let Some((_, layer, layer_name)) = layers.place(&module) else {
            bad.push(format!(
                "src/{}: module `{}` is on no layer of ARCHITECTURE.md's table",
                f.path,
                module.join("::")
            ));
            continue;
        };
        for line in tokens(&blank(&f.text)) {
            if line.text == "clap" || line.text == "indicatif" {
                bad.push(format!(
                    "src/{}:{}: `{}` in the library (command-line code belongs to the binary)",
                    f.path, line.line, line.text
                ));
            }
        }
        for r in references(&f.text, &module, &modules) {
            let to = r.to.join("::");
            let from = r.from.join("::");
            match layers.place(&r.to) {
                None => bad.push(format!(
                    "src/{}:{}: `{from}` uses `{to}`, which is on no layer",
                    f.path, r.line
                )),
                Some((_, l, name)) if l > layer => bad.push(format!(
                    "src/{}:{}: `{from}` ({layer_name}) uses `{to}` ({name}): an upward import",
                    f.path, r.line
                )),
                Some(_) => {}
            }
        }
    }
    bad
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            out.push(Source {
                path: rel,
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn imports_point_down_the_layers_of_architecture_md() {
    let md = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let layers = Layers::parse(&md).unwrap();
    let src = repo().join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    assert!(files.len() > 20, "read only {} files", files.len());
    let bad = check(&layers, &files);
    assert!(
        bad.is_empty(),
        "{} breaches of the layering:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Every module `lib.rs` declares is on the table (the file walk would catch it too;
/// this names the table's gap plainly).
#[test]
fn every_library_module_is_on_a_layer() {
    let md = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let layers = Layers::parse(&md).unwrap();
    let lib = std::fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    let declared: Vec<String> = tokens(&blank(&lib))
        .windows(3)
        .filter(|w| w[0].text == "mod" && w[2].text == ";")
        .map(|w| w[1].text.clone())
        .collect();
    assert!(declared.len() > 10);
    let missing: Vec<&String> = declared
        .iter()
        .filter(|m| layers.place(std::slice::from_ref(m)).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "not on ARCHITECTURE.md's layer table: {missing:?}"
    );
}

// The checker itself, on a made-up tree: it must be able to fail.

const TABLE: &str = "\
# Title

## Layers

| layer | modules |
|---|---|
| base | `model` |
| state | `world`, `pdp::state` |
| decide | `pdp` |
| change | `mutate`, `absent` |

## Next
| x | `mutate` is not read here | y |
";

fn src(path: &str, text: &str) -> Source {
    Source {
        path: path.to_string(),
        text: text.to_string(),
    }
}

fn synthetic(extra: Source) -> Vec<String> {
    let layers = Layers::parse(TABLE).unwrap();
    let files = vec![
        src("main.rs", "mod cli;\nuse clap::Parser;\nfn main() {}\n"),
        src(
            "cli/mod.rs",
            "use indicatif::ProgressBar;\nuse delegraph::mutate;\n",
        ),
        src(
            "lib.rs",
            "pub mod model;\npub mod world;\npub mod pdp;\npub mod mutate;\n",
        ),
        src("model.rs", "pub struct Error;\n"),
        src(
            "mutate.rs",
            "use crate::{model::Error, world::World};\npub struct Tx;\n",
        ),
        src(
            "pdp/mod.rs",
            "pub mod state;\npub use state::PdpState;\nuse crate::world::World;\n",
        ),
        extra,
    ];
    check(&layers, &files)
}

#[test]
fn the_checker_passes_a_downward_tree() {
    let ok = synthetic(src(
        "world.rs",
        "use crate::model::Error;\nuse crate::pdp::state::PdpState;\n// use crate::mutate::Tx;\nconst S: &str = \"crate::mutate::Tx\";\nfn f<'a>(c: char) -> bool { c == '{' }\n",
    ));
    assert_eq!(ok, Vec::<String>::new());
}

#[test]
fn the_checker_flags_a_synthetic_upward_import() {
    let bad = synthetic(src(
        "world.rs",
        "use crate::model::Error;\n\nuse crate::{\n    pdp::state::PdpState,\n    mutate::Tx,\n};\n",
    ));
    assert_eq!(
        bad,
        vec!["src/world.rs:5: `world` (state) uses `mutate::Tx` (change): an upward import".to_string()]
    );
}

#[test]
fn the_checker_flags_upward_paths_through_super_self_and_children() {
    // A state submodule naming its parent's item, in a test module too.
    let bad = synthetic(src(
        "pdp/state.rs",
        "pub struct PdpState;\nfn f() { let _ = super::decide(); }\n#[cfg(test)]\nmod tests {\n    use super::super::Api;\n    use super::PdpState;\n}\n",
    ));
    assert_eq!(
        bad,
        vec![
            "src/pdp/state.rs:2: `pdp::state` (state) uses `pdp::decide` (decide): an upward import"
                .to_string(),
            "src/pdp/state.rs:5: `pdp::state::tests` (state) uses `pdp::Api` (decide): an upward import"
                .to_string(),
        ]
    );
    // A parent re-exporting a child from a higher layer.
    let bad = synthetic(src("world/mod.rs", "pub mod sub;\npub use sub::Thing;\n"));
    assert_eq!(bad, Vec::<String>::new(), "world::sub is not a file here");
    let layers = Layers::parse(TABLE).unwrap();
    let files = vec![
        src("world.rs", "pub mod apply;\npub use apply::go;\n"),
        src("world/apply.rs", "pub fn go() {}\n"),
    ];
    let layers2 =
        Layers::parse(&TABLE.replace("`pdp::state` |", "`pdp::state` |\n| top | `world::apply` |")).unwrap();
    assert_eq!(check(&layers, &files), Vec::<String>::new());
    assert_eq!(
        check(&layers2, &files),
        vec!["src/world.rs:2: `world` (state) uses `world::apply::go` (top): an upward import".to_string()]
    );
}

#[test]
fn the_checker_flags_command_line_crates_and_unlisted_modules_in_the_library() {
    let bad = synthetic(src(
        "generate.rs",
        "#[derive(clap::ValueEnum)]\npub enum Scale { Small }\nuse crate::model::Error;\n",
    ));
    assert_eq!(
        bad,
        vec!["src/generate.rs: module `generate` is on no layer of ARCHITECTURE.md's table".to_string()]
    );
    let bad = synthetic(src(
        "mutate/bars.rs",
        "// indicatif is named here only\nfn f() { indicatif::ProgressBar::new(1); }\n",
    ));
    assert_eq!(
        bad,
        vec![
            "src/mutate/bars.rs:2: `indicatif` in the library (command-line code belongs to the binary)"
                .to_string()
        ]
    );
    // The binary may use both, and anything of the library.
    let files_ok = synthetic(src("model/extra.rs", "use crate::model::Error;\n"));
    assert_eq!(files_ok, Vec::<String>::new());
}

#[test]
fn a_module_listed_twice_is_refused() {
    let twice = TABLE.replace("`mutate`, `absent`", "`mutate`, `world`");
    let e = Layers::parse(&twice).err().unwrap();
    assert!(e.contains("`world` is listed twice"), "{e}");
    // A table entry without a file (`absent`) is fine: see the synthetic trees above.
    assert!(Layers::parse("# nothing\n").is_err());
}
