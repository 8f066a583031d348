//! Native plugins: shared libraries with the C server's ABI (`plugin_init`, `plugin_process`,
//! optional `plugin_shutdown`; see `plugins/native/plughost_plugin.h`), loaded with libloading.
//! All of the host's FFI `unsafe` lives here.
//!
//! Each plugin gets one thread of its own, fed through a bounded lock-free queue: calls into a
//! plugin never overlap (the C server held a mutex; plugins were written for that), and a slow
//! plugin never stalls a request. Plugins are observers, so requests do not wait for them; when
//! a plugin falls more than [`QUEUE`] requests or `native_queue_bytes` behind, further requests
//! are not shown to it and are counted as dropped. A request is rendered once and shared by
//! every plugin's queue.
//!
//! The thread polls the queue every [`POLL`] instead of being woken per request: a wake-up is a
//! syscall and a context switch on the request path, which cost a third of the throughput on
//! two cores (measured with `make bench`); observers can well see requests a millisecond late.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use libloading::Library;

/// The ABI version in `plughost_plugin.h`.
pub const ABI_VERSION: u32 = 1;

/// Requests a plugin may fall behind before new ones are dropped for it.
pub const QUEUE: usize = 4096;

/// How often an idle plugin thread looks for new requests.
pub const POLL: Duration = Duration::from_millis(1);

/// File extension of native libraries on this OS.
pub const EXTENSION: &str = if cfg!(windows) {
    "dll"
} else if cfg!(target_os = "macos") {
    "dylib"
} else {
    "so"
};

/// `plughost_context` of the C header, field for field.
#[repr(C)]
struct Context {
    abi_version: u32,
    name: *const c_char,
    config: *const c_char,
    log: extern "C" fn(*const Context, i32, *const c_char),
}

/// Why a library was refused.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// libloading could not open it.
    #[error("cannot load it: {0}")]
    Open(String),
    /// A required symbol is missing.
    #[error(
        "it does not export `{0}` (a plughost native plugin exports plugin_init and plugin_process)"
    )]
    MissingSymbol(&'static str),
    /// Anyone may write it, or someone else owns it.
    #[error("refused: {0}")]
    Unsafe(String),
}

type InitFn = unsafe extern "C" fn(*mut c_void);
type ProcessFn = unsafe extern "C" fn(*const c_char, *mut c_void);

/// What the plugin's thread owns: the library (kept loaded while its functions may run), its
/// entry points and the context they are given.
struct Loaded {
    process: ProcessFn,
    shutdown: Option<InitFn>,
    context: Box<Context>,
    _name: CString,
    _config: CString,
    // Last: dropped (unloaded) after everything that points into it.
    _library: Library,
}

// SAFETY: `Loaded` is moved once into the plugin's own thread and only used there; the raw
// pointers in it point into CStrings and a Box that it owns.
unsafe impl Send for Loaded {}

impl Loaded {
    fn context_ptr(&self) -> *mut c_void {
        (&*self.context as *const Context).cast_mut().cast()
    }

    /// Loads the library at `file` after its checks, finds its symbols and calls
    /// `plugin_init` with `name` and `config_json`.
    fn open(name: &str, file: &Path, config_json: &str) -> Result<Self, NativeError> {
        check_file(file)?;
        // SAFETY: loading a library runs its initialisers with our rights. That is the
        // documented contract of native plugins (README: they run with the server's rights);
        // the file has passed the ownership and permission checks above.
        let library =
            unsafe { Library::new(file) }.map_err(|e| NativeError::Open(e.to_string()))?;
        // SAFETY: the symbols are declared with the C ABI of plughost_plugin.h; the function
        // pointers are used only while `library` (moved along with them) stays loaded.
        let (init, process, shutdown) = unsafe {
            let init = *library
                .get::<InitFn>(b"plugin_init\0")
                .map_err(|_| NativeError::MissingSymbol("plugin_init"))?;
            let process = *library
                .get::<ProcessFn>(b"plugin_process\0")
                .map_err(|_| NativeError::MissingSymbol("plugin_process"))?;
            let shutdown = library.get::<InitFn>(b"plugin_shutdown\0").ok().map(|s| *s);
            (init, process, shutdown)
        };
        let c_name = CString::new(name.replace('\0', "")).expect("NULs removed");
        let c_config = CString::new(config_json.replace('\0', "")).expect("NULs removed");
        let context = Box::new(Context {
            abi_version: ABI_VERSION,
            name: c_name.as_ptr(),
            config: c_config.as_ptr(),
            log: log_callback,
        });
        let loaded = Loaded {
            process,
            shutdown,
            context,
            _name: c_name,
            _config: c_config,
            _library: library,
        };
        // SAFETY: `context` points to a live, fully initialised `Context`.
        unsafe { init(loaded.context_ptr()) };
        Ok(loaded)
    }

