//! The one helper every end-to-end test starts plughost through: a temp dir, a config file,
//! port 0 (the bound addresses are read from the start-up lines, so tests never race for a
//! free port), and a child process killed when the helper is dropped.
//!
//! The binary is the one `cargo build -p plughost` made in this workspace's target dir
//! (`make test` builds it first), or the one named by `PLUGHOST_BIN`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod backend;
pub mod origin;
pub mod otlp;
pub mod redis;

/// How often [`eventually`] and [`eventually_blocking`] look again.
const POLL: Duration = Duration::from_millis(20);

/// Waits for something a test means (a log line, a metric, a backend back up) by asking
/// `check` every 20 ms until it answers `Ok`, for at most `within`: a bound against a hang,
/// never a timing the test relies on. `Err` carries what was seen instead, which the panic
/// shows with `what` when the bound passes.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually`] for a test on plain threads (raw sockets, a child process).
pub fn eventually_blocking<T>(
    within: Duration,
    what: &str,
    check: impl FnMut() -> Result<T, String>,
) -> T {
    poll_until(within, check)
        .unwrap_or_else(|seen| panic!("{what}: not within {within:?}; last seen: {seen}"))
}

/// The loop of [`eventually_blocking`], for a caller that must clean up before it fails:
/// `Err` holds what was last seen when `within` passed.
pub fn poll_until<T>(
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(t) => return Ok(t),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Keys the helper sets unless the test's config sets them itself.
const BASE_CONFIG: &[(&str, &str)] = &[
    ("port", "0"),
    ("bind", "\"127.0.0.1\""),
    ("admin", "\"127.0.0.1:0\""),
    ("log_stderr", "false"),
    ("debug_routes", "true"),
];

/// reqwest is built with rustls but no crypto provider of its own (its default, aws-lc-rs, is a
/// large C build): every client needs the process-wide one, so the helper installs ring's
/// before a test can make a client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Path of the plughost binary under test.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PLUGHOST_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/plughost
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(format!("plughost{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p plughost` first (`make test` does)",
        bin.display()
    );
    bin
}

/// A running plughost, killed on drop.
pub struct Plughost {
    child: Child,
    /// The public listener.
    pub addr: SocketAddr,
    /// `http`, or `https` with `[tls]`.
    pub scheme: &'static str,
    /// The admin listener, unless the config turned it off.
    pub admin: Option<SocketAddr>,
    /// The HTTPS redirect listener, with `tls.redirect_port`.
    pub redirect: Option<SocketAddr>,
    /// Working directory (config, log file, plugins).
    pub dir: TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Plughost {
    /// Starts plughost with `config` (TOML) added to the helper's base keys, and waits for
    /// its start-up lines, `plughost ready` (its plugins loaded) last.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    /// Like [`Plughost::start`], in a directory the test has prepared (plugins, say).
    pub fn start_in(dir: TempDir, config: &str) -> Self {
        Self::launch(dir, config, true)
    }

    /// Like [`Plughost::start`], returning once it listens, while its plugins may still load.
    pub fn start_listening(config: &str) -> Self {
        Self::launch(tempfile::tempdir().expect("temp dir"), config, false)
    }

    /// Waits (up to 180 s: a bound against a hang) for `plughost ready`.
    pub fn wait_ready(&self) {
        eventually_blocking(Duration::from_secs(180), "plughost ready", || {
            match self.stdout().lines().any(|l| l == "plughost ready") {
                true => Ok(()),
                false => Err(format!("log:\n{}", self.log())),
            }
        })
    }

    fn launch(dir: TempDir, config: &str, wait_ready: bool) -> Self {
        install_tls_provider();
        let path = dir.path().join("plughost.toml");
        std::fs::write(&path, full_config(config, dir.path())).expect("write config");
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr file"),
            ))
            .spawn()
            .expect("start plughost");
        let admin_expected = !config.contains("admin = \"off\"");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut admin, mut redirect, mut scheme) = (None, None, None, "http");
        // A bound against a hang, not a timing: start-up waits for plugins to compile, and a
        // Python or JavaScript component compiled cold on a busy 2-core machine takes over 30 s.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut ready = !wait_ready;
        while addr.is_none() || (admin_expected && admin.is_none()) || !ready {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let stderr = std::fs::read_to_string(dir.path().join("stderr.txt"));
                panic!("plughost did not start; stderr: {stderr:?}");
            };
            if line == "plughost ready" {
                ready = true;
            } else if let Some(a) = line.strip_prefix("plughost listening on http://") {
                addr = Some(a.parse().expect("address"));
            } else if let Some(a) = line.strip_prefix("plughost listening on https://") {
                (addr, scheme) = (Some(a.parse().expect("address")), "https");
            } else if let Some(a) = line.strip_prefix("plughost redirect listening on http://") {
                redirect = Some(a.parse().expect("redirect address"));
            } else if let Some(a) = line.strip_prefix("plughost admin listening on http://") {
                admin = Some(a.parse().expect("admin address"));
            }
        }
        Self {
            child,
            addr: addr.expect("address"),
            scheme,
            admin,
            redirect,
            dir,
            stdout: lines,
        }
    }

    /// Replaces the config file (with the helper's base keys added, as at start); the server
    /// reads it on its next reload.
    pub fn rewrite_config(&self, config: &str) {
        let path = self.dir.path().join("plughost.toml");
        std::fs::write(&path, full_config(config, self.dir.path())).expect("write config");
    }

    /// Everything the process printed on stdout so far, a line each.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// URL of `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("admin listener"))
    }

    /// The log file's text so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plughost.log")).unwrap_or_default()
    }

    /// Waits (up to 5 s) until the log file contains `needle`, and returns the log. Log lines
    /// reach the file through the log thread, a moment after the event.
    pub fn wait_log(&self, needle: &str) -> String {
        eventually_blocking(
            Duration::from_secs(5),
            &format!("{needle:?} in the log"),
            || {
                let log = self.log();
                match log.contains(needle) {
                    true => Ok(log),
                    false => Err(log),
                }
            },
        )
    }

    /// Waits (up to 10 s) until metric `name` (the sum of its samples) reaches `at_least`,
    /// and returns it.
    pub async fn metric_reaches(&self, name: &str, at_least: f64) -> f64 {
        eventually(
            Duration::from_secs(10),
            &format!("{name} >= {at_least}"),
            async || match self.metric(name).await {
                n if n >= at_least => Ok(n),
                n => Err(n.to_string()),
            },
        )
        .await
    }

    /// The admin API's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// One metric's value from `/metrics` (the sum over its label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics_text().await, name)
    }

    /// A JSON document from the admin API (`/cache`, `/plugins`, `/backends`).
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.admin_url(path))
            .await
            .expect("admin request")
            .json()
            .await
            .expect("admin JSON")
    }

    /// `POST /plugins/reload` (which must answer 200) and its report.
    pub async fn reload(&self) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(self.admin_url("/plugins/reload"))
            .send()
            .await
            .expect("reload request");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("reload report")
    }

    /// Resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually_blocking(timeout, "plughost exits", || {
            child
                .try_wait()
                .expect("wait")
                .ok_or_else(|| "running".to_owned())
        })
    }
}

