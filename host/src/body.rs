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
