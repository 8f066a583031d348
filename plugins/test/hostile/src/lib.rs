//! `hostile`: a plugin that misbehaves on purpose, for plughost's sandbox tests. Its config's
//! `mode` picks the misbehaviour; a responder answers with what it managed to do.
use plughost_plugin_sdk::{
    Action, Edits, Header, Plugin, Request, Response, config, export_plugin, next,
};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    path: String,
    /// MiB for `alloc`, `alias-headers` and `log-flood`; milliseconds for `busy`, `sleep`
    /// and `init-sleep`; a count for `many-headers`.
    #[serde(default)]
    amount: u64,
    /// `respond-as` and `edit-response`: the status and headers to answer with.
    #[serde(default)]
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)] // the point: recursion until the stack runs out
fn recurse(n: u64) -> u64 {
    let pad = [n; 64];
    std::hint::black_box(&pad);
    recurse(n + 1) + pad[3]
}

fn outcome<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Action {
    let text = match r {
        Ok(_) => format!("LEAKED: {what} succeeded\n"),
        Err(e) => format!("denied: {e}\n"),
    };
    Response::text(200, text).into_action()
}

impl Plugin for Hostile {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        if c.mode == "init-fail" {
            return Err("refusing to start: init-fail mode".into());
        }
        if c.mode == "init-sleep" {
            // A WASI clock poll: the host waits, no guest code runs.
            std::thread::sleep(std::time::Duration::from_millis(c.amount));
        }
        CONFIG.get_or_init(|| c);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        match c.mode.as_str() {
            "loop" => loop {
                std::hint::black_box(&req);
            },
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => Ok(Response::text(200, format!("{}", recurse(0))).into_action()),
            "panic" => panic!("hostile plugin panics on purpose"),
            // Allocates `amount` MiB once and answers: fits or not, depending on the cap.
            "alloc" => {
                let block = vec![7u8; (c.amount as usize) << 20];
                Ok(Response::text(200, format!("allocated {} MiB\n", block.len() >> 20)).into_action())
            }
            // Burns `amount` ms of CPU, then answers.
            "busy" => {
                let start = std::time::Instant::now();
                while start.elapsed().as_millis() < c.amount as u128 {
                    std::hint::black_box(&req);
                }
                Ok(Response::text(200, "done\n").into_action())
            }
            "error" => Err("hostile plugin returns an error".into()),
            "read" => Ok(outcome("read", std::fs::read_to_string(&c.path))),
            "write" => Ok(outcome("write", std::fs::write(&c.path, b"pwned"))),
            "big-body" => Ok(Response::text(200, "x".repeat(100 << 20)).into_action()),
            "print" => {
                println!("hostile says hello on stdout");
                eprintln!("hostile says hello on stderr");
                Ok(next())
            }
            // Fails one request in ten (by a request counter), for fault tests.
            "every-tenth" => {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                if N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10 == 9 {
                    panic!("tenth request");
                }
                Ok(next())
            }
            // Traps on the requests whose target asks for it, for fault tests under load.
            "trap-if-asked" => {
                if req.uri.contains("trap") {
                    panic!("trap requested by {}", req.uri);
                }
                Ok(next())
            }
            // Answers with exactly the status, headers and body of its config: framing headers,
            // bad statuses and invalid names included.
            "respond-as" => Ok(Action::Respond(Response {
                status: c.status,
                headers: c.headers.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }).collect(),
                body: c.body.clone().into_bytes(),
            })),
            // Lets the request go on and tells on the response what it was given: the request
            // headers' names (`x-seen-headers`) and the body's length (`x-seen-body`).
            // `tell-respond`: a responder's way, the same two headers on a 200 of its own.
            "tell" | "tell-respond" => {
                let names: Vec<&str> = req.headers.iter().map(|h| h.name.as_str()).collect();
                let (names, body) = (names.join(","), req.body.len().to_string());
                Ok(if c.mode == "tell" {
                    Edits::default()
                        .response_header("x-seen-headers", &names)
                        .response_header("x-seen-body", &body)
                        .into_action()
                } else {
                    Response::text(200, "told\n")
                        .with_header("x-seen-headers", &names)
                        .with_header("x-seen-body", &body)
                        .into_action()
                })
            }
            // Lets the request go on and asks for its config's headers on the response.
            "edit-response" => {
                let mut edits = Edits::default();
                for (n, v) in &c.headers {
                    edits = edits.response_header(n, v);
                }
                Ok(edits.into_action())
            }
            // `amount` distinct response headers.
            "many-headers" => Ok(Action::Respond(Response {
                status: 200,
                headers: (0..c.amount)
                    .map(|i| Header { name: format!("x-h{i}"), value: "v".into() })
                    .collect(),
                body: Vec::new(),
            })),
            // 127 header values that all point at one `amount` MiB buffer: little guest
            // memory, a large copy for a host that lifts them all.
            "alias-headers" => {
                let block: &'static mut [u8] = vec![b'a'; (c.amount as usize) << 20].leak();
                let headers = (0..127)
                    .map(|i| Header {
                        name: format!("x-alias{i}"),
                        // SAFETY (test only): every String aliases one leaked buffer; the
                        // host reads them before post-return frees them, which may then
                        // corrupt the allocator; the instance is discarded anyway.
                        value: unsafe {
                            String::from_raw_parts(block.as_mut_ptr(), block.len(), block.len())
                        },
                    })
                    .collect();
                Ok(Action::Respond(Response { status: 200, headers, body: Vec::new() }))
            }
            // Sleeps in a host call (a WASI clock poll), where no guest code runs.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(c.amount));
                Ok(Response::text(200, "slept\n").into_action())
            }
            // `amount` MiB in one host.log line, 16 times; then the same on stdout.
            "log-flood" => {
                let line = "L".repeat((c.amount as usize) << 20);
                for _ in 0..16 {
                    plughost_plugin_sdk::log(plughost_plugin_sdk::Level::Info, &line);
                }
                println!("{line}");
                Ok(Response::text(200, "flooded\n").into_action())
            }
            // `amount` increments of one key in the `bench` bucket (the cost of a key-value call).
            "kv-increment" => {
                let bucket = plughost_plugin_sdk::kv::Bucket::open("bench")?;
                for _ in 0..c.amount {
                    bucket.increment("k", 1)?;
                }
                Ok(next())
            }
            // The same count by compare-and-swap: read, add one, swap, again on a conflict.
            "kv-cas" => {
                let bucket = plughost_plugin_sdk::kv::Bucket::open("bench")?;
                for _ in 0..c.amount {
                    bucket.update("k", 1000, add_one)?;
                }
                Ok(next())
            }
            // GETs the URL in the request's `x-fetch` header (or `path`) and says what came
            // back: `status=N bytes=M` or `error: WHY`.
            "fetch" => {
                let url = req.header("x-fetch").unwrap_or(&c.path);
                let text = match plughost_plugin_sdk::http::get(url, &[]) {
                    Ok(r) => format!("status={} bytes={}\n", r.status, r.body.len()),
                    Err(e) => format!("error: {e}\n"),
                };
                Ok(Response::text(200, text).into_action())
            }
            // `amount` GETs of that URL one after the other, then a count of outcomes.
            "fetch-loop" => {
                let url = req.header("x-fetch").unwrap_or(&c.path).to_owned();
                let mut tally = std::collections::BTreeMap::<String, u64>::new();
                for _ in 0..c.amount {
                    let key = match plughost_plugin_sdk::http::get(&url, &[]) {
                        Ok(r) => format!("status={}", r.status),
                        Err(e) => format!("error: {e}"),
                    };
                    *tally.entry(key).or_default() += 1;
                }
                Ok(Response::text(200, format!("{tally:?}\n")).into_action())
            }
            // `amount` GETs sent at once (none awaited before all are sent), then awaited.
            "fetch-burst" => {
                let url = req.header("x-fetch").unwrap_or(&c.path).to_owned();
                Ok(Response::text(200, burst(&url, c.amount)).into_action())
            }
            // Runs the key-value steps in the request body (JSON, see `KvStep`), a line each.
            "kv" => {
                let steps: Vec<KvStep> =
                    plughost_plugin_sdk::serde_json::from_slice(&req.body).map_err(|e| format!("bad steps: {e}"))?;
                let out: String = steps.into_iter().map(|s| kv_step(s) + "\n").collect();
                Ok(Response::text(200, out).into_action())
            }
            // wasi:config: the value of the key in `x-key` (`value=…`, `none` or `error: …`),
            // or with no `x-key` every key and value, a `key=value` line each.
            "config" => {
                use plughost_plugin_sdk::config;
                let text = match req.header("x-key") {
                    Some(key) => match config::get(key) {
                        Ok(Some(v)) => format!("value={v}\n"),
                        Ok(None) => "none\n".into(),
                        Err(e) => format!("error: {e}\n"),
                    },
                    None => match config::get_all() {
                        Ok(mut all) => {
                            all.sort();
                            all.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
                        }
                        Err(e) => format!("error: {e}\n"),
                    },
                };
                Ok(Response::text(200, text)
                    .with_header("cache-control", "no-store")
                    .into_action())
            }
            // Answers with the value of the request header named `path` (or nothing).
            "echo-header" => Ok(Response::text(200, format!("{}\n", req.header(&c.path).unwrap_or("")))
                .with_header("cache-control", "no-store")
                .into_action()),
            // An error whose message is `amount` MiB.
            "big-error" => Err("E".repeat((c.amount as usize) << 20)),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

