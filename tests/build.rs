//! Builds the guest plugins (examples and test plugins) from source for wasm32-wasip2, once per
//! test build, in their own workspace and target dir, and tells the tests where they are.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    for watched in [
        "wit",
        "plugin-guest-sdk/src",
        "plugin-guest-sdk/Cargo.toml",
        "plugins/Cargo.toml",
        "plugins/rust",
        "plugins/test",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let manifest = root.join("plugins/Cargo.toml");
    let target_dir = root.join("plugins/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo for the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins failed; is the target installed? `rustup target add wasm32-wasip2` (make test does)"
    );
    println!(
        "cargo:rustc-env=PLUGHOST_TEST_PLUGINS={}",
        target_dir.join("wasm32-wasip2/release").display()
    );
}
