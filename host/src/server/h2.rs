//! HTTP/2 connections, served by hyper: a connection that begins with the HTTP/2 preface
//! (prior knowledge in cleartext, or after ALPN `h2` over TLS) is handed here by the HTTP/1
//! loop, with the bytes it has already read put back in front of the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// A socket with bytes already read off it put back in front.
pub struct Rewound {
    read: Bytes,
    io: Socket,
}

impl Rewound {
    /// `io`, whose reads begin with `read`.
    pub fn new(io: Socket, read: Bytes) -> Self {
        Self { read, io }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
