//! The export of ended spans: a bounded queue that never makes a request wait, and one
//! thread that batches them to the collector, counting each span exported, failed or
//! dropped. The SDK's own batch processor drops silently, which is why this is written here.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Spans exported in one request to the collector at most.
const BATCH: usize = 512;

/// Longest an ended span waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// The label of the span counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// exported, failed or dropped.
    pub outcome: &'static str,
}

/// What goes to the export thread.
enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    /// Export what is queued, then answer.
    Flush(mpsc::Sender<()>),
}

/// The bounded queue between ended spans and the exporter's thread.
#[derive(Debug)]
pub struct Queue {
    tx: SyncSender<Msg>,
    dropped: Counter,
}

impl Queue {
    pub fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        size: usize,
        spans: Family<OutcomeLabel, Counter>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(size);
        let count = |outcome| spans.get_or_create(&OutcomeLabel { outcome }).clone();
        let (exported, failed) = (count("exported"), count("failed"));
        // Not joined: it ends when every sender is gone, with the provider.
        std::thread::Builder::new()
            .name("plughost-trace-export".into())
            .spawn(move || export_loop(exporter, &rx, &exported, &failed))?;
        Ok(Self {
            tx,
            dropped: count("dropped"),
        })
    }

    /// Asks the thread to export what is queued; waits for it at most `timeout`. A full
    /// queue (the collector slow or gone) is not waited for.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done, wait) = mpsc::channel();
        self.tx
            .try_send(Msg::Flush(done))
            .map_err(|_| OTelSdkError::InternalFailure("the span queue is full".into()))?;
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.tx.try_send(Msg::Resource(resource.clone()));
    }
}

/// The export thread: batches of up to [`BATCH`] spans, each sent when full or
/// [`BATCH_WAIT`] after its first span, on a runtime of its own (the HTTP client needs one).
fn export_loop(
    mut exporter: opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Msg>,
    exported: &Counter,
    failed: &Counter,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("tracing: cannot start the export runtime; no span will be exported");
        return;
    };
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut first: Option<Instant> = None;
    loop {
        let wait = first.map_or(BATCH_WAIT, |t| BATCH_WAIT.saturating_sub(t.elapsed()));
        let mut flushed = None;
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(span)) => {
                first.get_or_insert_with(Instant::now);
                batch.push(*span);
            }
            Ok(Msg::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Msg::Flush(done)) => flushed = Some(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                send(&runtime, &exporter, &mut batch, exported, failed);
                return;
            }
        }
        let due = first.is_some_and(|t| t.elapsed() >= BATCH_WAIT);
        if batch.len() >= BATCH || due || flushed.is_some() {
            send(&runtime, &exporter, &mut batch, exported, failed);
            first = None;
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn send(
    runtime: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    exported: &Counter,
    failed: &Counter,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match runtime.block_on(exporter.export(std::mem::take(batch))) {
        Ok(()) => {
            exported.inc_by(n);
        }
        Err(e) => {
            failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "tracing: an export failed");
        }
    }
}