/// One key-value step of the `kv` mode; each answers `ok`, `value=…` or `error: …`.
#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum KvStep {
    /// `value`, or `size` bytes of `v` when `size` is given.
    Set { bucket: String, key: String, #[serde(default)] value: String, #[serde(default)] size: usize },
    Get { bucket: String, key: String },
    /// A get-many naming `key` `times` times.
    GetMany { bucket: String, key: String, times: usize },
    /// `n` keys `PREFIX0…` of `size` bytes each, in set-many calls of `chunk` pairs.
    SetMany { bucket: String, prefix: String, n: usize, size: usize, chunk: usize },
    Increment { bucket: String, key: String, delta: u64 },
    /// Through draft2, whose deltas are signed.
    Increment2 { bucket: String, key: String, delta: i64 },
    /// A get through draft2.
    Get2 { bucket: String, key: String },
    /// A CAS handle on `key`, the key written by someone else, then the swap of `value`:
    /// `seen=… conflict now=…` and the retry's outcome, or `swapped` if nothing intervened.
    CasStale { bucket: String, key: String, value: String },
    /// A CAS handle's `current` of `key`.
    CasCurrent { bucket: String, key: String },
    /// `n` compare-and-swap increments of `key`: `value=…` after the last.
    CasAdd { bucket: String, key: String, n: u64 },
    Exists { bucket: String, key: String },
    /// Every page of `list-keys`: `keys=N pages=P p99_page_us=… total_ms=…`, then the keys
    /// when there are at most 20.
    List { bucket: String },
    /// Opens `n` handles and never drops them.
    Leak { bucket: String, n: usize },
}

