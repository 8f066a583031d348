//! W3C trace context and OTLP export, against a real OTLP/HTTP receiver (the protobuf decoded
//! with the `opentelemetry-proto` types) and real backends that echo the `traceparent` they
//! received: one request through a filter and the proxy is one trace whose spans nest (server,
//! then the plugin call and the cache, the upstream exchange in the cache), whose ids are the
//! backend's; the spans carry the plugin's world and memory, an exchange's retry and
//! ejection, a cached variant (never its values) and a background revalidation; an unsampled
//! request exports nothing but still passes its context on; a dead collector costs requests
//! nothing and its lost spans are counted.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use plughost_e2e::backend::TestBackend;
use plughost_e2e::otlp::{Receiver, Span, hex};
use plughost_e2e::{Plughost, eventually, labelled_metric, plugin};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER: &str = "b7ad6b7169203331";

/// The `headers` filter, then `/api` proxied to `app`, traced to `endpoint`.
fn traced(endpoint: &str, app: &TestBackend) -> String {
    format!(
        "[[plugins]]\nname = \"headers\"\nfile = {:?}\nconfig = {{ request = {{ name = \"x-a\", value = \"1\" }} }}\n\
         [upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"app\"\nstrip_prefix = true\n\
         [tracing]\nendpoint = \"{endpoint}\"\nservice_name = \"gateway\"\n",
        plugin("headers").display().to_string(),
        app.addr,
    )
}

/// The `traceparent` the backend received, from its `/headers` echo.
fn received_traceparent(echo: &str) -> String {
    echo.lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_default()
        .to_owned()
}

/// The value of attribute `key` of `attributes`, as `Debug` prints it ("" when absent).
fn value_of(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .map(|v| format!("{:?}", v.value))
        .unwrap_or_default()
}

fn attribute(span: &Span, key: &str) -> String {
    value_of(&span.attributes, key)
}

/// wasi:http component `file` as plugin `name` on `/NAME`, allowed to call `app`, traced to
/// `receiver`.
fn calling(name: &str, file: &str, app: &TestBackend, receiver: &Receiver) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nfile = {:?}\nkind = \"wasi-http\"\nallowed_outbound = [\"http://{}\"]\n\
         [[routes]]\nprefix = \"/{name}\"\nplugin = \"{name}\"\n[tracing]\nendpoint = \"{}\"\n",
        plugin(file).display().to_string(),
        app.addr,
        receiver.url(),
    )
}

/// A sampled `traceparent` of trace number `n`, from the caller's span.
fn sampled(n: u32) -> (String, String) {
    let trace = format!("{n:032x}");
    let traceparent = format!("00-{trace}-{CALLER}-01");
    (trace, traceparent)
}

async fn get(server: &Plughost, traceparent: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(server.url("/api/headers"))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn one_request_is_one_trace_whose_spans_nest_and_reach_the_backend() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&traced(&receiver.url(), &app));
    let (status, echo) = get(&server, &format!("00-{TRACE}-{CALLER}-01")).await;
    assert_eq!(status, 200);
    // The backend was sent our exchange's span as its parent, in the caller's trace.
    let sent = received_traceparent(&echo);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{echo}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(
        parts[2], CALLER,
        "the caller's span was passed on unchanged"
    );
    let spans = eventually(
        Duration::from_secs(10),
        "three spans exported",
        async || {
            let spans = receiver.trace(TRACE);
            if spans.len() >= 3 {
                Ok(spans)
            } else {
                Err(format!("{spans:?}"))
            }
        },
    )
    .await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let named = |name: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
    };
    // OTLP span kinds: 1 internal, 2 server, 3 client. The server span and the upstream
    // exchange are both named for the method.
    let of_kind = |kind: i32| {
        spans
            .iter()
            .find(|s| s.kind == kind && s.name == "GET")
            .unwrap()
    };
    let (server_span, plugin_span, cache_span, client_span) = (
        of_kind(2),
        named("plugin headers"),
        named("cache"),
        of_kind(3),
    );
    assert_eq!((plugin_span.kind, cache_span.kind), (1, 1));
    assert_eq!(hex(&server_span.parent_span_id), CALLER);
    assert_eq!(plugin_span.parent_span_id, server_span.span_id);
    assert_eq!(cache_span.parent_span_id, server_span.span_id);
    assert_eq!(client_span.parent_span_id, cache_span.span_id);
    assert_eq!(hex(&client_span.span_id), parts[2], "the backend's parent");
    assert!(attribute(server_span, "http.response.status_code").contains("200"));
    assert!(attribute(plugin_span, "plughost.outcome").contains("ok"));
    assert!(
        attribute(plugin_span, "plughost.plugin.world").contains("plughost:plugin/plugin"),
        "{plugin_span:?}"
    );
    let memory = attribute(plugin_span, "plughost.plugin.memory_bytes");
    assert!(
        memory.contains("IntValue(") && !memory.contains("IntValue(0)"),
        "{plugin_span:?}"
    );
    assert!(attribute(cache_span, "plughost.outcome").contains("miss"));
    assert!(
        attribute(client_span, "server.port").contains(&app.addr.port().to_string()),
        "{client_span:?}"
    );
    // The access line names the trace, so logs and traces join.
    let log = server.wait_log(&format!("trace_id={TRACE}"));
    assert!(log.contains("target=\"/api/headers\""), "{log}");
}

