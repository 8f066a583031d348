//! In-process costs of a WebAssembly plugin call (`cargo bench -p plughost --bench plugins`):
//! `plugin-process` on a reused instance with 0 B, 1 KiB and 64 KiB bodies, and a call on a
//! fresh instance (instantiation + init + call); one wasi:keyvalue count from a guest, by
//! `increment` and by compare-and-swap, on a memory bucket and (with redis-server installed)
//! a Redis one; and what a request pays for a native plugin (rendering `data` and
//! handing it to the plugin's thread). Needs `make plugins`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use plughost::client::Client;
use plughost::config::{Config, KeyValueConfig, PluginConfig, PluginKind, Reuse};
use plughost::plugin::Given;
use plughost::plugin::host::Backends;
use plughost::plugin::native::{self, NativePlugin};
use plughost::plugin::wasm::{Runtime, WasmPlugin};

fn plugin_file(name: &str) -> PathBuf {
    built(&format!("wasm32-wasip2/release/{name}.wasm"))
}

fn built(path: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target")
        .join(path);
    assert!(
        p.exists(),
        "{} missing: run `make plugins` first",
        p.display()
    );
    p
}

/// Loads `config`'s component with what `server` declares, through the server's own path.
fn load_as(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    mut config: PluginConfig,
    server: &Config,
) -> WasmPlugin {
    let (component, _) = runtime.compile(&config.file).expect("compile");
    let pre = runtime
        .prepare(&component, PluginKind::Filter, true)
        .expect("prepare");
    config.log_bytes_per_sec = usize::MAX;
    let caps = Backends::new(server, &[], &mut Default::default())
        .expect("backends")
        .capabilities(&config)
        .expect("grants");
    rt.block_on(WasmPlugin::load(pre, config, 1, caps))
        .expect("load")
}

fn load(rt: &tokio::runtime::Runtime, runtime: &Runtime, reuse: Reuse) -> WasmPlugin {
    let mut config = PluginConfig::filter("headers".into(), plugin_file("headers"));
    config.reuse = reuse;
    config.config = toml::from_str(
        "request = { name = \"x-a\", value = \"1\" }\nresponse = { name = \"x-b\", value = \"2\" }",
    )
    .unwrap();
    load_as(rt, runtime, config, &Config::default())
}

/// The hostile test plugin counting `n` times per call in `bucket`, by `increment`
/// (`mode` kv-increment) or by compare-and-swap (kv-cas: read, add one, swap).
fn counter(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    mode: &str,
    n: u64,
    bucket: &KeyValueConfig,
) -> WasmPlugin {
    let mut config = PluginConfig::filter("kv".into(), plugin_file("hostile"));
    config.config = toml::from_str(&format!("mode = \"{mode}\"\namount = {n}")).unwrap();
    config.timeout = Duration::from_secs(10);
    config.keyvalue = vec!["bench".to_owned()];
    let mut server = Config::default();
    server.keyvalue.insert("bench".to_owned(), bucket.clone());
    load_as(rt, runtime, config, &server)
}

/// A private Redis on a free loopback port for the length of the bench, if redis-server is
/// installed (`make test` installs it); killed when dropped.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self(child, port);
        // Bounded: 5 s for the server to listen.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One count's cost from a guest, by `increment` and by compare-and-swap, on a memory bucket
/// and on a Redis one: a call counting `n` times, minus a call counting none, over `n`.
fn keyvalue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(None, 16).unwrap();
    let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let body = Bytes::new();
    let client = Client::new("127.0.0.1:1".parse().unwrap());
    let given = Given::whole(&parts, &body, &client);
    let headers = given.headers();
    let req = given.request(&headers);
    let redis = Redis::start();
    let mut backends = vec![("memory", KeyValueConfig::memory(), 1000)];
    match &redis {
        Some(r) => {
            let mut bucket = KeyValueConfig::memory();
            bucket.backend = plughost::config::KvBackend::Redis;
            bucket.url = Some(format!("redis://127.0.0.1:{}/0", r.1));
            // A Redis round trip is ~30 µs: fewer per call keeps a sample short.
            backends.push(("redis", bucket, 100));
        }
        None => eprintln!("redis-server not found: the Redis key-value benches are skipped"),
    }
    for (backend, bucket, n) in &backends {
        for (op, mode) in [("increment", "kv-increment"), ("cas", "kv-cas")] {
            let (none, many) = (
                counter(&rt, &runtime, mode, 0, bucket),
                counter(&rt, &runtime, mode, *n, bucket),
            );
            c.bench_function(&format!("kv_{backend}_{op}_from_guest"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            let start = Instant::now();
                            many.process(req.clone()).await.result.expect("call");
                            let with = start.elapsed();
                            let start = Instant::now();
                            none.process(req.clone()).await.result.expect("call");
                            spent += with.saturating_sub(start.elapsed()) / *n as u32;
                        }
                        spent
                    })
                })
            });
        }
    }
}

fn calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(None, 16).unwrap();
    let client = Client::new("127.0.0.1:5000".parse().unwrap());
    let pooled = load(&rt, &runtime, Reuse::Pooled);
    let fresh = load(&rt, &runtime, Reuse::Fresh);
    let mut group = c.benchmark_group("wasm_plugin_call");
    for (label, size) in [("0B", 0), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let (parts, ()) = Request::post("/bench?x=1")
            .header("host", "bench")
            .header("user-agent", "criterion")
            .body(())
            .unwrap()
            .into_parts();
        let body = Bytes::from(vec![b'a'; size]);
        let given = Given::whole(&parts, &body, &client);
        let headers = given.headers();
        let req = given.request(&headers);
        // `iters` calls in one block_on, so the runtime's entry cost is not in the figure.
        let timed = |plugin: &WasmPlugin, iters: u64| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    plugin.process(req.clone()).await.result.expect("call");
                }
                start.elapsed()
            })
        };
        group.bench_function(format!("pooled_{label}"), |b| {
            b.iter_custom(|iters| timed(&pooled, iters))
        });
        if size == 1024 {
            group.bench_function("fresh_instance_1KiB", |b| {
                b.iter_custom(|iters| timed(&fresh, iters))
            });
        }
    }
    group.finish();
}

fn native(c: &mut Criterion) {
    let plugin = NativePlugin::load(
        "empty",
        &built("native/empty.so"),
        "{}",
        Duration::from_millis(10),
        Duration::from_secs(5),
        16 << 20,
    )
    .expect("load empty.so");
    let (parts, ()) = Request::get("/bench?x=1")
        .header("host", "bench")
        .header("user-agent", "criterion")
        .body(())
        .unwrap()
        .into_parts();
    let body = Bytes::new();
    c.bench_function("native_plugin_observe", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            // In bursts well under the queue, with a pause (not timed) for the plugin's thread
            // to drain it, so the measured path is a real hand-off, never a drop.
            for chunk in (0..iters).collect::<Vec<_>>().chunks(1000) {
                let start = Instant::now();
                for _ in chunk {
                    plugin.observe(&std::sync::Arc::new(native::render(
                        &parts,
                        &body,
                        64 * 1024,
                    )));
                }
                spent += start.elapsed();
                std::thread::sleep(Duration::from_millis(2));
            }
            spent
        })
    });
    assert_eq!(plugin.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = calls, keyvalue, native
}
criterion_main!(benches);