    /// The plugin's thread: calls `plugin_process` for each request `pending` holds until
    /// `stop` is set and the queue is empty, then `plugin_shutdown`, and unloads the library.
    fn drive(
        self,
        pending: &ArrayQueue<Arc<CString>>,
        stop: &AtomicBool,
        pending_bytes: &AtomicUsize,
        budget: Duration,
        name: &str,
    ) {
        loop {
            let Some(data) = pending.pop() else {
                if stop.load(Ordering::Acquire) && pending.is_empty() {
                    break;
                }
                std::thread::sleep(POLL);
                continue;
            };
            let started = Instant::now();
            // SAFETY: `data` is NUL-terminated and outlives the call; the context and the
            // library are owned by `self`, alive for the whole loop.
            unsafe { (self.process)(data.as_ptr(), self.context_ptr()) };
            pending_bytes.fetch_sub(data.as_bytes().len(), Ordering::Relaxed);
            let took = started.elapsed();
            if took > budget {
                tracing::warn!(plugin = %name, took_ms = took.as_millis() as u64, budget_ms = budget.as_millis() as u64, "native plugin call was slow");
            }
        }
        if let Some(shutdown) = self.shutdown {
            // SAFETY: as above; called once, after the last plugin_process.
            unsafe { shutdown(self.context_ptr()) };
        }
    }
}

/// A loaded native plugin, fed from requests.
pub struct NativePlugin {
    /// Name (the file's stem unless configured).
    pub name: String,
    /// The library.
    pub file: PathBuf,
    queue: Arc<ArrayQueue<Arc<CString>>>,
    /// Bytes of the requests in `queue`, and their cap.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    /// Tells the thread to finish once the queue is empty.
    stopping: Arc<AtomicBool>,
    /// Signalled when the plugin's thread has finished (a Mutex only to make the plugin Sync).
    done: parking_lot::Mutex<Option<Receiver<()>>>,
    /// How long shutdown waits for the plugin to drain its queue.
    stop_timeout: Duration,
    /// Requests handed to the plugin.
    pub calls: AtomicU64,
    /// Requests not shown to it because its queue was full.
    pub dropped: AtomicU64,
    /// The file's modification time when it was loaded, to tell a reload it changed.
    modified: Option<std::time::SystemTime>,
}

fn modified(file: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Refuses libraries that others could have changed: world-writable, or (Unix) owned by
/// neither the user running plughost nor root.
pub fn check_file(file: &Path) -> Result<(), NativeError> {
    trusted(file, 0o002).map_err(|why| {
        NativeError::Unsafe(format!(
            "{why}; anyone could replace the code plughost runs"
        ))
    })
}

/// Whether `path` (not followed if a link) is owned by the user running plughost or root and
/// has none of the permission bits in `forbidden` (0o002: world-writable; 0o022: group- or
/// world-writable; 0o027 also world-readable). `Err` says which check failed and the fix. Always `Ok` off Unix.
pub fn trusted(path: &Path, forbidden: u32) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link", path.display()));
        }
        let open = meta.mode() & forbidden;
        if open != 0 {
            let bits = |table: &[(u32, char)]| -> String {
                table
                    .iter()
                    .filter(|(mask, _)| open & mask != 0)
                    .map(|(_, c)| *c)
                    .collect()
            };
            let (who, perms) = (
                bits(&[(0o070, 'g'), (0o007, 'o')]),
                bits(&[(0o444, 'r'), (0o222, 'w'), (0o111, 'x')]),
            );
            let what = match (open & 0o444 != 0, open & 0o222 != 0) {
                (true, true) => "readable and writable",
                (true, false) => "readable",
                _ => "writable",
            };
            return Err(format!(
                "{} is {what} by others (mode {:o}; chmod {who}-{perms} it)",
                path.display(),
                meta.mode() & 0o777
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}, not by the user running plughost (uid {me}) or root",
                path.display(),
                meta.uid()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, forbidden);
    Ok(())
}

