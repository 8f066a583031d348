//! What a host capability is: the four parts each one implements ([`Capability`]), and the
//! view of an instance's store its host functions get ([`Scoped`]): the resource table the
//! guest's handles live in and that capability's own instance state, nothing more. The
//! capabilities link through that view rather than through the store's data type, so they
//! never name that type, and it (which holds every capability's state) can name them.

use std::marker::PhantomData;
use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

use crate::config::{Config, PluginConfig};

/// One capability's view of an instance's store, for the length of a host call.
pub struct Scoped<'a, I> {
    /// The instance's resource table (shared with WASI: handles of every kind live there).
    pub table: &'a mut ResourceTable,
    /// The capability's state for this instance.
    pub instance: &'a mut I,
}

/// The [`HasData`] of host functions implemented on [`Scoped`].
pub struct HasScoped<I>(PhantomData<I>);

impl<I: Send + 'static> HasData for HasScoped<I> {
    type Data<'a> = Scoped<'a, I>;
}

/// How the linker finds a capability's view in the store data `T`.
pub type Getter<T, I> = fn(&mut T) -> Scoped<'_, I>;

/// Why a capability's backend or a plugin's grants could not be built (a CA file that cannot
/// be read, say); the message names the key and the fix.
pub type CapabilityError = Box<dyn std::error::Error + Send + Sync>;

/// One host capability offered to plugins.
pub trait Capability {
    /// What the whole server shares, built once and kept across reloads.
    type Backend: Clone;
    /// What one plugin may use, built when it loads and shared by its instances.
    type Grants: Clone;
    /// What one instance keeps in its store.
    type Instance;

    /// Adds its imports to `linker`, once per engine; `get` finds its view of a store. A
    /// component importing none of them loads as before. `T` is the store data, which also
    /// provides the standard WASI interfaces a capability may build on.
    fn link<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Self::Instance>,
    ) -> wasmtime::Result<()>;

    /// Adds its WASI 0.3 imports, which need the component model's async ABI, to the linker
    /// of the engine that runs 0.3 components (beside what [`Capability::link`] adds there
    /// too). Most capabilities have none.
    fn link_p3<T: WasiView + WasiHttpView + Send + 'static>(
        linker: &mut Linker<T>,
        get: Getter<T, Self::Instance>,
    ) -> wasmtime::Result<()> {
        let _ = (linker, get);
        Ok(())
    }

    /// Its backend for `config`, counted in `registry`; `own` are plughost's listeners.
    fn backend(
        config: &Config,
        own: &[SocketAddr],
        registry: &mut Registry,
    ) -> Result<Self::Backend, CapabilityError>;

    /// Brings `backend` up to a reloaded `config` (secrets read again, say); `Err` leaves it
    /// as it was, and the reload changes nothing. Most backends keep what they have.
    fn reload(backend: &Self::Backend, config: &Config) -> Result<(), CapabilityError> {
        let _ = (backend, config);
        Ok(())
    }

    /// What `plugin` may use of `backend`.
    fn grants(
        backend: &Self::Backend,
        plugin: &PluginConfig,
    ) -> Result<Self::Grants, CapabilityError>;

    /// The state of one new instance of `plugin`.
    fn instance(grants: &Self::Grants, plugin: &PluginConfig) -> Self::Instance;
}
