//! `plughost plugin new`: for each language, a project generated outside the repository is
//! built with its own `make` (the toolchains `make setup` installs), then checked, run and
//! served one request by the real binary.

use std::path::Path;
use std::process::Command;

use plughost_e2e::{Plughost, run};

/// Held by each language's test: building and compiling a Python or JavaScript component
/// takes most of both cores, and four at once would starve each other past the CLI's
/// deadlines.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Generates plugin `name` in `lang` as `kind` in a temp dir and builds it; returns the dir.
fn generate_and_build(lang: &str, kind: &str, name: &str) -> tempfile::TempDir {
    generate_and_build_with(lang, kind, name, &[])
}

/// [`generate_and_build`] with more `plugin new` flags.
fn generate_and_build_with(
    lang: &str,
    kind: &str,
    name: &str,
    extra: &[&str],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["plugin", "new", name, "--lang", lang, "--kind", kind];
    args.extend_from_slice(extra);
    let made = run(dir.path(), &args);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let project = dir.path().join(name);
    // The Rust projects share one target dir, so wit-bindgen is compiled once per test run.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/plugin-new");
    let built = Command::new("make")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &shared)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run make");
    assert!(
        built.status.success(),
        "make in the {lang} project failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(project.join(format!("{name}.wasm")).is_file());
    dir
}

/// `plugin check` and `plugin run` of the built plugin, then one request through a server.
async fn check_run_and_serve(dir: &Path, name: &str, kind: &str, expect: &str) {
    let project = dir.join(name);
    let wasm = project.join(format!("{name}.wasm"));
    let file = wasm.to_str().unwrap();
    let check = run(&project, &["plugin", "check", file]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let uri = format!("/{name}");
    let args = [
        "plugin",
        "run",
        file,
        "--uri",
        &uri,
        "--header",
        "host: localhost",
    ];
    let ran = run(&project, &args);
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(out.contains(expect), "{out}");
    // The project's own plughost.toml, with the test helper's port and log.
    let generated = std::fs::read_to_string(project.join("plughost.toml")).unwrap();
    assert!(
        generated.contains("\nbind = \"127.0.0.1\"\n"),
        "a development project serves loopback only: {generated}"
    );
    let config = served_here(&generated, &project).replace(
        &format!("file = \"{name}.wasm\""),
        &format!("file = {file:?}"),
    );
    let server = Plughost::start(&config);
    let resp = reqwest::get(server.url(&format!("/{name}"))).await.unwrap();
    match kind {
        "responder" | "wasi-http" | "service" => {
            assert_eq!(resp.status(), 200);
            assert!(resp.text().await.unwrap().contains(expect));
        }
        "middleware" => {
            // In front of the default page, whose 404 it marks.
            assert_eq!(resp.status(), 404);
            assert_eq!(resp.headers()[format!("x-{name}").as_str()], "1");
        }
        _ => {
            // A filter in front of the default page.
            assert_eq!(resp.status(), 404);
            assert_eq!(resp.headers()[format!("x-{name}").as_str()], "seen");
        }
    }
}

/// A generated project's plughost.toml as the test helper serves it: its port and log the
/// helper's, its plugins from the project's folder.
fn served_here(generated: &str, project: &Path) -> String {
    generated.replace("port = 9090\n", "").replace(
        "plugins_dir = \".\"\n",
        &format!("plugins_dir = {:?}\n", project.display().to_string()),
    )
}

#[tokio::test]
async fn a_rust_responder_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("rust", "responder", "greeter");
    // Built on the Rust SDK (copied in), keeping function names for trap backtraces.
    let project = dir.path().join("greeter");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("plughost-plugin-sdk = { path = \"plughost-sdk\" }"),
        "{manifest}"
    );
    let wasm = std::fs::read(project.join("greeter.wasm")).unwrap();
    assert!(
        wasm.windows(5).any(|w| w == b"\x04name"),
        "no name section: traps would show <wasm function N>"
    );
    check_run_and_serve(
        dir.path(),
        "greeter",
        "responder",
        "Hello from greeter! You asked for /greeter",
    )
    .await;
}

