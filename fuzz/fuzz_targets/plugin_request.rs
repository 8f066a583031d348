//! Requests as plugins see them, and plugin answers as HTTP: any method, target, headers and
//! body that http accepts marshal into the WIT request without panicking, and any edits or
//! response a plugin returns are applied or refused without panicking.
#![no_main]

use bytes::Bytes;
use http::HeaderMap;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use plughost::plugin::{Edits, Header, apply_edits, http_response, wit_request};

mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    request: common::HttpInput,
    set: Vec<(String, String)>,
    remove: Vec<String>,
    add: Vec<(String, String)>,
    status: u16,
}

fn headers(pairs: &[(String, String)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let Some(mut parts) = input.request.parts() else {
        return;
    };
    let body = Bytes::from(input.request.body);
    let wit = wit_request(&parts, &body, "127.0.0.1:1".parse().unwrap());
    assert_eq!(wit.method, parts.method.as_str());
    assert_eq!(wit.headers.len(), parts.headers.len());
    assert_eq!(wit.body.len(), body.len());
    let edits = Edits {
        set_headers: headers(&input.set),
        remove_headers: input.remove,
        response_headers: headers(&input.add),
    };
    let mut extra = HeaderMap::new();
    apply_edits(edits, &mut parts.headers, &mut extra);
    let resp = plughost::plugin::wasm::Response {
        status: input.status,
        headers: headers(&input.add),
        body: body.to_vec(),
    };
    if let Some(r) = http_response(resp) {
        assert_eq!(r.status().as_u16(), input.status);
    }
});
