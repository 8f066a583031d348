//! What a plugin returns is untrusted input. Every action passes here once, in
//! [`super::LoadedPlugin::call`], before anything of it reaches a client, a cache entry or a
//! backend: the status must be a final one, counts and sizes stay within the plugin's caps,
//! and the headers that frame a message or describe a connection are plughost's alone.
//!
//! Framing headers are dropped rather than refused: a plugin that copies headers from
//! somewhere (a stored response, say) keeps working, and plughost sets `Content-Length` or
//! chunking from the body it really sends. Headers that are not valid HTTP are dropped too.
//! Both are logged once per plugin and header name, so an author learns of it without a
//! plugin filling the log.

use std::collections::HashSet;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use parking_lot::Mutex;

use super::bindings::{Action, HeaderResult};
use crate::body::{self, Body};
use crate::config::PluginConfig;

/// Headers that frame the message or belong to one connection (RFC 9110 §7.6.1, RFC 9112
/// §6): from a plugin they would let it split or desynchronise a response, or smuggle a
/// request to a backend, so they never pass.
const FRAMING: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Header names remembered per plugin for the once-only warning; past it, dropped headers are
/// still dropped but no longer logged.
const WARNED_NAMES: usize = 64;

/// A plugin's caps on what it may return, from its `[[plugins]]` entry.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    /// Most headers in a response or in one set of edits.
    pub headers: usize,
    /// Most bytes of header names and values.
    pub header_bytes: usize,
    /// Largest response body.
    pub body_bytes: usize,
}

impl OutputLimits {
    /// The caps of `config`.
    pub fn of(config: &PluginConfig) -> Self {
        Self {
            headers: config.max_response_headers,
            header_bytes: config.max_response_header_bytes,
            body_bytes: config.max_response_body_bytes,
        }
    }

    /// Bytes the host may copy out of the guest in one call or host call (wasmtime's
    /// "hostcall fuel", checked before each string or list is copied): what the caps allow,
    /// never more than the plugin's own memory could hold, plus the host's per-header
    /// bookkeeping. Without it wasmtime's default lets one call copy 128 MiB, and a plugin
    /// whose header values all point at one buffer makes the host copy that buffer per header.
    pub fn hostcall_fuel(&self, max_memory_bytes: usize) -> usize {
        // Size of one lifted header (two `String`s) and of each list's bookkeeping.
        const PER_HEADER: usize = 64;
        let data = self
            .header_bytes
            .saturating_add(self.body_bytes)
            .min(max_memory_bytes);
        data.saturating_add(self.headers.saturating_mul(3 * PER_HEADER))
            .saturating_add(64 * 1024)
    }
}

/// What the host does after a plugin call, checked and converted to HTTP types.
pub enum Decision {
    /// Go on with these edits.
    Continue(Edits),
    /// Answer with this response.
    Respond(Response<Body>),
}

/// A filter's edits as valid HTTP header names and values.
#[derive(Default)]
pub struct Edits {
    /// Request headers to set (replacing).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to remove.
    pub remove: Vec<HeaderName>,
    /// Headers to add to the response finally sent.
    pub response: Vec<(HeaderName, HeaderValue)>,
}

/// Header names a plugin had dropped, so each is logged once.
#[derive(Default)]
pub struct Dropped(Mutex<HashSet<String>>);

impl Dropped {
    fn warn(&self, plugin: &str, name: &str, why: &str) {
        let mut seen = self.0.lock();
        if seen.len() < WARNED_NAMES && seen.insert(name.to_owned()) {
            tracing::warn!(plugin, header = %truncated(name, 128), why, "plugin header dropped (logged once per plugin and name)");
        }
    }
}

