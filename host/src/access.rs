//! The access-log line of a response, written when its body has been sent whole or cut off,
//! so the log records what the client received: a body that failed mid-way (a backend that
//! died, a client that went away) is logged with `aborted=true` and counted, never as a plain
//! success, and `bytes` is what was really sent. With tracing on, the request's server span
//! ends there too, and the line carries its trace id.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::client::Client;
use crate::logging::{self, Access};
use crate::metrics::Metrics;
use crate::telemetry;

/// A response body that writes the access-log line when it is dropped.
pub struct Logged {
    inner: Body,
    line: Line,
    /// Body bytes handed to the connection so far.
    sent: u64,
    /// The last byte was handed over (or there was nothing to send).
    complete: bool,
    metrics: Arc<Metrics>,
}

/// The access-log fields known when the response head is ready.
pub struct Line {
    /// The client's address.
    pub client: Client,
    /// Request method.
    pub method: Method,
    /// Request target.
    pub uri: Uri,
    /// HTTP version.
    pub version: Version,
    /// Response status.
    pub status: StatusCode,
    /// Time to the response head.
    pub duration: Duration,
    /// `hit`, `miss` or `-`.
    pub cache: &'static str,
    /// The request's trace, when tracing is on: its server span ends with the line.
    pub trace: Option<opentelemetry::Context>,
}

impl Logged {
    /// Wraps `inner`, the body of a response described by `line`.
    pub fn new(inner: Body, line: Line, metrics: Arc<Metrics>) -> Self {
        // HEAD responses and statuses without a body are sent whole once the head is: the
        // server never polls their bodies.
        let bodiless = line.method == Method::HEAD
            || line.status == StatusCode::NO_CONTENT
            || line.status == StatusCode::NOT_MODIFIED;
        Self {
            complete: bodiless || inner.is_end_stream(),
            inner,
            line,
            sent: 0,
            metrics,
        }
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                this.complete = this.inner.is_end_stream();
            }
            Poll::Ready(None) => this.complete = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let aborted = !self.complete;
        if aborted {
            self.metrics.responses_aborted.inc();
        }
        let l = &self.line;
        let trace_id = l.trace.as_ref().map(|cx| {
            telemetry::finish(cx, l.status.as_u16(), self.sent, l.cache, aborted);
            telemetry::trace_id(cx)
        });
        logging::access(&Access {
            client: l.client.as_str(),
            method: &l.method,
            target: l.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            version: l.version,
            status: l.status,
            bytes: self.sent,
            duration: l.duration,
            cache: l.cache,
            aborted,
            trace_id: trace_id.as_ref().map(|t| t.as_str()),
        });
    }
}
