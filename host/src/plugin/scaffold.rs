//! `plughost plugin new`: a small, self-contained plugin project outside plughost's
//! repository, in Rust, C, Python, JavaScript or Go: a working filter or responder, the WIT of this
//! very binary (so the contract matches), a Makefile whose `make` builds `NAME.wasm`, a
//! `plughost.toml` that serves it, and a README with the commands.
//!
//! The templates are files under `host/templates/`, embedded here: a string substitution of
//! `{{name}}`-style markers, which is all they need (a template engine would be a dependency
//! for five markers).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::PluginKind;

/// What `plugin new` writes: a plugin of plughost's own world, or a standard wasi:http one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A filter of plughost's world: on every request.
    Filter,
    /// A responder of plughost's world: on its route.
    Responder,
    /// A `wasi:http/proxy@0.2` component on its route (Rust, the `wasi` crate).
    WasiHttp,
    /// A `wasi:http/service@0.3.0` component on its route (Rust, the `wasip3` crate).
    Service,
    /// A `wasi:http/middleware@0.3.0` component in the filter chain (Rust, wit-bindgen).
    Middleware,
}

impl Kind {
    /// The `kind` of its `[[plugins]]` entry.
    pub fn plugin_kind(self) -> PluginKind {
        match self {
            Self::Filter => PluginKind::Filter,
            Self::Responder => PluginKind::Responder,
            Self::WasiHttp | Self::Service => PluginKind::WasiHttp,
            Self::Middleware => PluginKind::Middleware,
        }
    }

    /// Whether it is a standard wasi:http component (no plughost WIT, no SDK).
    fn standard(self) -> bool {
        matches!(self, Self::WasiHttp | Self::Service | Self::Middleware)
    }
}

/// The languages `plugin new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with wit-bindgen (`cargo`, target wasm32-wasip2).
    Rust,
    /// C, with clang and wasi-libc, the bindings wit-bindgen's C generator makes (written
    /// into the project) and wasm-tools.
    C,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with ComponentizeJS (from npm).
    Js,
    /// Go, standard Go (`//go:wasmexport`) with wasm-tools and the WASI preview1 adapter.
    Go,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::C => "C",
            Self::Python => "Python",
            Self::Js => "JavaScript",
            Self::Go => "Go",
        }
    }

    /// The project's files besides the common ones: (path, template), by kind; a Rust
    /// responder using host services has a template of its own.
    fn files(self, kind: Kind, services: bool) -> Vec<(&'static str, &'static str)> {
        let responder = kind != Kind::Filter;
        match self {
            Self::Rust => rust_files(kind, services),
            Self::C => c_files(responder),
            Self::Python => python_files(kind),
            Self::Js => js_files(responder),
            Self::Go => go_files(responder),
        }
    }

    /// The project's binary files, written as they are.
    fn binaries(self) -> &'static [(&'static str, &'static [u8])] {
        // A C or Go module is a WASI preview1 reactor; this is the adapter that makes it a
        // component, the one of the wasmtime this plughost runs.
        const ADAPTER: (&str, &[u8]) = (
            "wasi_snapshot_preview1.reactor.wasm",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        );
        match self {
            Self::C => &[
                ADAPTER,
                // The component type of the `plugin` world, linked into the module.
                (
                    "plugin_component_type.o",
                    include_bytes!("../../templates/c/bindings/plugin_component_type.o"),
                ),
            ],
            Self::Go => &[ADAPTER],
            Self::Rust | Self::Python | Self::Js => &[],
        }
    }
}

