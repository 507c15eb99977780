//! The dependency rule, checked: every top-level module of the crate names the modules it may import, and a
//! test reads each file's `crate::…` paths (in `use` lines and in code, not in comments) and fails on one
//! that the rule does not allow. `docs/architecture.md` explains the layers; this table is what holds them.
//!
//! Dependencies point down: `domain` imports nothing, the HTTP layer is an adapter over `app`, and nothing
//! but `http`, `startup`, `demo`, `bench` and `main` imports the HTTP layer. A change that needs an arrow the
//! table does not have moves the shared piece down instead (a type into `domain`, a use case into `app`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module and the modules it may import (besides itself). Read from the bottom layer up.
const RULES: &[(&str, &[&str])] = &[
    // Pure types and maths: no I/O, no actors.
    ("domain", &[]),
    // Process settings (the tenant document lives in `domain::tenant`).
    ("config", &["domain"]),
    ("metrics", &["domain"]),
    // The supervision engine every actor runs under.
    ("runtime", &["config", "domain", "metrics"]),
    // The MT5 wire protocol.
    ("bridge", &["domain"]),
    // Stores, leases, the log tiers.
    ("storage", &["config", "domain", "metrics", "runtime"]),
    ("strategies", &["domain"]),
    (
        "models",
        &["config", "domain", "runtime", "storage", "strategies"],
    ),
    (
        "security",
        &[
            "config", "domain", "metrics", "models", "runtime", "storage",
        ],
    ),
    (
        "telemetry",
        &["config", "domain", "metrics", "runtime", "storage"],
    ),
    // The simulated terminal and the backtester (the live decision code over history).
    ("sim", &["bridge", "domain"]),
    (
        "backtest",
        &[
            "bridge",
            "config",
            "domain",
            "models",
            "runtime",
            "sim",
            "storage",
            "strategies",
        ],
    ),
    // The tenant's actors and the tree of tenants.
    (
        "actors",
        &[
            "bridge",
            "config",
            "domain",
            "metrics",
            "models",
            "runtime",
            "storage",
            "strategies",
        ],
    ),
    (
        "cluster",
        &[
            "actors", "config", "domain", "metrics", "runtime", "security", "storage",
        ],
    ),
    // The use cases, shared by REST, the client WebSocket and the jobs.
    (
        "app",
        &[
            "actors",
            "backtest",
            "bridge",
            "cluster",
            "config",
            "domain",
            "metrics",
            "models",
            "runtime",
            "security",
            "storage",
            "strategies",
        ],
    ),
    // The adapter: extract → app → reply.
    (
        "http",
        &[
            "actors",
            "app",
            "backtest",
            "bridge",
            "cluster",
            "config",
            "domain",
            "metrics",
            "models",
            "runtime",
            "security",
            "sim",
            "storage",
            "strategies",
        ],
    ),
];

/// The composition roots: they wire everything and may import anything (and the crate's own checks of its
/// shape: this one and `public_api`).
const ROOTS: &[&str] = &[
    "startup",
    "demo",
    "bench",
    "main",
    "lib",
    "layers",
    "public_api",
];

fn rule(module: &str) -> Option<&'static [&'static str]> {
    RULES.iter().find(|(m, _)| *m == module).map(|(_, a)| *a)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (`//`, `///`, `//!` and `/* */`); string literals are kept,
/// since `#[schemars(schema_with = "crate::…")]` is a dependency too.
fn code_of(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules a piece of code names through `crate::`, including those inside
/// `use crate::{a::…, b::…}` groups.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        // `$crate::` in macros and `trellis_crate::` are not this crate's paths.
        if code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// The top-level module a file belongs to (`src/http/api/mod.rs` → `http`, `src/config.rs` → `config`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 100,
        "the sources were found ({} files)",
        files.len()
    );
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if ROOTS.contains(&module.as_str()) {
            continue;
        }
        let Some(allowed) = rule(&module) else {
            violations.push(format!(
                "{}: module `{module}` has no rule in src/layers.rs (add it to RULES)",
                file.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(file).expect("readable source");
        for target in imported_modules(&code_of(&source)) {
            if target != module && !allowed.contains(&target.as_str()) {
                violations.push(format!(
                    "{}: `{module}` may not import `crate::{target}`",
                    file.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the dependency rule (docs/architecture.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_the_adapter_and_the_roots_import_the_http_layer() {
    for (module, allowed) in RULES {
        assert!(
            *module == "http" || !allowed.contains(&"http"),
            "`{module}` is allowed to import `http`"
        );
    }
}

#[test]
fn the_rule_table_has_no_circle() {
    // Every arrow goes to a module listed earlier in RULES: the table is a layering, not a graph.
    for (i, (module, allowed)) in RULES.iter().enumerate() {
        for target in *allowed {
            let position = RULES.iter().position(|(m, _)| m == target);
            assert!(
                position.is_some_and(|p| p < i),
                "`{module}` may import `{target}`, which is not below it in RULES"
            );
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_inline_paths_but_not_comments() {
    let code = code_of(
        "use crate::{domain::Bar, storage::{a, b}};\n// crate::bench::x\n/// [`crate::app`]\n\
         fn f() { crate::metrics::x(); let s = \"crate::config::y\"; }\n",
    );
    let found: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(found, ["config", "domain", "metrics", "storage"]);
}
