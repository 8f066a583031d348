//! The concurrency limiter: at most `max_concurrency` requests are processed at once.
//!
//! Connections are not limited here (idle keep-alive connections cost no permit); only the work
//! of producing a response is. A permit is an RAII guard, so it returns to the semaphore however
//! the request ends: response sent, client gone (hyper drops the future), error, or panic.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Metrics;

/// Hands out processing permits, waiting at most `queue_timeout` for one.
pub struct Limiter {
    semaphore: Semaphore,
    capacity: usize,
    queue_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// No permit came free within the queue timeout.
#[derive(Debug, thiserror::Error)]
#[error("all {capacity} processing slots stayed busy for {waited:?}")]
pub struct Overloaded {
    /// Slots in the limiter.
    pub capacity: usize,
    /// How long the request waited.
    pub waited: Duration,
}

/// Held while a request is processed; gives the slot back on drop.
pub struct Permit<'a> {
    _permit: SemaphorePermit<'a>,
    metrics: &'a Metrics,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.metrics.inflight.dec();
    }
}

/// Counts a request as queued for as long as it lives.
struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queue_waiting.dec();
    }
}

impl Limiter {
    /// A limiter with `capacity` slots.
    pub fn new(capacity: usize, queue_timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            semaphore: Semaphore::new(capacity),
            capacity,
            queue_timeout,
            metrics,
        }
    }

    /// A free slot now, if there is one.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let permit = self.semaphore.try_acquire().ok()?;
        Some(self.granted(permit))
    }

    /// Waits for a free slot, at most the queue timeout.
    pub async fn acquire(&self) -> Result<Permit<'_>, Overloaded> {
        // Fast path: no queueing, no timer.
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        self.metrics.queue_waiting.inc();
        let _waiting = Waiting(&self.metrics);
        match tokio::time::timeout(self.queue_timeout, self.semaphore.acquire()).await {
            Ok(Ok(permit)) => Ok(self.granted(permit)),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Overloaded {
                capacity: self.capacity,
                waited: self.queue_timeout,
            }),
        }
    }

    fn granted<'a>(&'a self, permit: SemaphorePermit<'a>) -> Permit<'a> {
        self.metrics.inflight.inc();
        Permit {
            _permit: permit,
            metrics: &self.metrics,
        }
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// How long a refused client should wait before retrying, in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.queue_timeout.as_secs().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(n: usize, timeout_ms: u64) -> Limiter {
        Limiter::new(
            n,
            Duration::from_millis(timeout_ms),
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn third_request_waits_then_times_out() {
        let l = limiter(2, 50);
        let a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        assert_eq!(l.available(), 0);
        assert!(l.acquire().await.is_err());
        drop(a);
        assert!(l.acquire().await.is_ok());
    }

    #[tokio::test]
    async fn permits_and_gauges_return_when_dropped() {
        let l = limiter(1, 10);
        {
            let _p = l.acquire().await.unwrap();
            assert_eq!(l.metrics.inflight.get(), 1);
            let _ = l.acquire().await;
        }
        assert_eq!(l.available(), 1);
        assert_eq!(l.metrics.inflight.get(), 0);
        assert_eq!(l.metrics.queue_waiting.get(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_when_it_frees() {
        let l = Arc::new(limiter(1, 5_000));
        let p = l.acquire().await.unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await.is_ok() });
        // The waiter runs on this test's one thread when this task yields.
        let queued = async {
            while l.metrics.queue_waiting.get() != 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), queued)
            .await
            .expect("the second acquire waits in the queue");
        drop(p);
        assert!(waiter.await.unwrap());
    }
}
