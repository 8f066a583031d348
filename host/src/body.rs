//! The body type every response (and every routed request) carries: boxed, so cached bytes,
//! generated pages and streamed backend bodies can all flow through one pipeline.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};

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
