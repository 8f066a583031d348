//! The next hop of a `wasi:http@0.3` middleware: the `wasi:http/handler` it imports is the rest
//! of plughost's chain after it (the later filters, the cache, the route).
//!
//! - `link`: `wasi:http/handler@0.3.0#handle`, which the linker also matches for a guest built
//!   against a later 0.3.x.
//! - shared backend: none. Per-plugin grants: `max_handler_calls`.
//! - per-instance state ([`Hops`]): the rest of the chain of each request the instance is
//!   serving, by the component-model task that serves it. One instance serves several
//!   requests at once, so the host finds the request an import call belongs to from the call
//!   itself: its root task is the export call that request started ([`Hops::enter`]).
//!
//! A request's entry is removed once its response head is produced (or the call ended): a
//! `handle` called after that, from work the guest left running, gets an error-code, as does
//! one past `max_handler_calls`, so a middleware cannot loop over the rest of the chain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::future::BoxFuture;
use http::uri::Authority;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use wasmtime::AsContextMut;
use wasmtime::component::{Accessor, GuestTaskId, Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{Request, Response};

use super::capability::{Capability, CapabilityError, Getter};
use crate::body::{self, Body};
use crate::config::{Config, PluginConfig};

/// The interface a middleware imports; the linker matches it for any 0.3.x.
const HANDLER: &str = "wasi:http/handler@0.3.0";

/// The rest of one request's way after a middleware.
#[derive(Clone)]
pub struct Rest {
    /// The authority of the request the middleware was given: one it sends on without an
    /// authority (wasi:http keeps `Host` from guests) goes to the same.
    pub authority: Authority,
    /// A request in, the response it ends in out (plughost's own errors rendered as
    /// responses, so the middleware sees those too).
    pub serve:
        Arc<dyn Fn(http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> + Send + Sync>,
}

/// The next-hop capability.
pub struct NextHop;

impl Capability for NextHop {
    type Backend = ();
    type Grants = u32;
    type Instance = Hops;

    /// The next hop is a WASI 0.3 import only.
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        _: &mut Linker<T>,
        _: Getter<T, Hops>,
    ) -> wasmtime::Result<()> {
        Ok(())
    }

    fn link_p3<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Hops>,
    ) -> wasmtime::Result<()> {
        linker.instance(HANDLER)?.func_wrap_concurrent(
            "handle",
            move |acc: &Accessor<T>, (req,): (Resource<Request>,)| {
                Box::pin(async move { Ok((handle(acc, get, req).await?,)) })
            },
        )
    }

    fn backend(_: &Config, _: &[SocketAddr], _: &mut Registry) -> Result<(), CapabilityError> {
        Ok(())
    }

    fn grants(_: &(), plugin: &PluginConfig) -> Result<u32, CapabilityError> {
        Ok(plugin.max_handler_calls)
    }

    fn instance(max_calls: &u32, _: &PluginConfig) -> Hops {
        Hops {
            max_calls: *max_calls,
            by_task: Arc::default(),
        }
    }
}

/// The requests an instance is serving, by the task serving each.
pub struct Hops {
    max_calls: u32,
    by_task: Arc<Mutex<HashMap<GuestTaskId, Arc<Hop>>>>,
}

/// One request's rest of the chain and the calls of it left.
struct Hop {
    rest: Rest,
    calls_left: AtomicU32,
}

impl Hops {
    /// Records that `task` serves a request whose rest of the chain is `rest`, until the
    /// returned guard is dropped.
    pub fn enter(&self, task: GuestTaskId, rest: Rest) -> HopGuard {
        let hop = Hop {
            rest,
            calls_left: AtomicU32::new(self.max_calls),
        };
        self.by_task.lock().insert(task, Arc::new(hop));
        HopGuard {
            task,
            by_task: self.by_task.clone(),
        }
    }

    /// The rest of the chain `task`'s request may still call.
    fn take(&self, task: GuestTaskId) -> Result<Rest, &'static str> {
        let hop = self.by_task.lock().get(&task).cloned().ok_or(
            "wasi:http/handler.handle called outside a request (after its response, or from work left running)",
        )?;
        let left = hop
            .calls_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        match left {
            Ok(_) => Ok(hop.rest.clone()),
            Err(_) => Err(
                "wasi:http/handler.handle called more often than max_handler_calls for one request",
            ),
        }
    }
}

/// Removes a request's entry when dropped.
pub struct HopGuard {
    task: GuestTaskId,
    by_task: Arc<Mutex<HashMap<GuestTaskId, Arc<Hop>>>>,
}

impl Drop for HopGuard {
    fn drop(&mut self) {
        self.by_task.lock().remove(&self.task);
    }
}

/// `handle(request)`: the request, taken from the guest, goes through the rest of the chain;
/// the response (streamed, not read here) is handed back.
async fn handle<T: WasiHttpView + 'static>(
    acc: &Accessor<T>,
    get: Getter<T, Hops>,
    req: Resource<Request>,
) -> wasmtime::Result<Result<Resource<Response>, ErrorCode>> {
    let taken = acc.with(|mut a| -> wasmtime::Result<_> {
        let root = a.as_context_mut().async_call_stack()?.last();
        let mut req = get(a.get()).table.delete(req)?;
        let rest = match root {
            Some(task) => get(a.get()).instance.take(task),
            None => Err("wasi:http/handler.handle called outside a request"),
        };
        if req.authority.is_none() {
            req.authority = Some(match &rest {
                Ok(rest) => rest.authority.clone(),
                Err(_) => Authority::from_static("localhost"),
            });
        }
        // Converted even when refused: the guest's body stream is released only this way.
        let converted = req.into_http(&mut a, async { Ok(()) });
        Ok((rest, converted))
    })?;
    let req = match taken {
        (Err(why), _) => return Ok(Err(ErrorCode::InternalError(Some(why.into())))),
        (Ok(_), Err(e)) => return Ok(Err(ErrorCode::InternalError(Some(format!("{e:?}"))))),
        (Ok(rest), Ok((req, _options))) => (rest, req),
    };
    let (rest, req) = req;
    let req = req.map(|b| body::from_unsync(b.map_err(body::BoxError::from)));
    // On a task of its own: polled inside this store's event loop, the chain's calls into
    // other instances would nest one store's event loop in another's, which wasmtime refuses.
    // Aborted if this call is dropped (its instance retired), so nothing runs on for it.
    let mut task = AbortOnDrop(tokio::spawn((rest.serve)(req)));
    let resp = match (&mut task.0).await {
        Ok(resp) => resp,
        Err(e) => {
            let why = format!("the rest of the chain failed: {e}");
            return Ok(Err(ErrorCode::InternalError(Some(why))));
        }
    };
    let resp =
        resp.map(|b| b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))));
    acc.with(|mut a| {
        let (resp, _io) = Response::from_http(a.get().http().hooks, resp);
        Ok(Ok(get(a.get()).table.push(resp)?))
    })
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
