//! The limiter seen from clients: 10 requests processed at once, the 11th waits, then 503.

use std::time::{Duration, Instant};

use plughost_e2e::{Plughost, assert_no_leaks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleventh_request_waits_then_gets_503_with_retry_after() {
    let server = Plughost::start("queue_timeout = \"300ms\"");
    let client = reqwest::Client::new();
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let req = client.get(server.url("/_debug/sleep?ms=1500")).send();
            tokio::spawn(req)
        })
        .collect();
    // Wait until all ten hold a slot.
    server
        .metric_reaches("plughost_inflight_requests", 10.0)
        .await;
    let started = Instant::now();
    let refused = client.get(server.url("/")).send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}, before the queue timeout"
    );
    for r in slow {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_no_leaks(&server, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_served_when_a_slot_frees() {
    let server = Plughost::start("max_concurrency = 1\nqueue_timeout = \"5s\"");
    let client = reqwest::Client::new();
    let first = tokio::spawn(client.get(server.url("/_debug/sleep?ms=400")).send());
    server
        .metric_reaches("plughost_inflight_requests", 1.0)
        .await;
    let second = tokio::spawn(client.get(server.url("/_debug/sleep?ms=1")).send());
    // It waits for the slot the first holds.
    server.metric_reaches("plughost_queue_waiting", 1.0).await;
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    assert_no_leaks(&server, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_and_handlers_that_panic_leak_no_slot() {
    let server = Plughost::start("");
    // Clients that give up while their request sleeps in a slot.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let gone: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client.get(server.url("/_debug/sleep?ms=2000")).send()))
        .collect();
    for g in gone {
        assert!(g.await.unwrap().is_err());
    }
    for _ in 0..20 {
        let r = reqwest::get(server.url("/_debug/panic")).await.unwrap();
        assert_eq!(r.status(), 500);
    }
    assert_no_leaks(&server, 10.0).await;
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
}