#[tokio::test]
async fn an_unsampled_request_exports_nothing_and_passes_its_context_on() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&traced(&receiver.url(), &app));
    let unsampled = "11111111111111111111111111111111";
    let (status, echo) = get(&server, &format!("00-{unsampled}-{CALLER}-00")).await;
    assert_eq!(status, 200);
    let sent = received_traceparent(&echo);
    assert!(
        sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    // A sampled request after it: once its spans are in, the unsampled one had its chance.
    assert_eq!(
        get(&server, &format!("00-{TRACE}-{CALLER}-01")).await.0,
        200
    );
    eventually(
        Duration::from_secs(10),
        "the sampled trace",
        async || match receiver.trace(TRACE).len() {
            4 => Ok(()),
            n => Err(format!("{n} spans")),
        },
    )
    .await;
    assert!(receiver.trace(unsampled).is_empty());
}

#[tokio::test]
async fn a_dead_collector_costs_requests_nothing_and_its_spans_are_counted() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", dead.local_addr().unwrap());
    drop(dead);
    let app = TestBackend::start("app");
    let server = Plughost::start(&traced(&endpoint, &app));
    for _ in 0..20 {
        assert_eq!(
            get(&server, &format!("00-{TRACE}-{CALLER}-01")).await.0,
            200
        );
    }
    eventually(
        Duration::from_secs(15),
        "failed exports counted",
        async || {
            let m = server.metrics_text().await;
            match labelled_metric(&m, "plughost_trace_spans_total", "outcome=\"failed\"") {
                n if n >= 1.0 => Ok(()),
                _ => Err(m),
            }
        },
    )
    .await;
}

