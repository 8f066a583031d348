//! The memory bucket's rules, called directly; the Redis bucket meets the same rules in the
//! end-to-end tests (`tests/tests/keyvalue_hostile.rs`), which run one table on both.

use std::time::Duration;

use prometheus_client::registry::Registry;

use super::KEY_MAX;
use super::buckets::{Bucket, KvMetrics};
use super::rules::{PAGE, check_key, counter};
use crate::config::KeyValueConfig;
use crate::plugin::host::budget::Answer;

fn bucket(ttl: Option<Duration>, max_keys: usize) -> Bucket {
    let mut c = KeyValueConfig::memory();
    c.ttl = ttl;
    c.max_keys = max_keys;
    Bucket::new("b", &c, KvMetrics::register(&mut Registry::default()))
}

fn answer() -> Answer {
    Answer::new(1 << 20)
}

#[tokio::test]
async fn memory_counts_expires_and_refuses_past_its_bounds() {
    let b = bucket(Some(Duration::from_millis(50)), 2);
    assert_eq!(b.increment("a".into(), 41).await.unwrap(), 41);
    assert_eq!(b.increment("a".into(), 1).await.unwrap(), 42);
    assert_eq!(b.get("a".into(), answer()).await.unwrap().unwrap(), b"42");
    b.set("x".into(), b"v".to_vec()).await.unwrap();
    assert!(
        b.set("y".into(), b"v".to_vec()).await.is_err(),
        "max_keys is 2"
    );
    b.set("x".into(), b"w".to_vec()).await.unwrap();
    // The ttl is the point: time has to pass.
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        b.get("a".into(), answer()).await.unwrap().is_none(),
        "expired"
    );
    b.set("y".into(), b"v".to_vec()).await.unwrap();
    assert!(b.increment("y".into(), 1).await.is_err(), "not a counter");
}

#[tokio::test]
async fn a_batch_past_the_quota_writes_nothing() {
    let b = bucket(None, 3);
    b.set("a".into(), b"1".to_vec()).await.unwrap();
    let pairs = (0..3).map(|i| (format!("k{i}"), vec![1])).collect();
    let e = b.set_many(pairs).await.unwrap_err();
    assert!(format!("{e:?}").contains("nothing was written"), "{e:?}");
    assert!(
        !b.exists("k0".into()).await.unwrap(),
        "a refused batch wrote"
    );
    // The same key twice in a batch is one key, its last value.
    let pairs = vec![("k".into(), vec![1]), ("k".into(), vec![2])];
    b.set_many(pairs).await.unwrap();
    assert_eq!(b.get("k".into(), answer()).await.unwrap().unwrap(), [2]);
}

#[tokio::test]
async fn batches_and_pages_see_the_same_keys() {
    let b = bucket(None, 1000);
    let pairs: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| (format!("k{i:03}"), vec![i as u8]))
        .collect();
    b.set_many(pairs).await.unwrap();
    let got = b
        .get_many(vec!["k001".into(), "nope".into()], answer())
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![("k001".into(), Some(vec![1])), ("nope".into(), None)]
    );
    let (keys, cursor) = b.list_keys(None, answer()).await.unwrap();
    assert_eq!(keys.len(), PAGE);
    let (keys, cursor) = b.list_keys(cursor, answer()).await.unwrap();
    assert_eq!(keys.len(), 50);
    assert!(cursor.is_none());
    b.delete("delete", vec!["k000".into(), "k001".into()])
        .await
        .unwrap();
    assert!(!b.exists("k000".into()).await.unwrap());
}

/// A key present through a whole listing is listed once, however the bucket changes between
/// pages (keys added, removed, rewritten).
#[tokio::test]
async fn a_listing_is_stable_while_the_bucket_changes() {
    let b = bucket(None, 100_000);
    let pairs = (0..1000).map(|i| (format!("k{i}"), vec![1])).collect();
    b.set_many(pairs).await.unwrap();
    let (mut seen, mut cursor, mut n) = (Vec::new(), None, 0);
    loop {
        let (keys, next) = b.list_keys(cursor, answer()).await.unwrap();
        seen.extend(keys);
        // Between pages: a new key, one rewritten, one deleted (not yet listed).
        b.set(format!("new{n}"), vec![1]).await.unwrap();
        b.set("k5".into(), vec![2]).await.unwrap();
        b.delete("delete", vec![format!("k{}", 999 - n)])
            .await
            .unwrap();
        n += 1;
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a key was listed twice");
    assert!(seen.contains(&"k0".to_string()) && seen.contains(&"k5".to_string()));
}

#[tokio::test]
async fn an_answer_past_its_budget_is_refused_before_it_is_gathered() {
    let b = bucket(None, 10);
    b.set("big".into(), vec![7; 4096]).await.unwrap();
    let keys = vec!["big".to_string(); 1000];
    let e = b.get_many(keys, Answer::new(64 * 1024)).await.unwrap_err();
    assert!(format!("{e:?}").contains("max_answer_bytes"), "{e:?}");
    assert!(b.get("big".into(), Answer::new(100)).await.is_err());
    assert!(b.get("big".into(), Answer::new(4096)).await.is_ok());
}

#[tokio::test]
async fn a_swap_writes_only_over_the_version_its_handle_read() {
    let b = bucket(None, 10);
    let absent = b.snapshot("k".into(), answer()).await.unwrap();
    assert!(matches!(absent.value, Ok(None)));
    b.set("k".into(), b"1".to_vec()).await.unwrap();
    // Written since the handle read it: refused, and handed what it is now.
    let now = b
        .swap("k", absent.version, b"x".to_vec(), answer())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(now.value.as_ref().unwrap().as_deref(), Some(&b"1"[..]));
    b.swap("k", now.version, b"2".to_vec(), answer())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.get("k".into(), answer()).await.unwrap().unwrap(), b"2");
    // Deleted and written again with the same value: still a new version.
    let seen = b.snapshot("k".into(), answer()).await.unwrap();
    b.delete("delete", vec!["k".into()]).await.unwrap();
    b.set("k".into(), b"2".to_vec()).await.unwrap();
    let swapped = b.swap("k", seen.version, b"3".to_vec(), answer()).await;
    assert!(
        swapped.unwrap().is_err(),
        "a rewritten key kept its version"
    );
    // A value past the answer budget is not read, and says so when asked for.
    b.set("big".into(), vec![0; 4096]).await.unwrap();
    let big = b.snapshot("big".into(), Answer::new(100)).await.unwrap();
    assert!(big.value.is_err());
}

#[tokio::test]
async fn a_counter_never_goes_below_zero() {
    let b = bucket(None, 10);
    assert_eq!(b.increment("c".into(), 5).await.unwrap(), 5);
    assert_eq!(b.increment("c".into(), -5).await.unwrap(), 0);
    let e = b.increment("c".into(), -1).await.unwrap_err();
    assert!(e.0.contains("below 0; nothing was written"), "{e:?}");
    assert_eq!(b.get("c".into(), answer()).await.unwrap().unwrap(), b"0");
}

#[test]
fn counters_are_canonical_decimals_up_to_i64_max() {
    for ok in ["0", "7", "42", "9223372036854775807"] {
        assert!(counter(ok.as_bytes()).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-5",
        "+5",
        "007",
        " 5",
        "5 ",
        "1.5",
        "9223372036854775808",
        "x",
    ] {
        assert!(counter(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn keys_are_bounded() {
    assert!(check_key(&"k".repeat(KEY_MAX)).is_ok());
    assert!(check_key(&"k".repeat(KEY_MAX + 1)).is_err());
}
