//! The log thread and the bounded buffer in front of it.
//!
//! Written here rather than with tracing-appender's non-blocking writer, which it replaces:
//! that writer takes one line per message, so every access line was an allocation, a channel
//! send and, when the thread slept, a wake-up and a write(2) (~2,000 instructions of a
//! 24,000-instruction cache hit, callgrind 2026-11). Access lines now gather in a batch per thread
//! that the log thread collects every [`COLLECT_EVERY`] or that is sent when full; the
//! buffer's bound counts lines, whatever the batches, so `log_buffer` and the drop count mean
//! what they did, which a writer counting messages could not give.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long an access line may wait in its thread's batch before the log thread writes it.
pub const COLLECT_EVERY: Duration = Duration::from_millis(100);

/// A batch is sent once it holds this many bytes (or its share of lines, see [`Writer::start`]).
const BATCH_BYTES: usize = 16 * 1024;

/// Lines for the log thread, and how many there are.
enum Msg {
    Lines(Vec<u8>, usize),
    Stop,
}

/// One thread's access lines not yet handed to the log thread.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
}

/// What the writers and the log thread share.
struct Shared {
    tx: Sender<Msg>,
    /// Lines sent and not yet written; at most `limit`.
    in_flight: AtomicUsize,
    limit: usize,
    /// Lines a batch holds at most.
    batch_lines: usize,
    /// Lines refused because the buffer was full.
    dropped: AtomicU64,
    /// Every thread's batch, for the log thread to collect. A batch only the log thread
    /// still holds belongs to a thread that has ended: collected one last time, it is
    /// forgotten.
    batches: Mutex<Vec<Arc<Mutex<Batch>>>>,
}

/// A handle that writes lines through the log thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer(Arc<Shared>);

/// Keeps the log thread running; dropping it writes every line still buffered, waiting for
/// the thread at most [`SHUTDOWN_WAIT`].
pub struct Guard {
    shared: Arc<Shared>,
    /// Closed by the log thread when it has written everything.
    done: Receiver<()>,
    /// How long to wait for that.
    wait: Duration,
}

/// How long shutdown waits for the last lines to be written: a log file on a disk that hangs
/// must not keep the process from exiting.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Writer {
    /// Starts the log thread writing to `sink`, with room for `limit` lines in flight.
    pub fn start<W: Write + Send + 'static>(limit: usize, sink: W) -> (Writer, Guard) {
        Self::start_waiting(limit, sink, SHUTDOWN_WAIT)
    }

    /// [`Writer::start`], the guard waiting at most `wait` at shutdown.
    fn start_waiting<W: Write + Send + 'static>(
        limit: usize,
        sink: W,
        wait: Duration,
    ) -> (Writer, Guard) {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        let limit = limit.max(1);
        let shared = Arc::new(Shared {
            tx,
            in_flight: AtomicUsize::new(0),
            limit,
            // A quarter of the buffer, so a full batch never finds it full for want of room.
            batch_lines: (limit / 4).clamp(1, 128),
            dropped: AtomicU64::new(0),
            batches: Mutex::new(Vec::new()),
        });
        std::thread::Builder::new()
            .name("plughost-log".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    run(&shared, &rx, sink);
                    drop(done_tx);
                }
            })
            .expect("the log thread starts");
        (Writer(shared.clone()), Guard { shared, done, wait })
    }

    /// Lines refused because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Hands `lines` lines in `bytes` to the log thread, or drops and counts them when the
    /// buffer has no room for them.
    fn send(&self, bytes: Vec<u8>, lines: usize) {
        let s = &self.0;
        if s.in_flight.fetch_add(lines, Ordering::AcqRel) + lines > s.limit {
            s.in_flight.fetch_sub(lines, Ordering::AcqRel);
            s.dropped.fetch_add(lines as u64, Ordering::Relaxed);
            return;
        }
        if s.tx.send(Msg::Lines(bytes, lines)).is_err() {
            // The log thread has stopped: nothing will write them.
            s.in_flight.fetch_sub(lines, Ordering::AcqRel);
            s.dropped.fetch_add(lines as u64, Ordering::Relaxed);
        }
    }

    /// Adds one access line (ending in `\n`) to the calling thread's batch.
    pub fn push_batched(&self, line: &[u8]) {
        thread_local! {
            static BATCH: std::cell::OnceCell<ThreadBatch> = const { std::cell::OnceCell::new() };
        }
        BATCH.with(|b| b.get_or_init(|| self.batch()).push(line));
    }

    /// A new batch for the calling thread, collected by the log thread.
    fn batch(&self) -> ThreadBatch {
        let batch = Arc::new(Mutex::new(Batch::default()));
        self.0.batches.lock().push(batch.clone());
        ThreadBatch {
            writer: self.clone(),
            batch,
        }
    }
}

