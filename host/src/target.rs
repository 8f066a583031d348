//! What may stand as the target of a request line plughost writes: shared by the HTTP/1.1
//! client and the validation of the upstreams' `health_path`, which must agree.

/// Whether `target` can go on a request line as it is: a path (or `*`), and no byte that could
/// end the line or the target early.
pub fn valid_target(target: &str) -> bool {
    (target.starts_with('/') || target == "*") && target.bytes().all(|b| b.is_ascii_graphic())
}
