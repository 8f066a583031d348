//! Requests as plugins see them, and plugin answers as HTTP: any method, target, headers and
//! body that http accepts marshal into the WIT request without panicking, and any edits or
//! response a plugin returns are applied or refused without panicking.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use plughost::client::Client;
use plughost::plugin::output::{self, Decision, Dropped, OutputLimits};
use plughost::plugin::bindings::{Action, Edits, HeaderResult};
use plughost::plugin::{Given, ResponseHeaders, apply_edits};

mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    request: common::HttpInput,
    set: Vec<(String, String)>,
    remove: Vec<String>,
    add: Vec<(String, String)>,
    status: u16,
}

fn headers(pairs: &[(String, String)]) -> Vec<HeaderResult> {
    pairs
        .iter()
        .map(|(name, value)| HeaderResult {
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
    {
        let client = Client::new("127.0.0.1:1".parse().unwrap());
        let given = Given::whole(&parts, &body, &client);
        let params = given.headers();
        let wit = given.request(&params);
        assert_eq!(wit.method, parts.method.as_str());
        assert_eq!(wit.headers.len(), parts.headers.len());
        assert_eq!(wit.body.len(), body.len());
    }
    let limits = OutputLimits {
        headers: 100,
        header_bytes: 64 * 1024,
        body_bytes: 1 << 20,
    };
    let dropped = Dropped::default();
    let edits = Action::Continue(Edits {
        set_headers: headers(&input.set),
        remove_headers: input.remove,
        response_headers: headers(&input.add),
    });
    if let Ok(Decision::Continue(edits)) = output::check(edits, limits, "fuzz", &dropped) {
        let mut extra = ResponseHeaders::new();
        apply_edits(edits, &mut parts.headers, &mut extra);
        assert!(!extra.iter().any(|(name, _)| name == "content-length"));
    }
    let resp = Action::Respond(plughost::plugin::bindings::Response {
        status: input.status,
        headers: headers(&input.add),
        body: body.to_vec(),
    });
    if let Ok(Decision::Respond(r)) = output::check(resp, limits, "fuzz", &dropped) {
        assert_eq!(r.status().as_u16(), input.status);
        assert!((200..=599).contains(&input.status));
        assert!(!r.headers().contains_key("transfer-encoding"));
    }
});