/// The plugin contract, as this binary implements it: `plugin.wit` and every package in
/// `wit/deps` (each version of one package, so that bindings name them as in this repository).
const WIT: &[(&str, &str)] = &[
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    (
        "wit/deps/keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../../../wit/deps/keyvalue/batch.wit"),
    ),
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/watch.wit",
        include_str!("../../../wit/deps/keyvalue/watch.wit"),
    ),
    (
        "wit/deps/keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/atomic.wit",
        include_str!("../../../wit/deps/keyvalue-draft2/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/batch.wit",
        include_str!("../../../wit/deps/keyvalue-draft2/batch.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/store.wit",
        include_str!("../../../wit/deps/keyvalue-draft2/store.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/watch.wit",
        include_str!("../../../wit/deps/keyvalue-draft2/watch.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/world.wit",
        include_str!("../../../wit/deps/keyvalue-draft2/world.wit"),
    ),
    (
        "wit/deps/config-draft/store.wit",
        include_str!("../../../wit/deps/config-draft/store.wit"),
    ),
    (
        "wit/deps/config-draft/world.wit",
        include_str!("../../../wit/deps/config-draft/world.wit"),
    ),
    (
        "wit/deps/config-rc1/store.wit",
        include_str!("../../../wit/deps/config-rc1/store.wit"),
    ),
    (
        "wit/deps/config-rc1/world.wit",
        include_str!("../../../wit/deps/config-rc1/world.wit"),
    ),
    (
        "wit/deps/config-draft-2024-09-27/store.wit",
        include_str!("../../../wit/deps/config-draft-2024-09-27/store.wit"),
    ),
    (
        "wit/deps/config-draft-2024-09-27/world.wit",
        include_str!("../../../wit/deps/config-draft-2024-09-27/world.wit"),
    ),
];

const README: &str = include_str!("../../templates/common/README.md");
const CONFIG: &str = include_str!("../../templates/common/plughost.toml");

/// Host services a new project uses (`plugin new --kv`, `--outbound`, `--secret`).
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// A key-value bucket, declared in its plughost.toml and granted to it.
    pub kv: Option<String>,
    /// A URL it GETs; its origin goes into `allowed_outbound`.
    pub outbound: Option<String>,
    /// A secret, declared in its plughost.toml (from an environment variable) and granted
    /// to it, which it reads through wasi:config.
    pub secret: Option<String>,
}

impl Services {
    fn any(&self) -> bool {
        self.kv.is_some() || self.outbound.is_some() || self.secret.is_some()
    }

    /// The plugin's `config` table, its grants and the tables it needs, for plughost.toml.
    fn config(&self) -> anyhow::Result<(String, String, String)> {
        let mut config = Vec::new();
        let (mut grants, mut tables) = (String::new(), String::new());
        if let Some(bucket) = &self.kv {
            let valid = !bucket.is_empty()
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
            if !valid {
                bail!("--kv {bucket}: name a bucket with letters, digits, `_` and `-`");
            }
            config.push(format!("bucket = \"{bucket}\""));
            grants += &format!("keyvalue = [\"{bucket}\"]\n");
            tables += &format!(
                "\n# A memory bucket (in this process); backend = \"redis\" with url = \"redis://...\"\n# shares it across a fleet.\n[keyvalue.{bucket}]\nttl = \"1h\"\n"
            );
        }
        if let Some(url) = &self.outbound {
            let origin = origin(url)?;
            config.push(format!("fetch = {url:?}"));
            grants += &format!("allowed_outbound = [\"{origin}\"]\n");
        }
        if let Some(secret) = &self.secret {
            let valid = !secret.is_empty()
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bail!("--secret {secret}: name a secret with letters, digits and `_`");
            }
            config.push(format!("secret = \"{secret}\""));
            grants += &format!("secrets = [\"{secret}\"]\n");
            tables += &format!(
                "\n# Its value is read from this environment variable at start-up and on reload\n# (or file = \"PATH\", owned by you and readable by nobody else), never from here.\n[secrets.{secret}]\nenv = \"{}\"\n",
                secret.to_ascii_uppercase()
            );
        }
        Ok((format!("{{ {} }}", config.join(", ")), grants, tables))
    }
}

impl Services {
    /// The `plugin run` command that tries plugin `name` with these services.
    pub fn run_command(&self, name: &str) -> anyhow::Result<String> {
        let mut command = format!("plughost plugin run {name}.wasm --uri /{name}");
        if let Some(bucket) = &self.kv {
            command += &format!(" --kv {bucket}");
        }
        if let Some(url) = &self.outbound {
            command += &format!(" --allow-outbound {}", origin(url)?);
        }
        Ok(command)
    }
}

/// `scheme://authority` of `url`, checked to be an `allowed_outbound` entry.
fn origin(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--outbound {url}: not a URL like http://127.0.0.1:8081/path"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        bail!("--outbound {url}: give a whole URL, like http://127.0.0.1:8081/path");
    };
    let origin = format!("{scheme}://{authority}");
    crate::config::Destination::try_from(origin.clone())
        .map_err(|e| anyhow::anyhow!("--outbound {url}: {e}"))?;
    Ok(origin)
}