/// The calling thread's access-line batch.
struct ThreadBatch {
    writer: Writer,
    batch: Arc<Mutex<Batch>>,
}

impl ThreadBatch {
    /// Adds one line (ending in `\n`), sending the batch when it is full.
    fn push(&self, line: &[u8]) {
        let mut b = self.batch.lock();
        b.bytes.extend_from_slice(line);
        b.lines += 1;
        if b.lines >= self.writer.0.batch_lines || b.bytes.len() >= BATCH_BYTES {
            let full = std::mem::replace(&mut b.bytes, Vec::with_capacity(BATCH_BYTES));
            let lines = std::mem::take(&mut b.lines);
            drop(b);
            self.writer.send(full, lines);
        }
    }
}

/// Each `write` is one formatted `tracing` event, sent as it is: events are rare next to
/// access lines, and a warning should reach the file at once.
impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let lines = buf.iter().filter(|b| **b == b'\n').count().max(1);
        self.send(buf.to_vec(), lines);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.shared.tx.send(Msg::Stop);
        if let Err(RecvTimeoutError::Timeout) = self.done.recv_timeout(self.wait) {
            eprintln!(
                "plughost: the log file took longer than {:?} to write the last lines; exiting without them",
                self.wait
            );
        }
    }
}

/// The log thread: writes what is sent as it comes, collects the threads' batches every
/// [`COLLECT_EVERY`], and flushes whenever nothing more is waiting.
fn run<W: Write>(shared: &Shared, rx: &Receiver<Msg>, mut sink: W) {
    let mut spare = Vec::with_capacity(BATCH_BYTES);
    let mut collected = Instant::now();
    loop {
        let wait = COLLECT_EVERY.saturating_sub(collected.elapsed());
        let mut stop = false;
        let mut next = match rx.recv_timeout(wait) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                stop = true;
                None
            }
        };
        while let Some(msg) = next {
            match msg {
                Msg::Lines(bytes, lines) => {
                    let _ = sink.write_all(&bytes);
                    shared.in_flight.fetch_sub(lines, Ordering::AcqRel);
                }
                Msg::Stop => stop = true,
            }
            next = rx.try_recv().ok();
        }
        if stop || collected.elapsed() >= COLLECT_EVERY {
            collected = Instant::now();
            shared.batches.lock().retain(|batch| {
                let ended = Arc::strong_count(batch) == 1;
                {
                    let mut b = batch.lock();
                    if b.lines == 0 {
                        return !ended;
                    }
                    std::mem::swap(&mut b.bytes, &mut spare);
                    b.lines = 0;
                }
                let _ = sink.write_all(&spare);
                spare.clear();
                !ended
            });
        }
        let _ = sink.flush();
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batched_lines_reach_the_sink_by_the_collection_and_all_at_the_end() {
        let sink = Memory::default();
        let (writer, guard) = Writer::start(1000, sink.clone());
        writer.push_batched(b"one\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.0.lock().is_empty() {
            assert!(
                Instant::now() < deadline,
                "a batched line was never collected"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let other = std::thread::spawn({
            let writer = writer.clone();
            move || writer.push_batched(b"two\n")
        });
        other.join().unwrap();
        writer.push_batched(b"three\n");
        drop(guard);
        // The ended thread's batch was collected and forgotten; this thread's remains.
        assert_eq!(writer.0.batches.lock().len(), 1);
        let text = String::from_utf8(sink.0.lock().clone()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["one", "three", "two"]);
        assert_eq!(writer.dropped(), 0);
    }

    /// A sink that blocks until released, so the buffer fills.
    struct Stalled(Arc<std::sync::Barrier>, Memory);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.wait();
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_over_the_bound_are_dropped_and_counted_exactly() {
        let release = Arc::new(std::sync::Barrier::new(2));
        let sink = Memory::default();
        let (mut writer, guard) = Writer::start(8, Stalled(release.clone(), sink.clone()));
        for i in 0..20 {
            // One write per event, as tracing's formatter makes it.
            writer.write_all(format!("event {i}\n").as_bytes()).unwrap();
        }
        let dropped = writer.dropped();
        std::thread::spawn(move || {
            for _ in 0..20 {
                release.wait();
            }
        });
        // Lines count against the bound until written, and the sink holds the first: 8 taken.
        assert_eq!(dropped, 12);
        drop(guard);
        let written = String::from_utf8(sink.0.lock().clone())
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(written + writer.dropped(), 20);
    }

    #[test]
    fn a_sink_that_hangs_does_not_hold_up_shutdown() {
        let never = Arc::new(std::sync::Barrier::new(2));
        let (mut writer, guard) = Writer::start_waiting(
            8,
            Stalled(never, Memory::default()),
            Duration::from_millis(200),
        );
        writer.write_all(b"stuck\n").unwrap();
        let started = Instant::now();
        drop(guard);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
