//! `plughost plugin check` and `plughost plugin run`: trying a plugin without a server.

use plughost_e2e::{plugin, run};

fn cli<S: AsRef<str>>(args: &[S]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = run(dir.path(), &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(name: &str) -> String {
    plugin(name).display().to_string()
}

#[test]
fn check_reports_exports_imports_size_and_compile_time() {
    let (code, out, err) = cli(&["plugin", "check", &path("hello")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("exports: plugin-init, plugin-process"),
        "{out}"
    );
    assert!(out.contains("wasi:cli/stdout@0.2"), "{out}");
    assert!(out.contains("KiB)") && out.contains("compile: "), "{out}");
    // A plughost:plugin component can be either kind: check never calls a filter a responder.
    assert!(out.contains("kind: filter or responder"), "{out}");
    // Its calls skip the machinery only WASI 0.3 components need, ~8,000 instructions a call.
    assert!(out.contains("calls: straight into the instance"), "{out}");
    let (code, out, err) = cli(&["plugin", "check", &path("p3_hello")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world: wasi:http/service@0.3"), "{out}");
    assert!(
        out.contains("calls: through wasmtime's task machinery"),
        "{out}"
    );
    assert!(out.ends_with("ok: plughost would load it\n"), "{out}");
    // componentize-py's extra `exports` instance is set apart from the plugin's exports.
    let python = plughost_e2e::python_plugin("describe")
        .display()
        .to_string();
    let (code, out, err) = cli(&["plugin", "check", &python]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("exports: plugin-init, plugin-process\nother exports (plughost does not call them): exports\n"),
        "{out}"
    );
}

#[test]
fn check_refuses_non_components_and_other_worlds_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    // The smallest valid component: no imports, no exports.
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    // A core module: the error says how to make it a component.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\x00\x00\x00").unwrap();
    for (file, reason) in [
        (text, "not a valid component"),
        (empty, "no export `plugin-init`"),
        (core, "wasm-tools component new"),
    ] {
        let (code, _, err) = cli(&["plugin", "check", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(reason), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    }
}

#[test]
fn run_prints_the_response_with_config_and_request() {
    let (code, out, err) = cli(&[
        "plugin",
        "run",
        &path("hello"),
        "--config",
        r#"{"greeting": "Hey"}"#,
        "--method",
        "POST",
        "--uri",
        "/hello/cli",
        "--header",
        "x-a: 1",
        "--body",
        "data",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("respond 200\ncontent-type: text/plain"),
        "{out}"
    );
    assert!(
        out.contains("Hey from plughost! You asked for /hello/cli\n"),
        "{out}"
    );
    assert!(out.contains("call: "), "{out}");
}

#[test]
fn run_shows_a_filters_edits_and_repeats_with_median_and_p99() {
    let (code, out, err) = cli(&[
        "plugin",
        "run",
        &path("headers"),
        "--config",
        r#"{"request": {"name": "x-a", "value": "1"}, "response": {"name": "x-b", "value": "2"}}"#,
        "--repeat",
        "200",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("continue\n  set request header x-a: 1\n  add response header x-b: 2\n"),
        "{out}"
    );
    assert!(out.contains("calls: 200, median "), "{out}");
    assert!(out.contains("p99 "), "{out}");
}

#[test]
fn run_reports_trap_timeout_memory_and_error_with_the_sandbox_limits() {
    for (config, extra, reason) in [
        (r#"{"mode": "panic"}"#, vec![], "trap:"),
        (r#"{"mode": "loop"}"#, vec!["--timeout", "50ms"], "timeout:"),
        (
            r#"{"mode": "alloc", "amount": 8}"#,
            vec!["--max-memory-bytes", "4194304"],
            "memory:",
        ),
        (
            r#"{"mode": "error"}"#,
            vec![],
            "error: hostile plugin returns an error",
        ),
    ] {
        let mut args = vec![
            "plugin".to_owned(),
            "run".into(),
            path("hostile"),
            "--config".into(),
        ];
        args.push(config.into());
        args.extend(extra.into_iter().map(String::from));
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{config}: {err}");
        assert!(
            err.contains(&format!("plugin-process failed: {reason}")),
            "{config}: {err}"
        );
    }
    let (_, _, err) = cli(&[
        "plugin",
        "run",
        &path("hostile"),
        "--config",
        r#"{"mode": "panic"}"#,
    ]);
    assert!(err.contains("guest backtrace:"), "{err}");
    assert!(
        err.contains("hostile plugin panics on purpose"),
        "guest stderr not shown: {err}"
    );
}

#[test]
fn run_applies_grants_like_the_server() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f.txt"), "x").unwrap();
    let grant = format!("{}:/data", data.path().display());
    let read = |file: &str, grant: Option<&str>| {
        let config = format!(r#"{{"mode": "read", "path": "{file}"}}"#);
        let mut args = vec![
            "plugin".to_owned(),
            "run".into(),
            path("hostile"),
            "--config".into(),
            config,
        ];
        if let Some(g) = grant {
            args.extend(["--grant".to_owned(), g.to_owned()]);
        }
        cli(&args).1
    };
    assert!(read("/data/f.txt", Some(&grant)).contains("LEAKED: read succeeded"));
    assert!(read("/data/f.txt", None).contains("denied: "));
    assert!(read("/etc/passwd", Some(&grant)).contains("denied: "));
}

#[test]
fn check_and_run_use_the_servers_compiled_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(
        dir.path().join("plughost.toml"),
        format!("wasm_cache_dir = {:?}\n", cache.display().to_string()),
    )
    .unwrap();
    let out = run(dir.path(), &["plugin", "check", &path("hello")]);
    assert!(out.status.success());
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 1, "the check left no compiled entry");
}

/// A `wasi:cli` command (a program with `main`) is refused saying what it is and what to
/// build instead, by `plugin check` and by the server alike.
#[test]
fn a_wasi_cli_command_is_refused_by_name() {
    let file = plugin("command").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plugin", "check", &file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("it is a wasi:cli command") && err.contains("crate-type = [\"cdylib\"]"),
        "{err}"
    );
    let (status, err) =
        plughost_e2e::fails_to_start(&format!("[[plugins]]\nname = \"cmd\"\nfile = {file:?}\n"));
    assert!(!status.success());
    assert!(err.contains("it is a wasi:cli command"), "{err}");
}

/// `plugin wit DIR` writes the WIT a guest builds against from the binary itself: the
/// repository's `wit/` for the plugin worlds, the vendored wasi:http/proxy for `wasi-http`.
#[test]
fn wit_comes_from_the_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plugin", "wit", "plugin-wit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "plugin.wit",
        "deps/keyvalue/store.wit",
        "deps/keyvalue/atomic.wit",
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join("plugin-wit").join(file)).unwrap(),
            std::fs::read_to_string(root.join("wit").join(file)).unwrap(),
            "{file}"
        );
    }
    let out = run(
        dir.path(),
        &["plugin", "wit", "http-wit", "--world", "wasi-http"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["world.wit", "deps/http.wit", "deps/io.wit"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join("http-wit").join(file)).unwrap(),
            std::fs::read_to_string(root.join("plugins/wasi-http/wit").join(file)).unwrap(),
            "{file}"
        );
    }
}
