//! HTTP/2 connections, served by hyper: a connection that begins with the HTTP/2 preface
//! (prior knowledge in cleartext, or after ALPN `h2` over TLS) is handed here by the HTTP/1
//! loop, with the bytes it has already read put back in front of the socket.

use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, Join, ReadHalf, WriteHalf};

use super::conn::Socket;

/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const PING_INTERVAL: Duration = Duration::from_secs(20);

/// hyper's HTTP/2 server with a listener's limits.
pub fn builder(max_header_bytes: usize) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes.try_into().unwrap_or(u32::MAX))
        // Pings find peers that vanished while streams are open; an idle HTTP/2 connection is
        // closed by the listener's sweeper like an HTTP/1 one.
        .keep_alive_interval(Some(PING_INTERVAL))
        .keep_alive_timeout(PING_INTERVAL);
    builder
}

/// A socket whose reads begin with bytes already read off it.
pub type Rewound =
    TokioIo<Join<tokio::io::Chain<Cursor<Bytes>, ReadHalf<Socket>>, WriteHalf<Socket>>>;

/// `io` with `read` put back in front of what it reads next.
pub fn rewound(io: Socket, read: Bytes) -> Rewound {
    let (reader, writer) = tokio::io::split(io);
    TokioIo::new(tokio::io::join(Cursor::new(read).chain(reader), writer))
}