/// A Rust project's own files: Cargo.toml, Makefile, the plugin and (for plughost's world)
/// the SDK.
fn rust_files(kind: Kind, services: bool) -> Vec<(&'static str, &'static str)> {
    let responder = kind != Kind::Filter;
    let mut files = vec![
        (
            "Cargo.toml",
            include_str!("../../templates/rust/Cargo.toml"),
        ),
        ("Makefile", include_str!("../../templates/rust/Makefile")),
        (
            "src/lib.rs",
            if kind == Kind::WasiHttp {
                include_str!("../../templates/rust/wasi_http.rs")
            } else if kind == Kind::Service {
                include_str!("../../templates/rust/service.rs")
            } else if kind == Kind::Middleware {
                include_str!("../../templates/rust/middleware.rs")
            } else if services {
                include_str!("../../templates/rust/services.rs")
            } else if responder {
                include_str!("../../templates/rust/responder.rs")
            } else {
                include_str!("../../templates/rust/filter.rs")
            },
        ),
    ];
    if !kind.standard() {
        // The Rust SDK, copied in (its WIT beside it, written by `new_project`)
        // and named by a path dependency: the project builds with no checkout of
        // plughost.
        files.extend([
            (
                "plughost-sdk/Cargo.toml",
                include_str!("../../../plugin-guest-sdk/Cargo.toml"),
            ),
            (
                "plughost-sdk/src/lib.rs",
                include_str!("../../../plugin-guest-sdk/src/lib.rs"),
            ),
            (
                "plughost-sdk/src/config.rs",
                include_str!("../../../plugin-guest-sdk/src/config.rs"),
            ),
            (
                "plughost-sdk/src/http.rs",
                include_str!("../../../plugin-guest-sdk/src/http.rs"),
            ),
            (
                "plughost-sdk/src/kv.rs",
                include_str!("../../../plugin-guest-sdk/src/kv.rs"),
            ),
        ]);
    }
    files
}

/// A C project's own files: Makefile, wit-bindgen's bindings and the plugin.
fn c_files(responder: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        ("Makefile", include_str!("../../templates/c/Makefile")),
        // wit-bindgen's C bindings of the `plugin` world, generated from wit/ and
        // kept in step with it by a test (tests/tests/plugin_new.rs).
        (
            "plugin.c",
            include_str!("../../templates/c/bindings/plugin.c"),
        ),
        (
            "plugin.h",
            include_str!("../../templates/c/bindings/plugin.h"),
        ),
        (
            "main.c",
            if responder {
                include_str!("../../templates/c/responder.c")
            } else {
                include_str!("../../templates/c/filter.c")
            },
        ),
    ]
}

/// A Python project's own files: Makefile, the SDK and the plugin (a WASI 0.3 component:
/// Makefile and plugin only, its WIT written beside).
fn python_files(kind: Kind) -> Vec<(&'static str, &'static str)> {
    let p3 = |app| {
        vec![
            (
                "Makefile",
                include_str!("../../templates/python/p3.Makefile"),
            ),
            ("app.py", app),
        ]
    };
    let responder = match kind {
        Kind::Service => return p3(include_str!("../../templates/python/service.py")),
        Kind::Middleware => return p3(include_str!("../../templates/python/middleware.py")),
        Kind::Filter => false,
        Kind::Responder | Kind::WasiHttp => true,
    };
    vec![
        ("Makefile", include_str!("../../templates/python/Makefile")),
        // The Python SDK, copied in: the project builds with no path into plughost's
        // checkout.
        (
            "plughost_sdk/__init__.py",
            include_str!("../../../plugin-guest-sdk/python/plughost_sdk/__init__.py"),
        ),
        (
            "app.py",
            if responder {
                include_str!("../../templates/python/responder.py")
            } else {
                include_str!("../../templates/python/filter.py")
            },
        ),
    ]
}