/// Checks `action` against `limits` and converts it. `Err` says what was wrong, in words for
/// the log and for `plughost plugin run`.
pub fn check(
    action: Action,
    limits: OutputLimits,
    plugin: &str,
    dropped: &Dropped,
) -> Result<Decision, String> {
    match action {
        Action::Continue(e) => {
            let names = e.remove_headers.len();
            let count = e.set_headers.len() + e.response_headers.len() + names;
            let bytes = header_bytes(&e.set_headers)
                + header_bytes(&e.response_headers)
                + e.remove_headers.iter().map(String::len).sum::<usize>();
            within(count, bytes, limits)?;
            let remove = e
                .remove_headers
                .iter()
                .filter_map(|n| HeaderName::try_from(n.as_str()).ok())
                .collect();
            Ok(Decision::Continue(Edits {
                set: valid(e.set_headers, plugin, dropped),
                remove,
                response: valid(e.response_headers, plugin, dropped),
            }))
        }
        Action::Respond(r) => {
            within(r.headers.len(), header_bytes(&r.headers), limits)?;
            if r.body.len() > limits.body_bytes {
                return Err(format!(
                    "response body of {} bytes is over max_response_body_bytes ({})",
                    r.body.len(),
                    limits.body_bytes
                ));
            }
            // A final response is 200-599: 1xx are interim (101 would switch the client's
            // connection to a protocol nobody speaks), and >= 600 is not HTTP.
            let status = StatusCode::from_u16(r.status)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| {
                    format!(
                        "invalid status {}: a plugin's response must be 200 to 599",
                        r.status
                    )
                })?;
            let mut resp = Response::new(body::full(r.body));
            *resp.status_mut() = status;
            let headers = resp.headers_mut();
            headers.reserve(r.headers.len());
            for (k, v) in valid(r.headers, plugin, dropped) {
                headers.append(k, v);
            }
            Ok(Decision::Respond(resp))
        }
    }
}

/// The head of a wasi:http component's response, checked by the same rules: a final
/// status, headers within the caps, framing and connection headers dropped (plughost frames
/// the body it really sends) but `Trailer`: a wasi:http body may end in trailers, and
/// HTTP/1.1 sends only those its head declares (hyper drops the others).
pub fn check_head(
    head: &mut http::response::Parts,
    limits: OutputLimits,
    plugin: &str,
    dropped: &Dropped,
) -> Result<(), String> {
    let bytes = head
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    within(head.headers.len(), bytes, limits)?;
    if !(200..=599).contains(&head.status.as_u16()) {
        return Err(format!(
            "invalid status {}: a plugin's response must be 200 to 599",
            head.status.as_u16()
        ));
    }
    for name in FRAMING.iter().filter(|&&name| name != "trailer") {
        if head.headers.remove(*name).is_some() {
            dropped.warn(
                plugin,
                name,
                "framing and connection headers are set by plughost",
            );
        }
    }
    Ok(())
}

fn header_bytes(headers: &[HeaderResult]) -> usize {
    headers.iter().map(|h| h.name.len() + h.value.len()).sum()
}

fn within(count: usize, bytes: usize, limits: OutputLimits) -> Result<(), String> {
    if count > limits.headers {
        return Err(format!(
            "{count} headers are over max_response_headers ({})",
            limits.headers
        ));
    }
    if bytes > limits.header_bytes {
        return Err(format!(
            "{bytes} bytes of headers are over max_response_header_bytes ({})",
            limits.header_bytes
        ));
    }
    Ok(())
}

/// The headers that are valid HTTP and not framing ones, in order.
fn valid(
    headers: Vec<HeaderResult>,
    plugin: &str,
    dropped: &Dropped,
) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .into_iter()
        .filter_map(|h| {
            let Ok(name) = HeaderName::try_from(h.name.as_str()) else {
                dropped.warn(plugin, &h.name, "not a valid header name");
                return None;
            };
            if FRAMING.contains(&name.as_str()) {
                dropped.warn(
                    plugin,
                    name.as_str(),
                    "framing and connection headers are set by plughost",
                );
                return None;
            }
            // The guest's string becomes the value's bytes: checked, not copied.
            match HeaderValue::from_maybe_shared(Bytes::from(h.value)) {
                Ok(value) => Some((name, value)),
                Err(_) => {
                    dropped.warn(plugin, name.as_str(), "not a valid header value");
                    None
                }
            }
        })
        .collect()
}

