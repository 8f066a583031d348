//! The response cache seen from a client: x-cache, TTL, no-store, eviction, purge.

use std::time::Duration;

use plughost_e2e::{Plughost, eventually};

async fn get(server: &Plughost, path: &str) -> reqwest::Response {
    reqwest::get(server.url(path)).await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn second_get_is_a_hit_and_head_uses_it() {
    let server = Plughost::start("");
    assert_eq!(header(&get(&server, "/").await, "x-cache"), "miss");
    let hit = get(&server, "/").await;
    assert_eq!(header(&hit, "x-cache"), "hit");
    assert!(hit.headers().contains_key("age"));
    let head = reqwest::Client::new()
        .head(server.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&head, "x-cache"), "hit");
    assert_eq!(server.metric("plughost_cache_hits_total").await, 2.0);
    assert_eq!(server.metric("plughost_cache_misses_total").await, 1.0);
}

#[tokio::test]
async fn entries_expire_after_their_max_age() {
    let server = Plughost::start("");
    let path = "/_debug/respond?size=4&cache-control=max-age=1";
    let first = get(&server, path).await;
    let second = get(&server, path).await;
    assert_eq!(header(&second, "x-cache"), "hit");
    assert_eq!(
        header(&first, "x-response-number"),
        header(&second, "x-response-number")
    );
    // Once its second of freshness has passed, it is fetched again.
    let third = expired(&server, path).await;
    assert_ne!(
        header(&first, "x-response-number"),
        header(&third, "x-response-number")
    );
}

#[tokio::test]
async fn default_ttl_applies_when_the_response_has_none() {
    let server = Plughost::start("cache_ttl = \"1s\"");
    let path = "/_debug/respond?size=4";
    get(&server, path).await;
    assert_eq!(header(&get(&server, path).await, "x-cache"), "hit");
    expired(&server, path).await;
}

/// Asks for `path` until the cache answers it as a miss (its entry expired), for at most 5 s.
async fn expired(server: &Plughost, path: &str) -> reqwest::Response {
    eventually(Duration::from_secs(5), "the entry expired", async || {
        let r = get(server, path).await;
        match header(&r, "x-cache") {
            miss if miss == "miss" => Ok(r),
            other => Err(other),
        }
    })
    .await
}

#[tokio::test]
async fn no_store_is_honoured_on_response_and_request() {
    let server = Plughost::start("");
    let path = "/_debug/respond?size=4&cache-control=no-store";
    get(&server, path).await;
    assert_eq!(header(&get(&server, path).await, "x-cache"), "miss");

    get(&server, "/").await;
    let client = reqwest::Client::new();
    // A request's no-store keeps its own response out of the cache (RFC 9111 §5.2.1.5); a
    // response stored before may still answer it.
    let fresh_path = "/_debug/respond?size=2&k=no-store";
    for _ in 0..2 {
        let r = client
            .get(server.url(fresh_path))
            .header("cache-control", "no-store")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-cache"), "miss");
    }
    let stored = client
        .get(server.url("/"))
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&stored, "x-cache"), "hit");
    let revalidate = client
        .get(server.url("/"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&revalidate, "x-cache"), "miss");
}

#[tokio::test]
async fn least_recently_used_entry_is_evicted_at_capacity() {
    let server = Plughost::start("cache_capacity = 2");
    get(&server, "/_debug/respond?size=1&k=a").await;
    get(&server, "/_debug/respond?size=1&k=b").await;
    get(&server, "/_debug/respond?size=1&k=a").await; // a is now the most recent
    get(&server, "/_debug/respond?size=1&k=c").await; // evicts b
    assert_eq!(
        header(&get(&server, "/_debug/respond?size=1&k=a").await, "x-cache"),
        "hit"
    );
    assert_eq!(
        header(&get(&server, "/_debug/respond?size=1&k=b").await, "x-cache"),
        "miss"
    );
    let stats = server.admin_json("/cache").await;
    assert_eq!(stats["entries"], 2);
    assert!(stats["evictions"].as_u64().unwrap() >= 1, "{stats}");
}

#[tokio::test]
async fn bodies_over_the_entry_limit_are_not_cached() {
    let server = Plughost::start("cache_max_entry_bytes = 1000");
    for size in [1000, 1001] {
        let path = format!("/_debug/respond?size={size}");
        get(&server, &path).await;
        let expected = if size == 1000 { "hit" } else { "miss" };
        assert_eq!(
            header(&get(&server, &path).await, "x-cache"),
            expected,
            "size {size}"
        );
    }
}

#[tokio::test]
async fn delete_on_admin_purges_the_cache() {
    let server = Plughost::start("");
    get(&server, "/").await;
    let purged: serde_json::Value = reqwest::Client::new()
        .delete(server.admin_url("/cache"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purged["purged"], 1);
    assert_eq!(header(&get(&server, "/").await, "x-cache"), "miss");
}
