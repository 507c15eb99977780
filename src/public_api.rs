//! The embedding API, checked: the items re-exported at the crate root are the stable surface, and
//! `docs/embedding.md` lists each of them (section "The stable API", as `` `trellis::Name` ``). A test fails
//! when an item is added to the root without being listed, when a listed item is gone, and when a module is
//! made public without `#[doc(hidden)]` (which would put it in the documented surface by the back door).
//!
//! The check reads the sources rather than `cargo doc`'s output: rustdoc's JSON needs a nightly toolchain and
//! a second compilation of every dependency, which the 2-core CI cannot afford. What it does not check: the
//! methods of the root types (a `pub fn` added to `Application` is not caught).

use std::collections::BTreeSet;

/// The names a `pub use` line of the root exports (`a::b::{C, D as E}` → C, E).
fn exported(line: &str) -> Vec<String> {
    let path = line
        .trim()
        .trim_start_matches("pub use ")
        .trim_end_matches(';');
    let items = match (path.find('{'), path.rfind('}')) {
        (Some(open), Some(close)) => path[open + 1..close].to_owned(),
        _ => path.rsplit("::").next().unwrap_or_default().to_owned(),
    };
    items
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| i.rsplit(" as ").next().unwrap_or(i).to_owned())
        .collect()
}

/// The names the root's `pub use` statements export (a statement may span lines, as rustfmt wraps it).
fn root_api(lib: &str) -> BTreeSet<String> {
    lib.split(';')
        .filter_map(|statement| {
            let last_line_start = statement.trim_start_matches('\n');
            let at = last_line_start
                .match_indices("pub use ")
                .find(|(i, _)| *i == 0 || last_line_start.as_bytes()[i - 1] == b'\n')?
                .0;
            Some(last_line_start[at..].replace('\n', " "))
        })
        .flat_map(|s| exported(&s))
        .collect()
}

fn documented_api(doc: &str) -> BTreeSet<String> {
    let Some(start) = doc.find("## The stable API") else {
        return BTreeSet::new();
    };
    let section = &doc[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.strip_prefix("trellis::"))
        .map(|name| {
            name.split(['(', ':', '<', ' '])
                .next()
                .unwrap_or(name)
                .to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn every_item_of_the_root_is_listed_in_the_embedding_guide_and_every_module_is_hidden() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let doc = std::fs::read_to_string(root.join("docs/embedding.md")).expect("docs/embedding.md");
    let api = root_api(&lib);
    let listed = documented_api(&doc);
    let unlisted: Vec<_> = api.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&api).collect();
    assert!(
        unlisted.is_empty(),
        "public at the crate root but not listed in docs/embedding.md (\"The stable API\"): {unlisted:?}"
    );
    assert!(
        gone.is_empty(),
        "listed in docs/embedding.md but not at the crate root: {gone:?}"
    );
    assert!(api.len() >= 20, "the root API was read: {api:?}");

    let lines: Vec<&str> = lib.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("pub mod ") {
            let hidden = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#["))
                .any(|l| l.contains("doc(hidden)"));
            assert!(hidden, "`{line}` is public without #[doc(hidden)]");
        }
        for item in [
            "pub fn ",
            "pub struct ",
            "pub enum ",
            "pub trait ",
            "pub type ",
            "pub const ",
        ] {
            assert!(
                !line.starts_with(item),
                "`{line}`: the root defines nothing itself; re-export the item and list it"
            );
        }
    }
}

#[test]
fn the_export_reader_reads_groups_renames_and_single_items() {
    assert_eq!(exported("pub use a::b::{C, D as E};"), ["C", "E"]);
    assert_eq!(exported("pub use a::run as backtest;"), ["backtest"]);
    assert_eq!(exported("pub use a::b::C;"), ["C"]);
    let lib = "//! doc\npub use a::{\n    B,\n    C as D,\n};\n#[doc(hidden)]\npub mod x;\npub use e::F;\n";
    let api: Vec<_> = root_api(lib).into_iter().collect();
    assert_eq!(api, ["B", "D", "F"]);
}