#[tokio::test]
async fn a_rust_filter_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("rust", "filter", "marker");
    check_run_and_serve(
        dir.path(),
        "marker",
        "filter",
        "add response header x-marker: seen",
    )
    .await;
}

/// `--kind wasi-http`: a standard wasi:http component (the `wasi` crate), checked as one,
/// run, and served on its route.
#[tokio::test]
async fn a_rust_wasi_http_component_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("rust", "wasi-http", "edge");
    let project = dir.path().join("edge");
    assert!(!project.join("wit").exists() && !project.join("plughost-sdk").exists());
    let check = run(&project, &["plugin", "check", "edge.wasm"]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("kind: wasi-http"));
    check_run_and_serve(
        dir.path(),
        "edge",
        "wasi-http",
        "Hello from edge! You asked for /edge",
    )
    .await;
}

/// `--kind service`: a WASI 0.3 `wasi:http/service` component (the `wasip3` crate), checked
/// as one, run, and served on its route.
#[tokio::test]
async fn a_rust_wasi_03_service_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("rust", "service", "svc03");
    let project = dir.path().join("svc03");
    let check = run(&project, &["plugin", "check", "svc03.wasm"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("world: wasi:http/service@0.3.0"), "{out}");
    check_run_and_serve(
        dir.path(),
        "svc03",
        "service",
        "Hello from svc03! You asked for /svc03",
    )
    .await;
}

/// `--kind middleware`: a WASI 0.3 `wasi:http/middleware` component (wit-bindgen, against
/// the WIT written beside it), run with `plugin run`'s stand-in next hop, and served in the
/// chain.
#[tokio::test]
async fn a_rust_wasi_03_middleware_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("rust", "middleware", "mark03");
    let project = dir.path().join("mark03");
    assert!(project.join("wit/deps/http.wit").is_file());
    let check = run(&project, &["plugin", "check", "mark03.wasm"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("world: wasi:http/middleware@0.3.0"), "{out}");
    check_run_and_serve(dir.path(), "mark03", "middleware", "x-mark03: 1").await;
}

/// componentize-py builds WASI 0.3 too: a Python service and middleware from `plugin new`.
#[tokio::test]
async fn python_wasi_03_service_and_middleware_from_plugin_new_build_run_and_serve() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("python", "service", "pysvc");
    check_run_and_serve(
        dir.path(),
        "pysvc",
        "service",
        "Hello from pysvc! You asked for /pysvc",
    )
    .await;
    let dir = generate_and_build("python", "middleware", "pymark");
    check_run_and_serve(dir.path(), "pymark", "middleware", "x-pymark: 1").await;
}

#[test]
fn wasi_03_kinds_in_other_languages_are_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let made = run(
        dir.path(),
        &["plugin", "new", "p", "--lang", "go", "--kind", "service"],
    );
    assert!(!made.status.success());
    let err = String::from_utf8_lossy(&made.stderr);
    assert!(
        err.contains("write a Rust or Python project (WASI 0.3)"),
        "{err}"
    );
}