/// A JavaScript project's own files: Makefile, the SDK, package.json and the plugin.
fn js_files(responder: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        ("Makefile", include_str!("../../templates/js/Makefile")),
        // The JavaScript SDK, copied in (ComponentizeJS resolves relative imports,
        // not node_modules).
        (
            "plughost-sdk/index.js",
            include_str!("../../../plugin-guest-sdk/js/index.js"),
        ),
        (
            "plughost-sdk/index.d.ts",
            include_str!("../../../plugin-guest-sdk/js/index.d.ts"),
        ),
        (
            "package.json",
            include_str!("../../templates/js/package.json"),
        ),
        (
            "app.js",
            if responder {
                include_str!("../../templates/js/responder.js")
            } else {
                include_str!("../../templates/js/filter.js")
            },
        ),
    ]
}

/// A Go project's own files: go.mod, Makefile, the SDK and the plugin.
fn go_files(responder: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        ("go.mod", include_str!("../../templates/go/go.mod")),
        ("Makefile", include_str!("../../templates/go/Makefile")),
        // The Go SDK, copied in and named by a `replace` in go.mod: the project builds
        // with no module download.
        (
            "plughost-sdk/go.mod",
            include_str!("../../../plugin-guest-sdk/go/go.mod"),
        ),
        (
            "plughost-sdk/plughost.go",
            include_str!("../../../plugin-guest-sdk/go/plughost.go"),
        ),
        (
            "plughost-sdk/abi.go",
            include_str!("../../../plugin-guest-sdk/go/abi.go"),
        ),
        (
            "plughost-sdk/abi_other.go",
            include_str!("../../../plugin-guest-sdk/go/abi_other.go"),
        ),
        (
            "main.go",
            if responder {
                include_str!("../../templates/go/responder.go")
            } else {
                include_str!("../../templates/go/filter.go")
            },
        ),
    ]
}

/// Writes the project of plugin `name` into `dir` (which must not exist or be empty) and
/// returns the files written.
pub fn new_project(
    dir: &Path,
    name: &str,
    lang: Lang,
    kind: Kind,
    services: &Services,
) -> anyhow::Result<Vec<PathBuf>> {
    refuse_unsupported(name, lang, kind, services)?;
    let (config, grants, tables) = if services.any() {
        services.config()?
    } else {
        ("{}".to_owned(), String::new(), String::new())
    };
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not empty; choose another NAME or --dir",
            dir.display()
        );
    }
    let routes = if kind.plugin_kind().answers_routes() {
        format!("\n[[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n")
    } else {
        String::new()
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{kind}}", kind.plugin_kind().as_str())
            .replace("{{lang}}", lang.label())
            .replace("{{try}}", &format!("/{name}"))
            .replace("{{routes}}", &routes)
            .replace("{{config}}", &config)
            .replace("{{grants}}", &grants)
            .replace("{{tables}}", &tables)
            .replace("{{deps}}", deps(kind))
            .replace("{{contract}}", contract(kind))
            .replace("{{world}}", world(kind))
    };
    let mut files: Vec<(String, String)> = lang
        .files(kind, services.any())
        .into_iter()
        .map(|(path, template)| (path.to_owned(), fill(template)))
        .collect();
    let wit = WIT
        .iter()
        .map(|&(path, text)| (path.to_owned(), text.to_owned()));
    // A wasi:http component builds against the standard WIT: the `wasi` and `wasip3` crates
    // carry theirs; a middleware's, and a Python service's, is written beside it.
    if kind == Kind::Middleware || (kind == Kind::Service && lang != Lang::Rust) {
        files.extend(
            WIT_HTTP_03
                .iter()
                .map(|&(path, text)| (format!("wit/{path}"), text.to_owned())),
        );
    } else if !kind.standard() {
        files.extend(wit.clone());
    }
    if lang == Lang::Rust && !kind.standard() {
        // The SDK generates its bindings from the WIT in its own directory.
        files.extend(wit.map(|(path, text)| (format!("plughost-sdk/{path}"), text)));
    }
    files.push(("README.md".into(), fill(README)));
    files.push(("plughost.toml".into(), fill(CONFIG)));
    let binaries = lang.binaries().iter().map(|&(path, bytes)| (path, bytes));
    let texts = files
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_bytes()));
    write_files(dir, texts.chain(binaries))
}

