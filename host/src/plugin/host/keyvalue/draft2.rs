//! `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`, `batch`; the WIT is in
//! `wit/deps/keyvalue-draft2`): what Spin's components import. Over draft it adds
//! compare-and-swap (the `cas` resource and `swap`), takes signed counter deltas, and its
//! page cursor is a string (here the decimal of draft's number).
//!
//! A `cas` handle holds what its key was when it was made: the version `swap` compares, and
//! the value `current` hands back, read in the same step. A failed swap hands back a new
//! handle already holding the key as it is now, so a read-modify-write loop costs one step per
//! try after the first.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::buckets::{Bucket, Open, Refused, View, batch_writes, bucket_methods, interface_glue};
use super::rules::{Failure, Snapshot, other};

/// Bindings of `wasi:keyvalue@0.2.0-draft2`.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::plugin::host::keyvalue::buckets::Open,
            "wasi:keyvalue/atomics.cas": crate::plugin::host::keyvalue::draft2::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error, KeyResponse};

type Host<T> = wasmtime::Result<Result<T, Error>>;

/// A compare-and-swap handle: a resource in the instance's table.
pub struct Cas {
    bucket: Arc<Bucket>,
    key: String,
    seen: Snapshot,
}

interface_glue!();

impl store::HostBucket for View<'_> {
    bucket_methods!();

    async fn list_keys(&mut self, b: Resource<Open>, cursor: Option<String>) -> Host<KeyResponse> {
        let cursor = match cursor.map(|c| c.parse::<u64>()).transpose() {
            Ok(cursor) => cursor,
            Err(_) => {
                return Ok(Err(other(
                    "not a cursor this bucket gave (pass back the one list-keys returned)",
                )
                .into()));
            }
        };
        let answer = self.answer();
        let page = self.bucket(&b)?.list_keys(cursor, answer).await;
        Ok(page
            .map(|(keys, cursor)| KeyResponse {
                keys,
                cursor: cursor.map(|c| c.to_string()),
            })
            .map_err(Into::into))
    }
}

impl atomics::HostCas for View<'_> {
    async fn new(&mut self, b: Resource<Open>, key: String) -> Host<Resource<Cas>> {
        let bucket = self.bucket(&b)?;
        let answer = self.answer();
        let seen = match bucket.snapshot(key.clone(), answer).await {
            Ok(seen) => seen,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(self.table.push(Cas { bucket, key, seen })?))
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Host<Option<Vec<u8>>> {
        let cas = self.table.get(&cas)?;
        Ok(match &cas.seen.value {
            Ok(value) => Ok(value.as_ref().map(|v| v.to_vec())),
            Err(too_large) => Err(Failure::from(*too_large).into()),
        })
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for View<'_> {
    async fn increment(&mut self, b: Resource<Open>, key: String, delta: i64) -> Host<i64> {
        Ok(self
            .bucket(&b)?
            .increment(key, delta)
            .await
            .map_err(Into::into))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { bucket, key, seen } = self.table.delete(cas)?;
        let answer = self.answer();
        Ok(match bucket.swap(&key, seen.version, value, answer).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(now)) => {
                let retry = self.table.push(Cas {
                    bucket,
                    key,
                    seen: now,
                })?;
                Err(atomics::CasError::CasFailed(retry))
            }
            Err(e) => Err(atomics::CasError::StoreError(e.into())),
        })
    }
}

impl batch::Host for View<'_> {
    async fn get_many(
        &mut self,
        b: Resource<Open>,
        keys: Vec<String>,
    ) -> Host<Vec<(String, Option<Vec<u8>>)>> {
        let answer = self.answer();
        Ok(self
            .bucket(&b)?
            .get_many(keys, answer)
            .await
            .map_err(Into::into))
    }

    batch_writes!();
}
