//! Multipart uploads in flight, so that a SIGINT/SIGTERM can abort them
//! (`AbortMultipartUpload`) instead of leaving their parts billed in the bucket.
//!
//! [`dest::put_multipart`](crate::dest::put_multipart) takes a [`Slot`] before
//! `CreateMultipartUpload` (refused once the process is cancelled) and records the upload id
//! in it; the slot is released ([`Slot::finish`]) when the upload is completed or aborted by
//! the transfer itself. The signal handler calls [`abort_in_flight`].
//!
//! A `CreateMultipartUpload` already sent when the signal comes is not dropped: the server may
//! have made the upload, and only its answer names it. The transfer waits for the answer and
//! records the id; the handler waits (within its bound) for creations under way. A slot
//! dropped after the signal with an upload id is left for the handler, never forgotten.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use kubestyle_manifest::StageError;
use kubestyle_manifest::cancel;

#[derive(Debug, Clone)]
struct Upload {
    client: Client,
    bucket: String,
    key: String,
    /// `None` while `CreateMultipartUpload` is under way.
    upload_id: Option<String>,
}

static IN_FLIGHT: Mutex<BTreeMap<u64, Upload>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

fn in_flight() -> MutexGuard<'static, BTreeMap<u64, Upload>> {
    IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One multipart upload being made; released on drop.
#[derive(Debug)]
pub struct Slot(u64);

impl Slot {
    /// Before `CreateMultipartUpload`. Refused once the process is cancelled.
    pub fn begin(client: &Client, bucket: &str, key: &str) -> Result<Slot, StageError> {
        let mut m = in_flight();
        cancel::check()?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        m.insert(
            id,
            Upload {
                client: client.clone(),
                bucket: bucket.into(),
                key: key.into(),
                upload_id: None,
            },
        );
        Ok(Slot(id))
    }

    /// The upload now exists under `upload_id`.
    pub fn started(&self, upload_id: &str) {
        if let Some(u) = in_flight().get_mut(&self.0) {
            u.upload_id = Some(upload_id.into());
        }
    }
}

impl Slot {
    /// The upload was completed or aborted by the transfer: nothing for the handler to do.
    pub fn finish(self) {
        in_flight().remove(&self.0);
    }
}

impl Drop for Slot {
    /// Released without [`Slot::finish`]: forgotten when no upload was made (creation failed);
    /// an upload made but neither completed nor aborted is left for [`abort_in_flight`] once
    /// the process is cancelled.
    fn drop(&mut self) {
        let mut m = in_flight();
        let made = m.get(&self.0).is_some_and(|u| u.upload_id.is_some());
        if !(made && cancel::is_cancelled()) {
            m.remove(&self.0);
        }
    }
}

/// The multipart uploads the signal handler would abort now, as `(bucket, key, upload id)`
/// (`None` while being created). For tests.
#[doc(hidden)]
pub fn pending() -> Vec<(String, String, Option<String>)> {
    in_flight()
        .values()
        .map(|u| (u.bucket.clone(), u.key.clone(), u.upload_id.clone()))
        .collect()
}

/// Abort every multipart upload in flight (waiting, up to `within`, for those still being
/// created). Called after the process is cancelled, so no new one starts.
pub async fn abort_in_flight(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let started: Vec<(u64, Upload)> = {
            let mut m = in_flight();
            let ids: Vec<u64> = m
                .iter()
                .filter(|(_, u)| u.upload_id.is_some())
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| m.remove(&id).map(|u| (id, u)))
                .collect()
        };
        for (_, u) in started {
            let upload_id = u.upload_id.unwrap_or_default();
            let uri = format!("s3://{}/{}", u.bucket, u.key);
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::time::timeout(
                left.max(Duration::from_secs(1)),
                u.client
                    .abort_multipart_upload()
                    .bucket(&u.bucket)
                    .key(&u.key)
                    .upload_id(&upload_id)
                    .send(),
            )
            .await;
            match r {
                Ok(Ok(_)) => tracing::warn!("{uri}: multipart upload {upload_id} aborted"),
                Ok(Err(e)) => tracing::error!(
                    "{uri}: could not abort multipart upload {upload_id}: {}",
                    kubestyle_s3::storage_error("AbortMultipartUpload", e)
                ),
                Err(_) => {
                    tracing::error!("{uri}: could not abort multipart upload {upload_id} in time")
                }
            }
        }
        if in_flight().is_empty() || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