impl Drop for Plughost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn full_config(config: &str, dir: &Path) -> String {
    let mut text = String::new();
    let sets = |key: &str| {
        config
            .lines()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    };
    for (key, value) in BASE_CONFIG {
        if !sets(key) {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    if !sets("log_file") {
        let log = dir.join("plughost.log");
        text.push_str(&format!("log_file = {:?}\n", log.display().to_string()));
    }
    text.push_str(config);
    text.push('\n');
    text
}

/// Sum of a metric's samples in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of `name{labels}` in Prometheus text, `labels` written as they appear, e.g.
/// `plugin="p",reason="trap"`; 0 when absent.
pub fn labelled_metric(text: &str, name: &str, labels: &str) -> f64 {
    let sample = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Failed calls of `plugin` for `reason` in Prometheus text.
pub fn plugin_errors(text: &str, plugin: &str, reason: &str) -> f64 {
    labelled_metric(
        text,
        "plughost_plugin_errors_total",
        &format!("plugin=\"{plugin}\",reason=\"{reason}\""),
    )
}

/// `plughost_outbound_requests_total` of one plugin, destination and outcome.
pub fn outbound_requests(text: &str, plugin: &str, destination: &str, outcome: &str) -> f64 {
    labelled_metric(
        text,
        "plughost_outbound_requests_total",
        &format!("plugin=\"{plugin}\",destination=\"{destination}\",outcome=\"{outcome}\""),
    )
}

/// A wrk run against plughost, started in the background.
pub struct Wrk {
    child: Child,
}

/// What wrk counted.
#[derive(Debug)]
pub struct WrkResult {
    /// Responses received.
    pub requests: u64,
    /// Responses with a status outside 2xx and 3xx.
    pub non_2xx: u64,
    /// connect, read, write and timeout errors together.
    pub socket_errors: u64,
    /// wrk's whole report.
    pub report: String,
}

impl Wrk {
    /// Starts `wrk` (installed by `make setup`) on `url` with `connections` connections on
    /// 2 threads for `duration`.
    pub fn start(url: &str, connections: usize, duration: Duration) -> Self {
        Self::start_with(url, connections, duration, &[])
    }

    /// [`Wrk::start`] with more arguments (`-s script.lua`, `--timeout 10s`).
    pub fn start_with(url: &str, connections: usize, duration: Duration, extra: &[&str]) -> Self {
        let child = Command::new("wrk")
            .args(["-t2", "--latency"])
            .args(extra)
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk is missing: run `make setup` (it installs Debian's wrk)");
        Self { child }
    }

    /// Waits for the run to end and reads its report.
    pub fn finish(self) -> WrkResult {
        let out = self.child.wait_with_output().expect("wrk output");
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "wrk failed: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let number_after = |label: &str| -> u64 {
            report
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .next()?
                        .trim_end_matches(',')
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        let requests = report
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .expect("wrk report has a request count");
        let socket_errors = report
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .map_or(0, |rest| {
                rest.split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            });
        WrkResult {
            requests,
            non_2xx: number_after("Non-2xx or 3xx responses:"),
            socket_errors,
            report,
        }
    }
}

/// Serves `config` (with the helper's base keys) and expects plughost to stop by itself
/// without ever getting ready; returns its exit status and standard error.
pub fn fails_to_start(config: &str) -> (ExitStatus, String) {
    fails_to_start_in(tempfile::tempdir().expect("temp dir"), config)
}

/// Like [`fails_to_start`], in a directory the test has prepared (plugins, say).
pub fn fails_to_start_in(dir: TempDir, config: &str) -> (ExitStatus, String) {
    let path = dir.path().join("plughost.toml");
    std::fs::write(&path, full_config(config, dir.path())).expect("write config");
    let out = run(
        dir.path(),
        &["--config", path.to_str().expect("utf-8 path")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.lines().any(|l| l == "plughost ready"),
        "it got ready: {stdout}"
    );
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args` in `dir` and returns its output (for CLI and start-up errors).
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plughost");
    // A bound against a hang, not a timing: `plugin check` compiles a JavaScript component
    // (~10 MB) with the production engine, which takes over 20 s on a busy 2-core machine.
    let exited = poll_until(Duration::from_secs(120), || match child.try_wait() {
        Ok(Some(_)) => Ok(()),
        _ => Err("running".to_owned()),
    });
    if exited.is_err() {
        let _ = child.kill();
        panic!("plughost {args:?} did not exit within 120 s");
    }
    child.wait_with_output().expect("output")
}

/// Sends raw bytes over a new TCP connection and returns everything read until the server
/// closes it or `timeout` passes.
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of the first response in raw HTTP/1 text, 0 if there is none.
pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Asserts that no request is in flight and every processing slot is free.
pub async fn assert_no_leaks(server: &Plughost, slots: f64) {
    // The last response may be sent a moment before its permit is dropped.
    eventually(
        Duration::from_secs(1),
        "no request in flight, every slot free",
        async || {
            let inflight = server.metric("plughost_inflight_requests").await;
            let free = server.metric("plughost_limiter_permits_available").await;
            match inflight == 0.0 && free == slots {
                true => Ok(()),
                false => Err(format!(
                    "inflight={inflight}, permits available={free} of {slots}"
                )),
            }
        },
    )
    .await
}

/// One answer as [`read_response`] reads it.
pub type Answer = std::io::Result<(u16, String, Vec<u8>)>;

/// Sends two requests on a new connection to `addr` and reads both answers: `head` (request
/// line and fields, each line ending in CRLF) with a body of `body_len` bytes, and `next`
/// right behind it in the same write, so the second answer fails if the connection closed
/// after the first.
pub fn body_then_request(
    addr: SocketAddr,
    head: &str,
    body_len: usize,
    next: &str,
) -> (Answer, Answer) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bytes = format!("{head}Content-Length: {body_len}\r\n\r\n").into_bytes();
    bytes.resize(bytes.len() + body_len, b'x');
    bytes.extend_from_slice(next.as_bytes());
    conn.write_all(&bytes).unwrap();
    let first = read_response(&mut conn);
    (first, read_response(&mut conn))
}

/// Reads one HTTP/1.1 response with a `content-length` from `stream`: (status, head, body).
pub fn read_response(stream: &mut TcpStream) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((status_of(&head), head, body))
}

/// Path of a guest plugin built from `plugins/` by this crate's build script (e.g. `hello`).
pub fn plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_TEST_PLUGINS")).join(format!("{name}.wasm"))
}

/// Path of a native test plugin built by this crate's build script (e.g. `counter`).
pub fn native_plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_NATIVE_PLUGINS")).join(format!("{name}.so"))
}

/// Path of a Python example plugin built by this crate's build script (e.g. `describe`).
pub fn python_plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_PYTHON_PLUGINS")).join(format!("{name}.wasm"))
}

/// Path of a C example plugin built by this crate's build script (e.g. `blocklist`).
pub fn c_plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_C_PLUGINS")).join(format!("{name}.wasm"))
}

/// Path of a Go example plugin built by this crate's build script (e.g. `cors`).
pub fn go_plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_GO_PLUGINS")).join(format!("{name}.wasm"))
}

/// The wasi:http hello component of `bench/peers`, built as the bench builds it.
pub fn wasi_http_hello() -> PathBuf {
    PathBuf::from(env!("PLUGHOST_WASI_HTTP_HELLO"))
}

/// Path of a JavaScript example plugin built by this crate's build script (e.g. `rewrite`).
pub fn js_plugin(name: &str) -> PathBuf {
    Path::new(env!("PLUGHOST_JS_PLUGINS")).join(format!("{name}.wasm"))
}
