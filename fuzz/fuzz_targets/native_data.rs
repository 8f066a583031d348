//! The `data` string native plugins receive: any request http accepts renders to one C string
//! (no interior NUL, so C code sees all of it up to the cut), starting with the request line,
//! never longer than the head plus the body cap.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use plughost::plugin::native::render;

mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    request: common::HttpInput,
    cap: u16,
}

fuzz_target!(|input: Input| {
    let Some(parts) = input.request.parts() else {
        return;
    };
    let data = render(&parts, &input.request.body, input.cap as usize);
    let text = data.as_bytes();
    assert!(text.starts_with(parts.method.as_str().as_bytes()));
    let head_len = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    if let Some(head) = head_len {
        assert!(text.len() - head <= input.cap as usize, "body over the cap");
    }
});
