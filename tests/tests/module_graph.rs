//! The import-cycle check `make test` runs (`scripts/module-graph.py`): it passes on the host
//! crate, and it fails, naming the modules, on a crate whose files import each other, at
//! either level it checks (files, top-level modules), while a directory's `mod.rs` that only
//! re-exports its files is no cycle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(src: &Path) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/module-graph.py"))
        .arg(src)
        .output()
        .expect("python3 runs the module-graph check")
}

/// A crate in a temp dir with `files` (path under src, text).
fn krate(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_host_crate_has_no_import_cycle() {
    let out = check(&repo().join("host/src"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no import cycle"));
}

#[test]
fn two_files_importing_each_other_are_named() {
    let dir = krate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "use crate::a::A;\npub struct B;\n"),
    ]);
    let out = check(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cycle passed");
    assert!(stderr.contains("import cycle among 2 modules"), "{stderr}");
    assert!(
        stderr.contains("a -> b") && stderr.contains("b -> a"),
        "{stderr}"
    );
}

#[test]
fn a_child_using_its_parents_items_is_a_cycle_a_re_export_is_not() {
    // `store.rs` shares what `flow.rs` needs; `mod.rs` only re-exports: no cycle.
    let layered = krate(&[
        ("lib.rs", "mod cache;\n"),
        (
            "cache/mod.rs",
            "mod flow;\nmod store;\npub use flow::Flow;\npub use store::Store;\n",
        ),
        ("cache/store.rs", "pub struct Store;\n"),
        (
            "cache/flow.rs",
            "use super::store::Store;\npub struct Flow(Store);\n",
        ),
    ]);
    assert!(check(layered.path()).status.success());
    // The same with `Store` defined in `mod.rs`, which `flow.rs` then imports back.
    let looped = krate(&[
        ("lib.rs", "mod cache;\n"),
        (
            "cache/mod.rs",
            "mod flow;\npub use flow::Flow;\npub struct Store;\n",
        ),
        (
            "cache/flow.rs",
            "use super::Store;\npub struct Flow(Store);\n",
        ),
    ]);
    let out = check(looped.path());
    assert!(!out.status.success(), "a parent/child cycle passed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache::flow -> cache"));
}

#[test]
fn top_level_modules_importing_each_other_through_their_files_are_named() {
    // No two files import each other, but `a` (through a/x.rs) and `b` (through b/y.rs) do.
    let dir = krate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a/mod.rs", "pub mod x;\n"),
        ("a/x.rs", "use crate::b::y::Y;\npub struct X;\n"),
        ("b/mod.rs", "pub mod y;\npub mod z;\n"),
        ("b/y.rs", "pub struct Y;\n"),
        ("b/z.rs", "use crate::a::x::X;\npub struct Z;\n"),
    ]);
    let out = check(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a top-level cycle passed");
    assert!(stderr.contains("top-level module import cycle"), "{stderr}");
}

#[test]
fn test_modules_do_not_count() {
    let dir = krate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "b.rs",
            "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
        ),
    ]);
    assert!(check(dir.path()).status.success());
}
