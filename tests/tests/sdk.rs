//! The SDKs as their ecosystems expect them. The Rust SDK is ready for `cargo publish`: it
//! packages with the WIT it implements (its `wit` links to plughost's `wit/`), and the
//! packaged crate builds on its own, outside this repository's layout. The Go SDK passes its
//! own tests.

use std::path::Path;
use std::process::Command;

use plughost_e2e::{Plughost, js_plugin, python_plugin};

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

/// The Go SDK's own tests (its helpers, on the host: outside WebAssembly `Log` writes to
/// standard error), and `go vet` of its WebAssembly side.
#[test]
fn the_go_sdk_passes_its_tests_and_vet() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-guest-sdk/go");
    let test = Command::new("go")
        .args(["test", "./..."])
        .current_dir(&sdk)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go test (make setup installs Go)");
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let vet = Command::new("go")
        .args(["vet", "./..."])
        .current_dir(&sdk)
        .env("GOTOOLCHAIN", "local")
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .output()
        .expect("run go vet");
    assert!(
        vet.status.success(),
        "{}",
        String::from_utf8_lossy(&vet.stderr)
    );
}

/// The Python and JavaScript SDKs, each through a filter calling every helper
/// (`plugins/{python,js}/sdk-check`), built with the SDK as a plugin author builds it, in the
/// real server: config, log, text, json, respond, header and next with its three edits.
#[tokio::test]
async fn the_python_and_javascript_sdks_helpers_work_in_the_server() {
    for (lang, file) in [
        ("python", python_plugin("sdk-check")),
        ("js", js_plugin("sdk-check")),
    ] {
        let config = format!(
            "debug_routes = true\n[[plugins]]\nname = \"sdk\"\nfile = {:?}\nconfig = {{ tag = \"t-{lang}\" }}\n",
            file.display().to_string()
        );
        let server = Plughost::start(&config);
        let client = reqwest::Client::new();
        let text = client.get(server.url("/sdk/text")).send().await.unwrap();
        assert_eq!(text.status(), 201, "{lang}");
        assert_eq!(text.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            text.headers()["x-extra"],
            "1",
            "{lang}: header names lower-cased"
        );
        assert_eq!(text.text().await.unwrap(), "plain\n");
        let json = client
            .get(server.url("/sdk/json"))
            .header("x-probe", "abc")
            .send()
            .await
            .unwrap();
        assert_eq!(json.headers()["content-type"], "application/json");
        let value: serde_json::Value = json.json().await.unwrap();
        assert_eq!(value["tag"], format!("t-{lang}"), "{lang}: config");
        assert_eq!(value["probe"], "abc", "{lang}: header lookup ignores case");
        let raw = client.get(server.url("/sdk/respond")).send().await.unwrap();
        assert_eq!(raw.status(), 418);
        assert_eq!(raw.headers()["content-type"], "application/octet-stream");
        assert_eq!(raw.bytes().await.unwrap().as_ref(), &[0u8, 1]);
        let passed = client
            .get(server.url("/_debug/headers"))
            .header("x-drop", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            passed.headers()["x-seen"],
            "sdk-check",
            "{lang}: response header"
        );
        let seen = passed.text().await.unwrap();
        assert!(seen.contains("x-set: yes"), "{lang}: {seen}");
        assert!(!seen.contains("x-drop"), "{lang}: {seen}");
        server.wait_log(&format!("sdk-check ({lang}) ready: t-{lang}"));
    }
}