/// Warns when anyone may add libraries to the plugins folder.
pub fn check_dir(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.mode() & 0o002 != 0
        {
            tracing::warn!(dir = %dir.display(), "plugins_dir is world-writable: anyone can add code that plughost loads (chmod o-w it)");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

extern "C" fn log_callback(context: *const Context, level: i32, message: *const c_char) {
    if context.is_null() || message.is_null() {
        return;
    }
    // SAFETY: plugins receive `context` from us and pass it back; it lives as long as the
    // plugin is loaded. `message` is a NUL-terminated string, as the header requires; it is
    // only read during this call.
    let (name, message) = unsafe {
        (
            CStr::from_ptr((*context).name).to_string_lossy(),
            CStr::from_ptr(message).to_string_lossy(),
        )
    };
    let plugin = &*name;
    match level {
        i32::MIN..=0 => tracing::trace!(target: "plugin", plugin, "{message}"),
        1 => tracing::debug!(target: "plugin", plugin, "{message}"),
        2 => tracing::info!(target: "plugin", plugin, "{message}"),
        3 => tracing::warn!(target: "plugin", plugin, "{message}"),
        _ => tracing::error!(target: "plugin", plugin, "{message}"),
    }
}

impl NativePlugin {
    /// Loads the library, calls `plugin_init` and starts the plugin's thread.
    pub fn load(
        name: &str,
        file: &Path,
        config_json: &str,
        budget: Duration,
        stop_timeout: Duration,
        max_queued_bytes: usize,
    ) -> Result<Self, NativeError> {
        let loaded = Loaded::open(name, file, config_json)?;
        let queue = Arc::new(ArrayQueue::<Arc<CString>>::new(QUEUE));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = sync_channel(1);
        let (pending, stop, pending_bytes) =
            (queue.clone(), stopping.clone(), queued_bytes.clone());
        let thread_name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("plughost-native-{name}"))
            .spawn(move || {
                loaded.drive(&pending, &stop, &pending_bytes, budget, &thread_name);
                let _ = done_tx.send(());
            })
            .map_err(|e| NativeError::Open(format!("cannot start its thread: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            file: file.to_path_buf(),
            queue,
            queued_bytes,
            max_queued_bytes,
            stopping,
            done: parking_lot::Mutex::new(Some(done)),
            stop_timeout,
            calls: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            modified: modified(file),
        })
    }

    /// Whether the file was replaced or changed since it was loaded.
    pub fn modified_since_load(&self) -> bool {
        modified(&self.file) != self.modified
    }

    /// Hands a rendered request to the plugin's thread without waiting for it.
    pub fn observe(&self, data: &Arc<CString>) {
        let len = data.as_bytes().len();
        let room =
            self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len <= self.max_queued_bytes;
        if room && self.queue.push(data.clone()).is_ok() {
            self.calls.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(plugin = %self.name, queue = QUEUE, max_queued_bytes = self.max_queued_bytes, "native plugin is too slow; requests are skipped for it while its queue is full");
        }
    }
}

/// Stopping: the queue drains, `plugin_shutdown` runs, the library unloads. Waits at most the
/// shutdown timeout; a plugin still busy then stays loaded until the process ends.
impl Drop for NativePlugin {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(done) = self.done.get_mut().take()
            && done.recv_timeout(self.stop_timeout).is_err()
        {
            tracing::warn!(plugin = %self.name, "native plugin did not finish within the shutdown timeout");
        }
    }
}

/// The request as the C server's plugins saw it: request line, headers, blank line, body
/// (at most `body_cap` bytes, cut at the first NUL), NUL-terminated.
pub fn render(parts: &http::request::Parts, body: &[u8], body_cap: usize) -> CString {
    use std::fmt::Write;
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "{} {} {:?}\r\n",
        parts.method,
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        parts.version
    );
    for (k, v) in &parts.headers {
        let _ = write!(head, "{k}: {}\r\n", String::from_utf8_lossy(v.as_bytes()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body[..body.len().min(body_cap)]);
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    CString::new(bytes).expect("cut at the first NUL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_gives_request_line_headers_and_capped_body() {
        let (parts, ()) = http::Request::post("/x?y=1")
            .header("host", "h")
            .body(())
            .unwrap()
            .into_parts();
        let data = render(&parts, b"hello world", 5);
        assert_eq!(
            data.to_str().unwrap(),
            "POST /x?y=1 HTTP/1.1\r\nhost: h\r\n\r\nhello"
        );
        let with_nul = render(&parts, b"ab\0cd", 100);
        assert!(with_nul.to_str().unwrap().ends_with("\r\n\r\nab"));
    }
}