/// Refuses a name that cannot name a plugin and the combinations `plugin new` does not write.
fn refuse_unsupported(
    name: &str,
    lang: Lang,
    kind: Kind,
    services: &Services,
) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !valid {
        bail!(
            "`{name}` cannot name a plugin: use lower-case letters, digits and `-`, starting with a letter (it becomes a header and a crate name)"
        );
    }
    if kind == Kind::WasiHttp && lang != Lang::Rust {
        bail!(
            "--kind wasi-http writes a Rust project (the `wasi` crate); in {} build the wasi:http/proxy world with its toolchain against `plughost plugin wit DIR --world wasi-http` (docs/plugins.md, \"Standard wasi:http components\")",
            lang.label()
        );
    }
    if matches!(kind, Kind::Service | Kind::Middleware)
        && !matches!(lang, Lang::Rust | Lang::Python)
    {
        bail!(
            "--kind service and --kind middleware write a Rust or Python project (WASI 0.3); {} has no toolchain from the registries that builds WASI 0.3 components yet (docs/plugins.md, \"WASI 0.3\", says why)",
            lang.label()
        );
    }
    if services.any() && (lang != Lang::Rust || kind != Kind::Responder) {
        bail!(
            "--kv, --outbound and --secret write a Rust responder using them (--lang rust, the default --kind); for other languages declare the bucket, secret and grants in plughost.toml by hand and build against the plugin-keyvalue or plugin-sdk world (docs/plugins.md, \"Key-value state\", \"Settings and secrets\" and \"Outbound HTTP\")"
        );
    }
    Ok(())
}

/// A Rust project's dependencies: plughost's SDK for its own world, the `wasi` crate (the
/// standard wasi:http bindings) for a wasi:http component.
fn deps(kind: Kind) -> &'static str {
    match kind {
        Kind::WasiHttp => "# The standard WASI 0.2 bindings, wasi:http included.\nwasi = \"0.14\"",
        Kind::Service => {
            "# The standard WASI 0.3 bindings (0.9.0 binds wasi:http@0.3.0 exactly).\nwasip3 = { version = \"=0.9.0\", features = [\"async-spawn\"] }"
        }
        Kind::Middleware => {
            "# Bindings of the middleware world in wit/ (the version the `wasip3` crate 0.9 uses).\nwit-bindgen = { version = \"=0.62.0\", features = [\"async-spawn\"] }"
        }
        Kind::Filter | Kind::Responder => {
            "# plughost's Rust SDK, written into the project by `plugin new` (with the WIT it binds).\nplughost-plugin-sdk = { path = \"plughost-sdk\" }"
        }
    }
}

/// The world a WASI 0.3 project builds (`componentize-py -w`).
fn world(kind: Kind) -> &'static str {
    match kind {
        Kind::Middleware => "plughost:wasi-http/middleware",
        _ => "wasi:http/service@0.3.0",
    }
}