/// `text` cut to at most `max` bytes (on a character boundary), with a marker saying how much
/// was cut: for plugin log lines and error strings.
pub fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &text[..end], text.len() - end).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::Response as WitResponse;

    const LIMITS: OutputLimits = OutputLimits {
        headers: 4,
        header_bytes: 100,
        body_bytes: 10,
    };

    fn h(name: &str, value: &str) -> HeaderResult {
        HeaderResult {
            name: name.into(),
            value: value.into(),
        }
    }

    fn respond(status: u16, headers: Vec<HeaderResult>, body: &[u8]) -> Result<Decision, String> {
        let action = Action::Respond(WitResponse {
            status,
            headers,
            body: body.to_vec(),
        });
        check(action, LIMITS, "p", &Dropped::default())
    }

    #[test]
    fn framing_and_invalid_headers_are_dropped_the_rest_kept() {
        let headers = vec![
            h("content-length", "0"),
            h("Transfer-Encoding", "chunked"),
            h("connection", "close"),
            h("x-ok", "yes"),
        ];
        let Ok(Decision::Respond(r)) = respond(200, headers, b"hi") else {
            panic!("refused")
        };
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers()["x-ok"], "yes");
        let Ok(Decision::Respond(r)) = respond(200, vec![h("bad name", "v"), h("x", "\n")], b"")
        else {
            panic!("refused")
        };
        assert!(r.headers().is_empty());
    }

    #[test]
    fn only_final_statuses_pass() {
        for bad in [0, 42, 100, 101, 199, 600, 999] {
            let e = respond(bad, vec![], b"").err().expect("refused");
            assert!(e.contains("invalid status"), "{e}");
        }
        for ok in [200, 204, 404, 599] {
            assert!(respond(ok, vec![], b"").is_ok(), "{ok}");
        }
    }

    #[test]
    fn counts_and_sizes_over_the_caps_are_refused() {
        let five = (0..5).map(|i| h(&format!("x-{i}"), "v")).collect();
        assert!(
            respond(200, five, b"")
                .err()
                .unwrap()
                .contains("max_response_headers")
        );
        let long = vec![h("x", &"v".repeat(100))];
        assert!(
            respond(200, long, b"")
                .err()
                .unwrap()
                .contains("max_response_header_bytes")
        );
        let body = respond(200, vec![], &[0; 11]).err().unwrap();
        assert!(body.contains("max_response_body_bytes"), "{body}");
        let edits = Action::Continue(crate::plugin::bindings::Edits {
            set_headers: vec![h("a", "1"), h("content-length", "0")],
            remove_headers: vec!["b".into(), "c".into()],
            response_headers: vec![h("d", "1")],
        });
        let e = check(edits, LIMITS, "p", &Dropped::default()).err();
        assert!(e.unwrap().contains("5 headers"));
    }

    #[test]
    fn filters_cannot_set_framing_headers_on_the_request() {
        let edits = Action::Continue(crate::plugin::bindings::Edits {
            set_headers: vec![h("content-length", "0"), h("x-a", "1")],
            remove_headers: vec![],
            response_headers: vec![h("transfer-encoding", "chunked")],
        });
        let Ok(Decision::Continue(e)) = check(edits, LIMITS, "p", &Dropped::default()) else {
            panic!("refused")
        };
        assert_eq!(e.set.len(), 1);
        assert!(e.response.is_empty());
    }

    #[test]
    fn fuel_never_exceeds_what_the_plugin_memory_could_hold_by_much() {
        let fuel = LIMITS.hostcall_fuel(1 << 20);
        assert!(fuel < (1 << 20) / 2, "{fuel}");
        let big = OutputLimits {
            headers: 100,
            header_bytes: 64 << 10,
            body_bytes: 16 << 20,
        };
        let fuel = big.hostcall_fuel(4 << 20);
        assert!((4 << 20..5 << 20).contains(&fuel), "{fuel}");
    }

    #[test]
    fn truncation_marks_what_was_cut_on_a_char_boundary() {
        assert_eq!(truncated("short", 10), "short");
        let cut = truncated("ééé", 3);
        assert_eq!(cut, "é… [4 bytes cut]");
    }
}
