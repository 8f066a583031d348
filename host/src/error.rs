//! Errors of one request, by who caused them, and the one place where they become responses.
//!
//! Response bodies say what happened in words a client can act on and never carry internal
//! details (paths, backtraces); those go to the log.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::upstream::UpstreamError;

/// Who made a request fail.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The client: its request cannot be served as sent.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// plughost itself is at capacity; retrying later may succeed.
    #[error("server busy: {0}")]
    Overloaded(#[from] crate::limiter::Overloaded),
    /// A plugin failed on this request (trap, deadline, memory, or an `err` result).
    #[error(transparent)]
    Plugin(#[from] crate::plugin::error::Failed),
    /// A backend failed or none was available.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// A plugin the request needs is not there: still loading, or it did not load.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A bug in plughost (a panic in a handler, say).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A plugin a request needs is not running.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// plughost is starting and this plugin is still loading (compiling, say).
    #[error("plughost is starting: plugin {0} is still loading; retry shortly")]
    Starting(String),
    /// The responder of this route did not load (it is `optional`); the log says why.
    #[error("the plugin {0} that answers this route is not loaded")]
    NotLoaded(String),
}

/// Requests that cannot be served as sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Body larger than `max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read (connection reset, malformed chunking).
    #[error("request body could not be read")]
    BadBody,
    /// No route matches.
    #[error("no route for {0}")]
    NotFound(String),
    /// A query parameter of a route is missing or malformed, or the request breaks a rule of
    /// HTTP/1.1 that hyper leaves to the server (Host, framing, request target form).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// CONNECT (plughost does not tunnel), or a method unknown to HTTP outside the routes of
    /// plugins and upstreams (they may implement it).
    #[error("method not implemented")]
    NotImplemented,
    /// The default page answers GET and HEAD only.
    #[error("method not allowed here; use GET or HEAD")]
    MethodNotAllowed,
}

/// The upstream side's failures by who caused them: a request body past its limit is the
/// client's (413, and never a backend error that `stale-if-error` would answer for), a
/// request that cannot be written is plughost's.
impl From<UpstreamError> for RequestError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::BodyTooLarge { limit } => ClientError::BodyTooLarge { limit }.into(),
            UpstreamError::Unencodable => Self::Internal(e.to_string()),
            e => Self::Upstream(e),
        }
    }
}

impl From<body::ReadError> for RequestError {
    fn from(e: body::ReadError) -> Self {
        match e {
            body::ReadError::TooLarge { limit } => ClientError::BodyTooLarge { limit }.into(),
            body::ReadError::Broken => ClientError::BadBody.into(),
        }
    }
}

impl RequestError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client(ClientError::BodyTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Client(ClientError::BadBody | ClientError::BadRequest(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Client(ClientError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Client(ClientError::NotImplemented) => StatusCode::NOT_IMPLEMENTED,
            Self::Client(ClientError::MethodNotAllowed) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The response sent for this error.
    pub fn into_response(self, retry_after_secs: u64) -> Response<Body> {
        let status = self.status();
        let text = match &self {
            Self::Internal(_) => "internal server error\n".to_owned(),
            Self::Plugin(failed) => format!("plugin {} failed on this request\n", failed.plugin),
            other => format!("{other}\n"),
        };
        let mut resp = Response::new(body::full(Bytes::from(text)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            Self::Overloaded(_) => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unavailable(Unavailable::Starting(_)) => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Client(ClientError::MethodNotAllowed) => {
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the upstream side reports is classed by who caused it: a body past its limit is
    /// the client's (so `stale-if-error`, which answers for backends, leaves it alone).
    #[test]
    fn upstream_failures_are_classed_by_who_caused_them() {
        let too_large = RequestError::from(UpstreamError::BodyTooLarge { limit: 10 });
        assert!(
            matches!(too_large, RequestError::Client(_)),
            "{too_large:?}"
        );
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let timeout = RequestError::from(UpstreamError::Timeout("api".into()));
        assert!(matches!(timeout, RequestError::Upstream(_)));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let down = RequestError::from(UpstreamError::NoHealthyServer("api".into()));
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
        let unwritable = RequestError::from(UpstreamError::Unencodable);
        assert_eq!(unwritable.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
