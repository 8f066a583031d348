//! The W3C trace context headers (`traceparent`, `tracestate`), read and written by hand.
//!
//! Every request pays for them when tracing is on, sampled or not: through the SDK's
//! `TraceContextPropagator`, writing a request's `traceparent` cost 5,164 instructions
//! (`format!`, a header name parsed from a string, and an empty `tracestate` written too) and
//! reading it 1,531 with the server span (callgrind, cache hit, 2026-12-07): with the rest,
//! about half a hit's own cost. The format is four fixed-width hex fields (W3C §3.2), so
//! this file reads and writes them as the propagator does (version 00, lowercase hex, the
//! sampled flag alone kept) without its allocations.

use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
const LEN: usize = 55;

/// The caller's span in `headers`, if its `traceparent` is valid (W3C Trace Context §3.2.2):
/// a known version (a later one read as 00, its extra fields ignored), lowercase hex, ids
/// not all zeros. A `tracestate` that does not parse is dropped.
pub fn parent(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get(&TRACEPARENT)?.as_bytes().trim_ascii();
    let field = |at: usize, len: usize| value.get(at..at + len).filter(|f| is_hex(f));
    let version = u8::from_str_radix(std::str::from_utf8(field(0, 2)?).ok()?, 16).ok()?;
    let fits = match version {
        0 => value.len() == LEN,
        0xff => false,
        _ => value.len() == LEN || value.get(LEN) == Some(&b'-'),
    };
    if !fits || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from(u128::from_str_radix(ascii(field(3, 32)?), 16).ok()?);
    let span_id = SpanId::from(u64::from_str_radix(ascii(field(36, 16)?), 16).ok()?);
    let flags = u8::from_str_radix(ascii(field(53, 2)?), 16).ok()?;
    let state = headers
        .get(&TRACESTATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceState::from_str(v).ok())
        .unwrap_or_default();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    sc.is_valid().then_some(sc)
}

/// Lowercase hex digits only (W3C: uppercase is invalid).
fn is_hex(field: &[u8]) -> bool {
    field
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn ascii(field: &[u8]) -> &str {
    // Checked by `is_hex`: ASCII, so UTF-8.
    std::str::from_utf8(field).unwrap_or_default()
}

/// The `traceparent` value of `sc`.
pub fn traceparent(sc: &SpanContext) -> HeaderValue {
    let mut out = [0u8; LEN];
    out[..3].copy_from_slice(b"00-");
    hex(&sc.trace_id().to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    hex(&sc.span_id().to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    hex(
        &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
        &mut out[53..],
    );
    HeaderValue::from_bytes(&out).expect("hex digits and dashes")
}

/// Writes `sc` as the W3C headers into `headers`, replacing any there: `tracestate` only
/// when it has entries.
pub fn write(sc: &SpanContext, headers: &mut HeaderMap) {
    headers.insert(TRACEPARENT.clone(), traceparent(sc));
    match tracestate(sc) {
        Some(v) => {
            headers.insert(TRACESTATE.clone(), v);
        }
        None => {
            headers.remove(&TRACESTATE);
        }
    }
}

/// The W3C headers of `sc` as name and value pairs, `tracestate` only when it has entries.
pub fn fields(sc: &SpanContext) -> Vec<(HeaderName, HeaderValue)> {
    let mut fields = vec![(TRACEPARENT.clone(), traceparent(sc))];
    fields.extend(tracestate(sc).map(|v| (TRACESTATE.clone(), v)));
    fields
}

/// The `tracestate` value of `sc`, if it has entries.
fn tracestate(sc: &SpanContext) -> Option<HeaderValue> {
    if *sc.trace_state() == TraceState::NONE {
        return None;
    }
    HeaderValue::try_from(sc.trace_state().header())
        .ok()
        .filter(|v| !v.is_empty())
}

/// `bytes` as lowercase hex into `out` (twice their length).
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_str(traceparent).unwrap());
        if let Some(s) = tracestate {
            h.insert(&TRACESTATE, HeaderValue::from_str(s).unwrap());
        }
        h
    }

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_the_same() {
        let sc = parent(&headers(GOOD, Some("congo=t61rcWkgMzE"))).unwrap();
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("b7ad6b7169203331").unwrap());
        assert!(sc.is_sampled() && sc.is_remote());
        let mut out = HeaderMap::new();
        write(&sc, &mut out);
        assert_eq!(out[&TRACEPARENT], GOOD);
        assert_eq!(out[&TRACESTATE], "congo=t61rcWkgMzE");
        // Unknown flags are dropped; an empty state is not written.
        let other = parent(&headers(&GOOD.replace("-01", "-ff"), None)).unwrap();
        let mut out = headers(GOOD, Some("stale=1"));
        write(&other, &mut out);
        assert_eq!(out[&TRACEPARENT], GOOD);
        assert!(!out.contains_key(&TRACESTATE));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            &GOOD.to_uppercase(),
            &GOOD.replace("0af7", "0AF7"),
            &GOOD.replace("00-", "ff-"),
            &format!("{GOOD}-extra"),
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031+c-b7ad6b7169203331-01",
            "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parent(&headers(bad, None)).is_none(), "{bad:?} read");
        }
        // A later version may carry more fields after a dash; they are ignored.
        assert!(
            parent(&headers(
                &format!("{}-later", GOOD.replacen("00", "01", 1)),
                None
            ))
            .is_some()
        );
        assert!(parent(&headers(&format!("  {GOOD} "), None)).is_some());
        // A tracestate that does not parse is dropped, not the parent.
        let sc = parent(&headers(GOOD, Some("=,bad key"))).unwrap();
        assert!(sc.trace_state().header().is_empty());
    }
}
