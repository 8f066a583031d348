//! The body type every response (and every routed request) carries: boxed, so cached bytes,
//! generated pages and streamed backend bodies can all flow through one pipeline; and the two
//! ways a request body is consumed within its limit (read whole, or drained).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, combinators::BoxBody};

/// Errors a body can fail with, from any source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request body that fails with [`http_body_util::LengthLimitError`] past `limit` bytes.
pub fn limited<B>(body: B, limit: usize) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Limited::new(body, limit).boxed()
}

/// A body that is `Send` but not `Sync` (wasi:http's streams) as a pipeline [`Body`],
/// which must be `Sync`: it is only ever polled through `&mut`, which is what `SyncWrapper`
/// allows.
pub fn from_unsync<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Unsync(sync_wrapper::SyncWrapper::new(body)).boxed()
}

struct Unsync<B>(sync_wrapper::SyncWrapper<B>);

impl<B> http_body::Body for Unsync<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(self.get_mut().0.get_mut())
            .poll_frame(cx)
            .map(|frame| frame.map(|r| r.map_err(Into::into)))
    }
}

/// Why a request body could not be read; the client's fault either way (413 or 400).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It went past `limit` bytes.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit it passed.
        limit: usize,
    },
    /// The connection broke or its framing was malformed.
    #[error("request body could not be read")]
    Broken,
}

/// Reads a whole request body, failing past its limit.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    // Most requests (GET, HEAD) have none: skip the collector and its allocations.
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    match body.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(body_error(&e, limit)),
    }
}

/// Reads a request body to its end and drops it chunk by chunk. A responder not given the
/// body, or an answer that needs none, goes out once it has arrived, so the connection stays
/// open for the next request: left unread, it was closed under a client still sending (nginx
/// discards a body it does not need the same way). An over-limit body is 413, as when read.
pub async fn discard_body(mut body: Body, limit: usize) -> Result<(), ReadError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| body_error(&e, limit))?;
    }
    Ok(())
}

fn body_error(e: &BoxError, limit: usize) -> ReadError {
    match e.downcast_ref::<LengthLimitError>() {
        Some(_) => ReadError::TooLarge { limit },
        None => ReadError::Broken,
    }
}
