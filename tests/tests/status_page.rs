//! The admin listener's status page, loaded in headless Chromium (Debian's chromium and
//! chromium-driver, installed by `make setup`) through ChromeDriver's WebDriver API while
//! traffic flows: its content is checked through the DOM and a screenshot is saved.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use plughost_e2e::{Plughost, backend::TestBackend, eventually, plugin};
use serde_json::{Value, json};

/// A ChromeDriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: run `make setup` (Debian's chromium-driver)");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        eventually(
            Duration::from_secs(20),
            "chromedriver answers",
            async || {
                let status = driver.http.get(format!("{}/status", driver.url)).send();
                status.await.map(drop).map_err(|e| e.to_string())
            },
        )
        .await;
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let reply: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(
            reply["value"].get("error").is_none(),
            "WebDriver {path}: {reply}"
        );
        reply["value"].clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_live_traffic_plugins_cache_and_backends_in_chromium() {
    let backend = TestBackend::start("b1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("headers"), dir.path().join("headers.wasm")).unwrap();
    let config = format!(
        "plugins_dir = \".\"\n[[plugins]]\nname = \"headers\"\nfile = \"headers.wasm\"\n\
         keyvalue = [\"seen\"]\n[keyvalue.seen]\n\
         [upstreams.api]\nservers = [\"{}\"]\nhealth_interval = \"200ms\"\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"api\"\n",
        backend.addr
    );
    let server = Plughost::start_in(dir, &config);

    // Traffic for the page to show, bounded in time.
    let urls = [server.url("/"), server.url("/api/x")];
    let traffic = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(15);
        let mut n = 0u64;
        while Instant::now() < until {
            let _ = client.get(&urls[(n % 2) as usize]).send().await;
            n += 1;
        }
    });

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver
        .call(
            reqwest::Method::POST,
            "/session",
            Some(
                json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--window-size=1100,1300",
                             format!("--user-data-dir={}", profile.path().display())],
                }}}}),
            ),
        )
        .await;
    let id = session["sessionId"]
        .as_str()
        .expect("session id")
        .to_owned();
    let s = |path: &str| format!("/session/{id}{path}");
    driver
        .call(
            reqwest::Method::POST,
            &s("/url"),
            Some(json!({"url": server.admin_url("/")})),
        )
        .await;

    // What the page shows, read through the DOM once it has a few samples.
    let read = json!({"script": r#"
        const text = (id) => document.getElementById(id).textContent;
        const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')]
            .map((tr) => [...tr.cells].map((td) => td.textContent));
        return {
            loaded: document.body.dataset.loaded === 'true',
            title: document.title,
            rps: text('rps'), p99: text('p99'), requests: text('requests'),
            plugins: rows('plugins'), backends: rows('backends'),
            cache: text('cache-entries'), hitRate: text('hit-rate'),
            points: document.getElementById('rps-line').getAttribute('points').split(' ').filter(Boolean).length,
        };"#, "args": []});
    let page = eventually(
        Duration::from_secs(20),
        "the page showing traffic",
        async || {
            let execute = s("/execute/sync");
            let page = driver
                .call(reqwest::Method::POST, &execute, Some(read.clone()))
                .await;
            match page["loaded"] == true
                && page["points"].as_u64() >= Some(3)
                && page["rps"].as_str().and_then(|r| r.parse::<f64>().ok()) > Some(0.0)
            {
                true => Ok(page),
                false => Err(page.to_string()),
            }
        },
    )
    .await;
    assert_eq!(page["title"], "plughost status");
    assert_ne!(page["p99"], "-", "{page}");
    let plugin_row = &page["plugins"][0];
    assert_eq!(plugin_row[0], "headers", "{page}");
    assert_eq!(plugin_row[6], "seen", "{page}");
    assert!(
        plugin_row[2].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{page}"
    );
    let backend_row = &page["backends"][0];
    assert_eq!(backend_row[0], "api", "{page}");
    assert_eq!(backend_row[1], backend.addr.to_string(), "{page}");
    assert_eq!(backend_row[2], "up", "{page}");
    assert!(page["cache"].as_str().unwrap().ends_with("/ 100"), "{page}");
    assert!(page["hitRate"].as_str().unwrap().ends_with('%'), "{page}");

    let shot = driver
        .call(reqwest::Method::GET, &s("/screenshot"), None)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());
    driver.call(reqwest::Method::DELETE, &s(""), None).await;
    traffic.abort();
}