/// `--kv`, `--outbound` and `--secret`: the project declares the bucket, the secret and the
/// grants, and its example counts in the bucket, calls out and reads the secret, served
/// through plughost.
#[tokio::test]
async fn a_rust_project_asking_for_a_bucket_and_outbound_http_gets_and_uses_both() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let backend = plughost_e2e::backend::TestBackend::start("origin");
    let url = format!("http://{}/x", backend.addr);
    let dir = generate_and_build_with(
        "rust",
        "responder",
        "visits",
        &["--kv", "hits", "--outbound", &url, "--secret", "api_key"],
    );
    let project = dir.path().join("visits");
    let generated = std::fs::read_to_string(project.join("plughost.toml")).unwrap();
    for line in [
        "keyvalue = [\"hits\"]".to_owned(),
        format!("allowed_outbound = [\"http://{}\"]", backend.addr),
        "[keyvalue.hits]".to_owned(),
        "secrets = [\"api_key\"]".to_owned(),
        "[secrets.api_key]\nenv = \"API_KEY\"".to_owned(),
    ] {
        assert!(generated.contains(&line), "{line} missing in {generated}");
    }
    // The test cannot set the server's environment: the secret comes from a file instead.
    let secret = project.join("api_key.txt");
    std::fs::write(&secret, "k-123\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = served_here(&generated, &project).replace(
        "env = \"API_KEY\"",
        &format!("file = {:?}", secret.display().to_string()),
    );
    let server = Plughost::start(&config);
    for n in 1..=2 {
        let body = reqwest::get(server.url("/visits/page"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            body,
            format!(
                "visits: /visits/page\nvisits: {n}\n{url}: status 200\nsecret api_key: set, 5 bytes\n"
            ),
        );
    }
    // Other languages are told how to do it by hand.
    let refused = run(
        dir.path(),
        &["plugin", "new", "p", "--lang", "python", "--kv", "hits"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("plugin-keyvalue"));
}

#[tokio::test]
async fn a_python_filter_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("python", "filter", "py-marker");
    check_run_and_serve(
        dir.path(),
        "py-marker",
        "filter",
        "add response header x-py-marker: seen",
    )
    .await;
}

#[tokio::test]
async fn a_python_responder_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("python", "responder", "py-greeter");
    let expect = "Hello from py-greeter! You asked for /py-greeter";
    check_run_and_serve(dir.path(), "py-greeter", "responder", expect).await;
}

#[tokio::test]
async fn a_javascript_responder_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("js", "responder", "js-greeter");
    check_run_and_serve(
        dir.path(),
        "js-greeter",
        "responder",
        "Hello from js-greeter! You asked for /js-greeter",
    )
    .await;
}

#[test]
fn plugin_new_refuses_a_bad_name_and_an_existing_project() {
    let dir = tempfile::tempdir().unwrap();
    let bad = run(dir.path(), &["plugin", "new", "Bad Name", "--lang", "rust"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lower-case letters"));
    let first = run(dir.path(), &["plugin", "new", "p", "--lang", "python"]);
    assert!(first.status.success());
    let again = run(dir.path(), &["plugin", "new", "p", "--lang", "python"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[tokio::test]
async fn a_go_responder_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("go", "responder", "go-greeter");
    let expect = "Hello from go-greeter! You asked for /go-greeter";
    check_run_and_serve(dir.path(), "go-greeter", "responder", expect).await;
}

#[tokio::test]
async fn a_go_filter_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("go", "filter", "go-marker");
    let expect = "add response header x-go-marker: seen";
    check_run_and_serve(dir.path(), "go-marker", "filter", expect).await;
}

#[tokio::test]
async fn a_c_responder_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("c", "responder", "c-greeter");
    let expect = "Hello from c-greeter! You asked for /c-greeter";
    check_run_and_serve(dir.path(), "c-greeter", "responder", expect).await;
}

#[tokio::test]
async fn a_c_filter_from_plugin_new_builds_runs_and_serves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = generate_and_build("c", "filter", "c-marker");
    let expect = "add response header x-c-marker: seen";
    check_run_and_serve(dir.path(), "c-marker", "filter", expect).await;
}

/// The C bindings `plugin new` writes (kept in host/templates/c/bindings) are those
/// wit-bindgen's C generator makes from wit/ now (the test crate's build script makes them for
/// the C example): a change to the WIT must be carried into the templates.
#[test]
fn the_c_bindings_plugin_new_writes_match_the_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = Path::new(env!("PLUGHOST_C_PLUGINS"));
    for file in ["plugin.c", "plugin.h", "plugin_component_type.o"] {
        let kept = std::fs::read(root.join("host/templates/c/bindings").join(file)).unwrap();
        let fresh = std::fs::read(generated.join(file)).unwrap();
        assert!(
            kept == fresh,
            "host/templates/c/bindings/{file} differs from what wit-bindgen generates from wit/; copy plugins/target/c/{file} over it"
        );
    }
}
