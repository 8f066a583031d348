//! A plugin's backoff, kept per client.
//!
//! A plugin that fails `failure_threshold` times within `failure_window` for one client is
//! not called for that client's requests for `backoff`: they fail (or, with
//! `on_error = "continue"`, go on without it) at once. Other clients' requests still call
//! it. A plugin-wide backoff would let one client who can make a filter fail (a query of
//! death: a path it traps on) switch the filter off for everyone: with `on_error =
//! "continue"` an auth filter skipped for every client, with `fail` every client refused.
//! Kept per client, a query of death costs only the client who sends it, and a plugin that
//! fails for everyone still stops being called, client by client.
//!
//! Clients are told apart by address: an IPv4 address, or the /64 an IPv6 address belongs to
//! (one host is usually given a whole /64). At most [`CLIENTS_TRACKED`] clients are tracked,
//! the least recently failing forgotten first, so the table is bounded whoever fails.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

/// Clients whose failures are counted at once, per plugin.
pub const CLIENTS_TRACKED: usize = 4096;

/// One plugin's failures and backoffs, by client.
pub struct Backoff {
    threshold: u32,
    window: Duration,
    length: Duration,
    /// Clients in backoff now: while it is 0, a call looks nothing up.
    active: AtomicUsize,
    clients: Mutex<LruCache<IpAddr, Record, foldhash::fast::RandomState>>,
}

struct Record {
    window_started: Instant,
    failures: u32,
    /// The end of its backoff, while it is in one.
    until: Option<Instant>,
}

/// What a failure did.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted.
    Counted,
    /// It started a backoff for its client.
    BackedOff,
}

/// The client `ip` is counted as.
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
            }
        },
        v4 => v4,
    }
}

impl Backoff {
    /// `threshold` failures within `window` back a client off for `length`.
    pub fn new(threshold: u32, window: Duration, length: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            window,
            length,
            active: AtomicUsize::new(0),
            clients: Mutex::new(LruCache::with_hasher(
                NonZeroUsize::new(CLIENTS_TRACKED).expect("not zero"),
                foldhash::fast::RandomState::default(),
            )),
        }
    }

    /// Whether the plugin is not called for `ip` now.
    pub fn holds(&self, ip: IpAddr) -> bool {
        if self.active.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut clients = self.clients.lock();
        let Some(record) = clients.peek_mut(&client(ip)) else {
            return false;
        };
        match record.until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                record.until = None;
                self.active.fetch_sub(1, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Counts a failed call for `ip`.
    pub fn failed(&self, ip: IpAddr) -> Failure {
        let now = Instant::now();
        let mut clients = self.clients.lock();
        let key = client(ip);
        if clients.get(&key).is_none() {
            let fresh = Record {
                window_started: now,
                failures: 0,
                until: None,
            };
            if let Some((_, gone)) = clients.push(key, fresh)
                && gone.until.is_some()
            {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let record = clients.get_mut(&key).expect("just put there");
        if now.duration_since(record.window_started) > self.window {
            record.window_started = now;
            record.failures = 0;
        }
        record.failures += 1;
        if record.failures < self.threshold || record.until.is_some() {
            return Failure::Counted;
        }
        record.failures = 0;
        record.until = Some(now + self.length);
        self.active.fetch_add(1, Ordering::Relaxed);
        Failure::BackedOff
    }

    /// Clients in backoff now (some may have just ended theirs).
    pub fn clients_held(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_client_backed_off_leaves_the_others_alone() {
        let b = Backoff::new(3, Duration::from_secs(10), Duration::from_secs(60));
        let (bad, good) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(b.failed(bad), Failure::Counted);
        assert_eq!(b.failed(good), Failure::Counted);
        assert_eq!(b.failed(bad), Failure::Counted);
        assert_eq!(b.failed(bad), Failure::BackedOff);
        assert!(b.holds(bad));
        assert!(!b.holds(good));
        assert_eq!(b.clients_held(), 1);
    }

    #[test]
    fn a_backoff_ends() {
        let b = Backoff::new(1, Duration::from_secs(10), Duration::ZERO);
        assert_eq!(b.failed(ip("10.0.0.1")), Failure::BackedOff);
        assert!(!b.holds(ip("10.0.0.1")));
        assert_eq!(b.clients_held(), 0);
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_a_mapped_address_its_ipv4() {
        let b = Backoff::new(2, Duration::from_secs(10), Duration::from_secs(60));
        b.failed(ip("2001:db8:1:2::1"));
        b.failed(ip("2001:db8:1:2::ffff"));
        assert!(b.holds(ip("2001:db8:1:2::7")));
        assert!(!b.holds(ip("2001:db8:1:3::1")));
        b.failed(ip("::ffff:10.0.0.9"));
        b.failed(ip("10.0.0.9"));
        assert!(b.holds(ip("10.0.0.9")));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_evicted_backoffs() {
        let b = Backoff::new(1, Duration::from_secs(10), Duration::from_secs(60));
        b.failed(ip("10.0.0.1"));
        for i in 0..CLIENTS_TRACKED as u32 {
            b.failed(IpAddr::V4((0x0b00_0000 + i).into()));
        }
        assert_eq!(b.clients.lock().len(), CLIENTS_TRACKED);
        assert!(!b.holds(ip("10.0.0.1")), "evicted");
        assert_eq!(b.clients_held(), CLIENTS_TRACKED);
    }
}
