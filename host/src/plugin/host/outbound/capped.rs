//! A response as the guest reads it: its body within the plugin's byte cap and the pause
//! allowed between chunks, and a failure of an upstream pool's body in the interface's words.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::Error;

use crate::upstream::h1;

/// A response body within the plugin's byte cap and the pause allowed between chunks. It
/// holds the request's in-flight permit until the guest drops it.
pub(super) struct Capped<B> {
    pub(super) inner: B,
    pub(super) left: usize,
    pub(super) cap: usize,
    pub(super) between: Duration,
    pub(super) idle: Pin<Box<tokio::time::Sleep>>,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl<B> http_body::Body for Capped<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > this.left {
                    this.left = 0;
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                        this.cap as u64,
                    )))));
                }
                this.left -= len;
                let next = tokio::time::Instant::now() + this.between;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The interface's error for a body from `[upstreams.NAME]` that failed while it was read.
impl From<h1::Error> for Error {
    fn from(e: h1::Error) -> Self {
        match e {
            h1::Error::Io(_) | h1::Error::Closed => Error::ConnectionTerminated,
            h1::Error::Truncated(_) => Error::HttpResponseIncomplete,
            h1::Error::Malformed(_) | h1::Error::Body(_) => Error::HttpProtocolError,
        }
    }
}
