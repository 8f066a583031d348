//! The threads that serve the public listener's connections (`server`), one per core by
//! default.
//!
//! Each worker is a thread running a current-thread tokio runtime, as each of nginx's worker
//! processes and HAProxy's threads runs one event loop. A connection is handed to the worker
//! with the fewest open connections when it is accepted and stays there with every task it
//! spawns (HTTP/2 streams, a wasm call) and the upstream connections it opens
//! (`upstream::pool` keeps idle ones per worker), so its wake-ups never cross cores, where one
//! work-stealing runtime moved them between cores.
//!
//! The accept loop stays on the main runtime, with the admin API, reloads and health checks:
//! a hand-off rather than one `SO_REUSEPORT` listener per worker, because the kernel's hash
//! spreads a few connections unevenly over a few workers, and a second plughost started on
//! the same port would silently share it instead of failing with "address in use". The
//! hand-off costs each new connection one `epoll_ctl` on each side, not each request.
//!
//! Blocking work stays off the workers: plugin compiles run on tokio's blocking pool, each
//! native plugin on a thread of its own, and a wasm call yields at its epoch deadlines.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's worker, counted from 1; 0 on every other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker running on this thread, counted from 1; 0 off the workers (the main runtime,
/// blocking threads). Lets per-worker state (idle upstream connections) be indexed by it.
pub fn current() -> usize {
    INDEX.get()
}

/// The worker threads, until [`Workers::stop`].
pub struct Workers {
    workers: Vec<Worker>,
    /// Each worker's open connections, `plughost_worker_connections`.
    open: Family<WorkerLabel, Gauge>,
    /// Ends every worker's event loop.
    done: CancellationToken,
}

/// The label of a worker's series: its number, from 1.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// Which worker.
    pub worker: usize,
}

struct Worker {
    handle: Handle,
    /// Connections open on it, to hand the next one to the least loaded (and in the metrics,
    /// so an uneven spread shows).
    open: Gauge,
    thread: JoinHandle<()>,
}

impl Workers {
    /// Starts `n` (at least 1) worker threads, each with its event loop running.
    pub fn start(n: usize) -> io::Result<Self> {
        let done = CancellationToken::new();
        let open = Family::<WorkerLabel, Gauge>::default();
        let workers = (1..=n.max(1))
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let handle = runtime.handle().clone();
                let done = done.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("plughost-worker-{index}"))
                    .spawn(move || {
                        INDEX.set(index);
                        runtime.block_on(done.cancelled());
                        // What is still on it was cut off at the end of the shutdown timeout.
                        runtime.shutdown_timeout(Duration::from_millis(100));
                    })?;
                Ok(Worker {
                    handle,
                    open: open.get_or_create(&WorkerLabel { worker: index }).clone(),
                    thread,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            workers,
            open,
            done,
        })
    }

    /// Adds each worker's open connections to the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "plughost_worker_connections",
            "Open client connections on each worker thread",
            self.open.clone(),
        );
    }

    /// Runs one connection's task to its end on the worker with the fewest open connections.
    /// The task is made on that worker (`make` runs there), so the sockets it opens belong to
    /// that worker's event loop.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open.get())
            .expect("at least one worker");
        let open = worker.open.clone();
        open.inc();
        worker.handle.spawn(async move {
            let _open = Open(open);
            make().await;
        });
    }

    /// Ends the workers' event loops (after the listener has drained) and waits for their
    /// threads.
    pub fn stop(self) {
        self.done.cancel();
        for w in self.workers {
            let _ = w.thread.join();
        }
    }
}

/// One open connection of a worker, counted until its task ends or is dropped.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_run_on_its_thread() {
        let workers = Workers::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold, held) = tokio::sync::watch::channel(());
        for _ in 0..4 {
            let (tx, mut held) = (tx.clone(), held.clone());
            workers.spawn(move || async move {
                tx.send(current()).unwrap();
                // Stays open until the test lets go.
                let _ = held.changed().await;
            });
        }
        let mut seen: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [1, 1, 2, 2]);
        drop(hold);
        workers.stop();
        assert_eq!(current(), 0, "the test's thread is no worker");
    }
}
