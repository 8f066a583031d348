//! The arbitrary HTTP request the request targets start from: whatever `http` accepts as a
//! method, target and headers, with a body.

use libfuzzer_sys::arbitrary::{self, Arbitrary};

#[derive(Arbitrary, Debug)]
pub struct HttpInput {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl HttpInput {
    /// The request head, or `None` when `http` refuses a part of it.
    pub fn parts(&self) -> Option<http::request::Parts> {
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.target.as_str());
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_slice());
        }
        Some(builder.body(()).ok()?.into_parts().0)
    }
}
