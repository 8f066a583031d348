//! The Rust SDK is ready for `cargo publish`: it packages with the WIT it implements (its
//! `wit` links to plughost's `wit/`), and the packaged crate builds on its own, outside this
//! repository's layout.

use std::path::Path;
use std::process::Command;

#[test]
fn the_rust_sdk_packages_with_its_wit_and_builds_on_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let list = Command::new(&cargo)
        .args(["package", "--list", "--allow-dirty"])
        .current_dir(root.join("plugin-guest-sdk"))
        .output()
        .expect("run cargo package --list");
    let files = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    for needed in [
        "wit/plugin.wit",
        "wit/deps/keyvalue/store.wit",
        "src/lib.rs",
        "README.md",
    ] {
        assert!(
            files.lines().any(|l| l == needed),
            "{needed} not packaged:\n{files}"
        );
    }
    // `cargo package` builds the packaged copy in its own directory.
    let built = Command::new(&cargo)
        .args(["package", "--allow-dirty", "--target-dir"])
        .arg(root.join("plugins/target/sdk-package"))
        .current_dir(root.join("plugin-guest-sdk"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo package");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}
