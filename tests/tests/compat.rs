//! The compatibility promise of `wit/plugin.wit` ("it grows by adding"): the example plugins
//! as built by every earlier version, committed under `tests/fixtures/compat/VERSION/` and
//! never rebuilt, load and answer in the current host. A WIT change that breaks one of them
//! fails here.

use std::path::{Path, PathBuf};

use plughost_e2e::Plughost;

/// Every version folder of fixtures.
fn versions() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/compat");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures in {}", root.display());
    dirs
}

fn entry(dir: &Path, name: &str, rest: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\n{rest}\n",
        dir.join(format!("{name}.wasm")).display().to_string()
    )
}

#[tokio::test]
async fn plugins_built_by_earlier_versions_still_load_and_answer() {
    for dir in versions() {
        let version = dir.file_name().unwrap().to_string_lossy().into_owned();
        let config = entry(
            &dir,
            "ratelimit",
            "keyvalue = [\"limits\"]\nconfig = { limit = 2, window_secs = 3600 }",
        ) + &entry(&dir, "auth", "config = { keys = [\"k1\"] }")
            + &entry(
                &dir,
                "headers",
                "config = { response = { name = \"x-compat\", value = \"yes\" } }",
            )
            + &entry(&dir, "hello", "kind = \"responder\"")
            + "[keyvalue.limits]\n[[routes]]\nprefix = \"/hello\"\nplugin = \"hello\"\n";
        let server = Plughost::start(&config);
        let plugins = server.admin_json("/plugins").await;
        assert_eq!(
            plugins.as_array().map(Vec::len),
            Some(4),
            "{version}: {plugins}"
        );
        let client = reqwest::Client::new();
        let refused = client.get(server.url("/hello/x")).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{version}");
        let ok = client
            .get(server.url("/hello/x?y"))
            .header("x-api-key", "k1")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{version}");
        assert_eq!(ok.headers()["x-compat"], "yes", "{version}");
        assert_eq!(
            ok.text().await.unwrap(),
            "Hello from plughost! You asked for /hello/x?y\n",
            "{version}"
        );
        // The rate limit runs first: two requests counted (the refused one too), the third
        // is over it.
        let limited = client
            .get(server.url("/hello/z"))
            .header("x-api-key", "k1")
            .send()
            .await
            .unwrap();
        assert_eq!(limited.status(), 429, "{version}");
    }
}