/// What the README says of the project's contract.
fn contract(kind: Kind) -> &'static str {
    match kind {
        Kind::WasiHttp => {
            "It implements the standard\n`wasi:http/proxy` world (0.2) with the `wasi` crate's bindings, so it also runs in `wasmtime\nserve` and Spin."
        }
        Kind::Service => {
            "It implements the standard\n`wasi:http/service` world (WASI 0.3.0) with the `wasip3` crate's bindings, so it also runs in\n`wasmtime serve -S p3` and Spin 4. One instance serves several requests at once."
        }
        Kind::Middleware => {
            "It implements the standard\n`wasi:http/middleware` world (WASI 0.3.0; its WIT is in `wit/`): in plughost it runs in the\nfilter chain, and the `handler` it imports is the rest of the chain (later filters, the\ncache, the route)."
        }
        Kind::Filter | Kind::Responder => {
            "`wit/` is the plugin\ncontract of the plughost that made it; a component built against it keeps loading in later\nversions (the contract only grows)."
        }
    }
}

/// The worlds `plugin wit` writes the WIT of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    /// plughost's own `plugin` and `plugin-keyvalue` worlds (filters and responders).
    Plugin,
    /// The standard `wasi:http/proxy` world, 0.2 as this plughost provides it.
    WasiHttp,
    /// The standard `wasi:http/middleware` world of WASI 0.3.0 (and `service`, in the same
    /// package).
    #[value(name = "wasi-http-0.3")]
    WasiHttp03,
}

/// The standard wasi:http/proxy world and its dependencies, as this binary provides them.
const WIT_HTTP: &[(&str, &str)] = &[
    (
        "world.wit",
        include_str!("../../../plugins/wasi-http/wit/world.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/http.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../plugins/wasi-http/wit/deps/sockets.wit"),
    ),
];

/// WASI 0.3's wasi:http middleware world and its dependencies, which wit-bindgen builds a
/// middleware against.
const WIT_HTTP_03: &[(&str, &str)] = &[
    (
        "world.wit",
        include_str!("../../../wit/wasi-http-0.3/world.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/http.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../wit/wasi-http-0.3/deps/sockets.wit"),
    ),
];

/// Writes the WIT of `world`, as this binary implements it, into `dir`: what a guest toolchain
/// builds against, with no checkout of plughost's repository.
pub fn write_wit(dir: &Path, world: World) -> anyhow::Result<Vec<PathBuf>> {
    let files: Vec<(&str, &[u8])> = match world {
        World::Plugin => WIT
            .iter()
            .map(|&(path, text)| (path.strip_prefix("wit/").unwrap_or(path), text.as_bytes()))
            .collect(),
        World::WasiHttp => WIT_HTTP
            .iter()
            .map(|&(path, text)| (path, text.as_bytes()))
            .collect(),
        World::WasiHttp03 => WIT_HTTP_03
            .iter()
            .map(|&(path, text)| (path, text.as_bytes()))
            .collect(),
    };
    write_files(dir, files)
}

/// Writes each (path under `dir`, contents), making directories; returns the paths written.
fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (path, bytes) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_filled_in_and_names_checked() {
        let dir = tempfile_dir();
        let files = new_project(
            &dir.join("my-auth"),
            "my-auth",
            Lang::Rust,
            Kind::Filter,
            &Services::default(),
        )
        .unwrap();
        assert!(files.iter().any(|f| f.ends_with("wit/plugin.wit")));
        let lib = std::fs::read_to_string(dir.join("my-auth/src/lib.rs")).unwrap();
        assert!(lib.contains("x-my-auth") && !lib.contains("{{"), "{lib}");
        let make = std::fs::read_to_string(dir.join("my-auth/Makefile")).unwrap();
        assert!(make.contains("release/my_auth.wasm"), "{make}");
        let config = std::fs::read_to_string(dir.join("my-auth/plughost.toml")).unwrap();
        assert!(!config.contains("[[routes]]"), "{config}");
        // Not twice into the same place, and not with a name that is no header.
        assert!(
            new_project(
                &dir.join("my-auth"),
                "my-auth",
                Lang::Rust,
                Kind::Filter,
                &Services::default()
            )
            .is_err()
        );
        assert!(
            new_project(
                &dir.join("x"),
                "My Plugin",
                Lang::Python,
                Kind::Filter,
                &Services::default()
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("plughost-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
