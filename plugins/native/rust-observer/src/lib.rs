//! rust-observer: a native plughost plugin written in Rust (same ABI as the C examples). It
//! logs the request line of every request through plughost's log callback.
//!
//! Build: cargo build --release  ->  target/release/librust_observer.so (.dll, .dylib)

use std::ffi::{CStr, CString, c_char, c_void};

/// `plughost_context` from plughost_plugin.h.
#[repr(C)]
pub struct Context {
    abi_version: u32,
    name: *const c_char,
    config: *const c_char,
    log: extern "C" fn(*const Context, i32, *const c_char),
}

const INFO: i32 = 2;

fn log(context: *mut c_void, message: &str) {
    let ctx = context as *const Context;
    let Ok(message) = CString::new(message) else { return };
    // SAFETY: plughost passes a valid `plughost_context` that lives while the plugin is loaded.
    unsafe {
        if !ctx.is_null() && (*ctx).abi_version >= 1 {
            ((*ctx).log)(ctx, INFO, message.as_ptr());
        }
    }
}

/// Called once after loading.
///
/// # Safety
/// `context` is the `plughost_context` plughost passes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_init(context: *mut c_void) {
    log(context, "rust-observer ready");
}

/// Called for every request.
///
/// # Safety
/// `data` is a NUL-terminated request text, valid during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn plugin_process(data: *const c_char, context: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: plughost passes a NUL-terminated string valid for this call.
    let text = unsafe { CStr::from_ptr(data) }.to_string_lossy();
    let line = text.lines().next().unwrap_or_default();
    log(context, &format!("observed {line}"));
}
