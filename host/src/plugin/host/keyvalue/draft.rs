//! `wasi:keyvalue@0.2.0-draft` (`store`, `atomics`, `batch`; the WIT is in
//! `wit/deps/keyvalue`): what wasmCloud's components import. Counters are unsigned here, and
//! a page's cursor is the number the bucket gave.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::buckets::{Bucket, Open, Refused, View, batch_writes, bucket_methods, interface_glue};
use super::rules::{Failure, overflow};

/// Bindings of `wasi:keyvalue@0.2.0-draft`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": crate::plugin::host::keyvalue::buckets::Open },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error, KeyResponse};

type Host<T> = wasmtime::Result<Result<T, Error>>;

interface_glue!();

impl store::HostBucket for View<'_> {
    bucket_methods!();

    async fn list_keys(&mut self, b: Resource<Open>, cursor: Option<u64>) -> Host<KeyResponse> {
        let answer = self.answer();
        let page = self.bucket(&b)?.list_keys(cursor, answer).await;
        Ok(page
            .map(|(keys, cursor)| KeyResponse { keys, cursor })
            .map_err(Into::into))
    }
}

impl atomics::Host for View<'_> {
    async fn increment(&mut self, b: Resource<Open>, key: String, delta: u64) -> Host<u64> {
        let bucket: Arc<Bucket> = self.bucket(&b)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Ok(Err(overflow().into()));
        };
        // Counters never go below 0, so the new value always fits.
        let counted = bucket.increment(key, delta).await;
        Ok(counted.map(|n| n as u64).map_err(Into::into))
    }
}

impl batch::Host for View<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Open>,
        keys: Vec<String>,
    ) -> Host<Vec<Option<(String, Vec<u8>)>>> {
        let answer = self.answer();
        let found = self.bucket(&b)?.get_many(keys, answer).await;
        Ok(found
            .map(|pairs| pairs.into_iter().map(|(k, v)| v.map(|v| (k, v))).collect())
            .map_err(Into::into))
    }

    batch_writes!();
}