/// A counter's next value, for a compare-and-swap increment.
fn add_one(now: Option<Vec<u8>>) -> Vec<u8> {
    let n: u64 = now
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (n + 1).to_string().into_bytes()
}

/// Shows `v`, or its length when long.
fn shown(v: Option<Vec<u8>>) -> String {
    match v {
        None => "none".into(),
        Some(v) if v.len() <= 64 => format!("value={}", String::from_utf8_lossy(&v)),
        Some(v) => format!("len={}", v.len()),
    }
}

fn kv_step(step: KvStep) -> String {
    use plughost_plugin_sdk::kv::{Bucket, Swap};
    use plughost_plugin_sdk::wit::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
    // Draft's errors (the SDK's `describe` is draft2's).
    let describe = |e: &store::Error| match e {
        store::Error::NoSuchStore => "no such bucket".to_string(),
        store::Error::AccessDenied => "bucket not granted".to_string(),
        store::Error::Other(why) => why.clone(),
    };
    let open = |name: &str| store::open(name).map_err(|e| describe(&e));
    let run = || -> Result<String, String> {
        Ok(match step {
            KvStep::Set { bucket, key, value, size } => {
                let value = if size > 0 { vec![b'v'; size] } else { value.into_bytes() };
                open(&bucket)?.set(&key, &value).map_err(|e| describe(&e))?;
                "ok".into()
            }
            KvStep::Get { bucket, key } => shown(open(&bucket)?.get(&key).map_err(|e| describe(&e))?),
            KvStep::Get2 { bucket, key } => shown(Bucket::open(&bucket)?.get(&key)?),
            KvStep::Increment2 { bucket, key, delta } => {
                format!("value={}", Bucket::open(&bucket)?.increment(&key, delta)?)
            }
            KvStep::CasStale { bucket, key, value } => {
                let b = Bucket::open(&bucket)?;
                let cas = b.cas(&key)?;
                let seen = shown(cas.current()?);
                b.set(&key, b"changed")?;
                match cas.swap(value.as_bytes()) {
                    Ok(()) => format!("seen={seen} swapped"),
                    Err(Swap::Failed(why)) => format!("seen={seen} failed: {why}"),
                    Err(Swap::Changed(now)) => {
                        let now_seen = shown(now.current()?);
                        let retry = match now.swap(value.as_bytes()) {
                            Ok(()) => "retry swapped".to_string(),
                            Err(Swap::Changed(_)) => "retry conflict".to_string(),
                            Err(Swap::Failed(why)) => format!("retry failed: {why}"),
                        };
                        format!("seen={seen} conflict now={now_seen} {retry}")
                    }
                }
            }
            KvStep::CasCurrent { bucket, key } => shown(Bucket::open(&bucket)?.cas(&key)?.current()?),
            KvStep::CasAdd { bucket, key, n } => {
                let b = Bucket::open(&bucket)?;
                let mut last = Vec::new();
                for _ in 0..n {
                    last = b.update(&key, 10_000, add_one)?;
                }
                shown(Some(last))
            }
            KvStep::GetMany { bucket, key, times } => {
                let keys = vec![key; times];
                let found = batch::get_many(&open(&bucket)?, &keys).map_err(|e| describe(&e))?;
                let bytes: usize = found.iter().flatten().map(|(_, v)| v.len()).sum();
                format!("got={} bytes={bytes}", found.len())
            }
            KvStep::SetMany { bucket, prefix, n, size, chunk } => {
                let b = open(&bucket)?;
                let value = vec![b'v'; size];
                let mut i = 0;
                while i < n {
                    let end = (i + chunk.max(1)).min(n);
                    let pairs: Vec<(String, Vec<u8>)> =
                        (i..end).map(|j| (format!("{prefix}{j}"), value.clone())).collect();
                    batch::set_many(&b, &pairs).map_err(|e| describe(&e))?;
                    i = end;
                }
                "ok".into()
            }
            KvStep::Increment { bucket, key, delta } => {
                let n = atomics::increment(&open(&bucket)?, &key, delta).map_err(|e| describe(&e))?;
                format!("value={n}")
            }
            KvStep::Exists { bucket, key } => {
                format!("{}", open(&bucket)?.exists(&key).map_err(|e| describe(&e))?)
            }
            KvStep::List { bucket } => {
                let b = open(&bucket)?;
                let (mut keys, mut pages, mut cursor) = (Vec::new(), Vec::new(), None);
                let started = std::time::Instant::now();
                loop {
                    let t = std::time::Instant::now();
                    let page = b.list_keys(cursor).map_err(|e| describe(&e))?;
                    pages.push(t.elapsed().as_micros());
                    keys.extend(page.keys);
                    cursor = page.cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
                let total = started.elapsed().as_millis();
                pages.sort();
                let p99 = pages[(pages.len() * 99 / 100).min(pages.len() - 1)];
                let mut line = format!("keys={} pages={} p99_page_us={p99} total_ms={total}", keys.len(), pages.len());
                if keys.len() <= 20 {
                    keys.sort();
                    line += &format!(" {}", keys.join(","));
                }
                line
            }
            KvStep::Leak { bucket, n } => {
                for _ in 0..n {
                    std::mem::forget(open(&bucket)?);
                }
                format!("leaked {n}")
            }
        })
    };
    run().unwrap_or_else(|e| format!("error: {e}"))
}

/// Sends `n` GETs of `url` before awaiting any, then counts how each ended.
fn burst(url: &str, n: u64) -> String {
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let (_, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut pending = Vec::new();
    let mut tally = std::collections::BTreeMap::<String, u64>::new();
    for _ in 0..n {
        let req = OutgoingRequest::new(Fields::new());
        let _ = req.set_scheme(Some(&Scheme::Http));
        let _ = req.set_authority(Some(authority));
        let _ = req.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
        match wasi::http::outgoing_handler::handle(req, None) {
            Ok(f) => pending.push(f),
            Err(e) => *tally.entry(format!("{e:?}")).or_default() += 1,
        }
    }
    for f in pending {
        f.subscribe().block();
        let key = match f.get() {
            Some(Ok(Ok(r))) => format!("status={}", r.status()),
            Some(Ok(Err(e))) => format!("{e:?}"),
            _ => "gone".to_owned(),
        };
        *tally.entry(key).or_default() += 1;
    }
    format!("{tally:?}\n")
}

export_plugin!(Hostile);
