//! Why an exchange with a backend failed.

use std::io;

use crate::body::BoxError;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("backend connection failed: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before sending any of a response.
    #[error("backend closed the connection before responding")]
    Closed,
    /// The backend closed the connection in the middle of the response.
    #[error("backend closed the connection in the middle of the response {0}")]
    Truncated(&'static str),
    /// What the backend sent is not an HTTP/1.x response plughost can frame.
    #[error("malformed backend response: {0}")]
    Malformed(&'static str),
    /// The request's body failed while it was being sent (its size limit, a client gone).
    #[error("request body failed: {0}")]
    Body(#[source] BoxError),
}

impl From<crate::http1::Malformed> for Error {
    fn from(e: crate::http1::Malformed) -> Self {
        Self::Malformed(e.0)
    }
}
