//! Raw bytes as plughost's HTTP/1 server reads them, arriving in pieces: request heads are
//! parsed or refused and bodies framed and decoded without panicking, a head is never taken
//! past the head limit, a body never yields more than it declared, and the bytes after a
//! request are never consumed by it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use plughost::http1::Decoded;
use plughost::server::h1::request::{self, Framing};

#[derive(Arbitrary, Debug)]
struct Input {
    wire: Vec<u8>,
    /// Sizes of the pieces the bytes arrive in.
    pieces: Vec<u8>,
    max_headers: u8,
}

const MAX_HEAD: usize = 8192;

fuzz_target!(|input: Input| {
    let max_headers = usize::from(input.max_headers).max(1);
    let mut rest = &input.wire[..];
    let mut pieces = input.pieces.iter().map(|p| usize::from(*p).max(1)).cycle();
    let mut buf = BytesMut::new();
    let mut take = |buf: &mut BytesMut| {
        let n = pieces.next().unwrap_or(usize::MAX).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        n > 0
    };
    // Up to 4 requests on the connection.
    for _ in 0..4 {
        let head = loop {
            match request::parse(&mut buf, MAX_HEAD, max_headers) {
                Ok(Some(head)) => break head,
                Err(_) => return,
                Ok(None) => {
                    assert!(buf.len() < MAX_HEAD, "a head past the limit is still waited for");
                    if !take(&mut buf) {
                        return;
                    }
                }
            }
        };
        assert!(head.parts.headers.len() <= max_headers);
        let mut framing = head.body;
        let declared = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let mut read = 0u64;
        loop {
            match &mut framing {
                Framing::Done => break,
                Framing::Broken => return,
                Framing::Length(left) => {
                    let n = (*left).min(buf.len() as u64);
                    let _ = buf.split_to(n as usize);
                    *left -= n;
                    read += n;
                    if *left == 0 {
                        framing = Framing::Done;
                    } else if !take(&mut buf) {
                        return;
                    }
                }
                Framing::Chunked(chunked) => match chunked.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty());
                        read += d.len() as u64;
                    }
                    Ok(Decoded::End(_)) => framing = Framing::Done,
                    Ok(Decoded::NeedMore) => {
                        if !take(&mut buf) {
                            return;
                        }
                    }
                    Err(_) => return,
                },
            }
        }
        if let Some(n) = declared {
            assert_eq!(read, n, "a body read other than its Content-Length");
        }
        assert!(read <= input.wire.len() as u64);
    }
});