/// A plugin's outbound request and key-value operations are spans of its call, and the
/// outbound request carries the host's context, whatever the guest wrote.
#[tokio::test]
async fn a_plugins_outbound_call_and_key_value_operations_are_spans_of_its_call() {
    let receiver = Receiver::start();
    let auth = TestBackend::start("auth");
    let app = TestBackend::start("app");
    let config = format!(
        "[[plugins]]\nname = \"introspect\"\nfile = {:?}\nkeyvalue = [\"tokens\"]\nallowed_outbound = [\"http://{auth}\"]\n\
         config = {{ endpoint = \"http://{auth}/introspect\", cache_bucket = \"tokens\" }}\n[keyvalue.tokens]\n\
         [upstreams.app]\nservers = [\"{app}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"app\"\n\
         [tracing]\nendpoint = \"{}\"\n",
        plugin("introspect").display().to_string(),
        receiver.url(),
        auth = auth.addr,
        app = app.addr,
    );
    let server = Plughost::start(&config);
    let r = reqwest::Client::new()
        .get(server.url("/api/x"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .header("authorization", "Bearer good-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = eventually(Duration::from_secs(10), "the plugin's spans", async || {
        let spans = receiver.trace(TRACE);
        if spans.iter().any(|s| s.name == "outbound") && spans.len() >= 6 {
            Ok(spans)
        } else {
            Err(format!("{spans:?}"))
        }
    })
    .await;
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let call = named("plugin introspect")[0];
    let outbound = named("outbound")[0];
    assert_eq!(outbound.parent_span_id, call.span_id);
    // A get (a miss) before the introspection and a set after it.
    let kv = named("keyvalue");
    assert_eq!(kv.len(), 2, "{spans:#?}");
    assert!(kv.iter().all(|s| s.parent_span_id == call.span_id));
    let sent = format!("traceparent: 00-{TRACE}-{}-01", hex(&outbound.span_id));
    assert!(auth.seen.lock().unwrap().contains(&sent), "{:?}", auth.seen);
}

/// A filter sees the host's span in its request's `traceparent`, not the caller's.
#[tokio::test]
async fn a_plugin_sees_the_hosts_traceparent() {
    let receiver = Receiver::start();
    let config = format!(
        "[[plugins]]\nname = \"see\"\nfile = {:?}\nkind = \"responder\"\nconfig = {{ mode = \"echo-header\", path = \"traceparent\" }}\n\
         [[routes]]\nprefix = \"/see\"\nplugin = \"see\"\n[tracing]\nendpoint = \"{}\"\n",
        plugin("hostile").display().to_string(),
        receiver.url(),
    );
    let server = Plughost::start(&config);
    let r = reqwest::Client::new()
        .get(server.url("/see"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = r.text().await.unwrap();
    let spans = eventually(Duration::from_secs(10), "the server span", async || {
        receiver
            .trace(TRACE)
            .into_iter()
            .find(|s| s.kind == 2)
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert_eq!(
        seen.trim_end(),
        format!("00-{TRACE}-{}-01", hex(&spans.span_id)),
        "the plugin saw the caller's context"
    );
}

/// Of two servers, the first refuses connections: the request that meets it is sent on to
/// the other, and its exchange's span says so: one resend, a `retry` and an `ejected` event
/// naming the dead server, and the live one as the server that answered.
#[tokio::test]
async fn an_upstream_span_records_its_retry_and_the_ejection() {
    let receiver = Receiver::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let live = TestBackend::start("live");
    let server = Plughost::start(&format!(
        "[upstreams.app]\nservers = [\"127.0.0.1:{dead_port}\", \"{}\"]\nhealth_interval = \"1h\"\nmax_fails = 1\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"app\"\nstrip_prefix = true\n[tracing]\nendpoint = \"{}\"\n",
        live.addr,
        receiver.url(),
    ));
    // Round robin: one of the two requests meets the dead server first.
    let (trace, traceparent) = sampled(1);
    for _ in 0..2 {
        assert_eq!(get(&server, &traceparent).await.0, 200);
    }
    let spans = eventually(Duration::from_secs(10), "two exchanges", async || {
        let spans = receiver.trace(&trace);
        match spans.iter().filter(|s| s.kind == 3).count() {
            2 => Ok(spans),
            n => Err(format!("{n} exchanges: {spans:?}")),
        }
    })
    .await;
    let exchanges: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    let live_port = live.addr.port().to_string();
    assert!(
        exchanges
            .iter()
            .all(|s| attribute(s, "server.port").contains(&live_port)),
        "{exchanges:#?}"
    );
    let retried: Vec<&&Span> = exchanges
        .iter()
        .filter(|s| !attribute(s, "http.request.resend_count").is_empty())
        .collect();
    assert_eq!(retried.len(), 1, "{exchanges:#?}");
    let retried = retried[0];
    assert!(attribute(retried, "http.request.resend_count").contains("IntValue(1)"));
    let event = |name: &str| {
        retried
            .events
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} event: {retried:#?}"))
    };
    let (retry, ejected) = (event("retry"), event("ejected"));
    for e in [retry, ejected] {
        assert!(
            value_of(&e.attributes, "server.port").contains(&dead_port.to_string()),
            "{e:?}"
        );
    }
    assert!(value_of(&retry.attributes, "plughost.reason").contains("connect"));
    assert!(value_of(&ejected.attributes, "plughost.ejected_ms").contains("IntValue(10000)"));
}

/// A hit's cache span names the request headers that select its variant and an id of their
/// values, the same for the same values and another for others; the values themselves
/// (which may be credentials) are in no span.
#[tokio::test]
async fn a_cache_span_tells_variants_apart_without_their_values() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&traced(&receiver.url(), &app));
    let client = reqwest::Client::new();
    // Each request a trace of its own: a miss and a hit for each value, then one more hit.
    let asks = [
        (1, "secret-a"),
        (2, "secret-a"),
        (3, "secret-b"),
        (4, "secret-b"),
        (5, "secret-a"),
    ];
    for (n, encoding) in asks {
        let r = client
            .get(server.url("/api/vary"))
            .header("traceparent", sampled(n).1)
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-encoding"], encoding);
    }
    let hit = async |n: u32| {
        eventually(Duration::from_secs(10), "a hit's cache span", async || {
            let spans = receiver.trace(&sampled(n).0);
            for span in &spans {
                for a in &span.attributes {
                    assert!(!format!("{a:?}").contains("secret-"), "{span:?}");
                }
            }
            spans
                .into_iter()
                .find(|s| s.name == "cache")
                .ok_or_else(|| "none yet".to_owned())
        })
        .await
    };
    let (a, b, again) = (hit(2).await, hit(4).await, hit(5).await);
    for s in [&a, &b, &again] {
        assert!(attribute(s, "plughost.outcome").contains("hit"), "{s:?}");
        assert!(
            attribute(s, "plughost.cache.vary").contains("\"accept-encoding\""),
            "{s:?}"
        );
    }
    let variant = |s: &Span| attribute(s, "plughost.cache.variant");
    assert_eq!(variant(&a), variant(&again));
    assert_ne!(variant(&a), variant(&b));
    assert!(
        hit(1)
            .await
            .attributes
            .iter()
            .all(|a| a.key != "plughost.cache.variant")
    );
}

/// A stale entry answered at once (`stale-while-revalidate`) is fetched again behind the
/// request; that fetch is a span in the request's trace, under its cache span, and holds the
/// upstream exchange.
#[tokio::test]
async fn a_background_revalidation_is_a_span_of_the_request_that_started_it() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&traced(&receiver.url(), &app));
    let client = reqwest::Client::new();
    let ask = async |traceparent: &str| {
        let r = client
            .get(server.url("/api/swr"))
            .header("traceparent", traceparent)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-cache"].to_str().unwrap().to_owned()
    };
    assert_eq!(ask(&sampled(1).1).await, "miss");
    // Fresh for 1 s; then the next request is answered stale.
    let (trace, traceparent) = sampled(2);
    eventually(
        Duration::from_secs(10),
        "a stale answer",
        async || match ask(&traceparent).await.as_str() {
            "stale" => Ok(()),
            other => Err(other.to_owned()),
        },
    )
    .await;
    let spans = eventually(Duration::from_secs(10), "the revalidation", async || {
        let spans = receiver.trace(&trace);
        let revalidated = spans
            .iter()
            .find(|s| s.name == "revalidate")
            .is_some_and(|r| {
                spans
                    .iter()
                    .any(|s| s.kind == 3 && s.parent_span_id == r.span_id)
            });
        if revalidated {
            Ok(spans)
        } else {
            Err(format!("{spans:?}"))
        }
    })
    .await;
    let revalidation = spans.iter().find(|s| s.name == "revalidate").unwrap();
    let parent = spans
        .iter()
        .find(|s| s.span_id == revalidation.parent_span_id)
        .expect("its parent is in the trace");
    assert_eq!(parent.name, "cache");
    assert!(attribute(parent, "plughost.outcome").contains("stale"));
    assert!(
        attribute(revalidation, "plughost.outcome").contains("miss"),
        "{revalidation:?}"
    );
}

/// A wasi:http component that calls out after it has sent its response head: the call goes
/// on after the request's plugin span ended, and its outbound request is still a span of it.
#[tokio::test]
async fn a_components_outbound_call_after_its_head_is_in_its_trace() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&calling("h", "http_hostile", &app, &receiver));
    let (trace, traceparent) = sampled(1);
    let r = reqwest::Client::new()
        .get(server.url(&format!("/h/fetch-after-head?url=http://{}/x", app.addr)))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "fetching\nstatus=200\n");
    let spans = eventually(Duration::from_secs(10), "the outbound span", async || {
        let spans = receiver.trace(&trace);
        if spans.iter().any(|s| s.name == "outbound") {
            Ok(spans)
        } else {
            Err(format!("{spans:?}"))
        }
    })
    .await;
    let call = spans.iter().find(|s| s.name == "plugin h").unwrap();
    assert!(attribute(call, "plughost.plugin.world").contains("wasi:http/proxy@0.2"));
    let outbound = spans.iter().find(|s| s.name == "outbound").unwrap();
    assert_eq!(outbound.parent_span_id, call.span_id, "{spans:#?}");
    assert!(attribute(outbound, "plughost.outcome").contains("ok"));
}

