//! `wasi:keyvalue@0.2.0-draft` (`store`, `atomics`, `batch`; the WIT is in
//! `wit/deps/keyvalue`): what wasmCloud's components import. Counters are unsigned here, and
//! a page's cursor is the number the bucket gave.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::rules::{Failure, overflow};
use super::{Bucket, Open, Refused, View, bucket_methods};

/// Bindings of `wasi:keyvalue@0.2.0-draft`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": crate::plugin::host::keyvalue::Open },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error, KeyResponse};

type Host<T> = wasmtime::Result<Result<T, Error>>;

/// A backend's failure as the interface says it: `other`, with its words.
impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        Error::Other(f.0)
    }
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Self {
        match r {
            Refused::NoSuchStore => Error::NoSuchStore,
            Refused::AccessDenied => Error::AccessDenied,
        }
    }
}

impl store::Host for View<'_> {
    async fn open(&mut self, identifier: String) -> Host<Resource<Open>> {
        match View::open(self, &identifier) {
            Ok(open) => Ok(Ok(self.table.push(open)?)),
            Err(refused) => Ok(Err(refused.into())),
        }
    }
}

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

    async fn set_many(&mut self, b: Resource<Open>, pairs: Vec<(String, Vec<u8>)>) -> Host<()> {
        Ok(self.bucket(&b)?.set_many(pairs).await.map_err(Into::into))
    }

    async fn delete_many(&mut self, b: Resource<Open>, keys: Vec<String>) -> Host<()> {
        let deleted = self.bucket(&b)?.delete("delete-many", keys).await;
        Ok(deleted.map_err(Into::into))
    }
}