/// A component's outbound request carries its request's context, sampled or not, whatever
/// `traceparent` the guest wrote.
#[tokio::test]
async fn a_components_outbound_request_cannot_forge_the_context() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&calling("h", "http_hostile", &app, &receiver));
    for flags in ["01", "00"] {
        let r = reqwest::Client::new()
            .get(server.url(&format!("/h/fetch-forged?url=http://{}/headers", app.addr)))
            .header("traceparent", format!("00-{TRACE}-{CALLER}-{flags}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sent = received_traceparent(&r.text().await.unwrap());
        assert!(
            sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with(&format!("-{flags}")),
            "the backend was sent {sent:?}"
        );
        assert!(!sent.contains(CALLER), "{sent}");
    }
}

/// A WASI 0.3 service's outbound request runs on its instance's task, apart from the request
/// that made it, so it is sent no context; but not the one its guest made up either.
#[tokio::test]
async fn a_wasi_p3_services_outbound_request_drops_its_made_up_context() {
    let receiver = Receiver::start();
    let app = TestBackend::start("app");
    let server = Plughost::start(&calling("svc", "p3_service", &app, &receiver));
    let r = reqwest::Client::new()
        .get(server.url(&format!("/svc/outbound?url=http://{}/headers", app.addr)))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo = r.text().await.unwrap();
    assert!(echo.starts_with("outbound 200"), "{echo}");
    assert!(!echo.contains("0123456789abcdef"), "{echo}");
}
