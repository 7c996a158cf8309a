//! Jobs on the cluster: their state, following one to the end, and creating, adopting or
//! replacing one.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubestyle_manifest::StageError;

use super::kube_err;

/// The state of one Job, from its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Complete,
    /// `Failed`, or `FailureTarget` (set first since Kubernetes 1.31).
    Failed {
        reason: String,
        message: String,
    },
}

/// Read a Job's state from its status conditions.
pub fn job_state(job: &Job) -> JobState {
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .cloned()
        .unwrap_or_default();
    for c in &conds {
        if c.status == "True" && (c.type_ == "Failed" || c.type_ == "FailureTarget") {
            return JobState::Failed {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            };
        }
    }
    if conds
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True")
    {
        JobState::Complete
    } else {
        JobState::Running
    }
}

pub(crate) fn spec_hash_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("kubestyle.dev/spec-hash"))
        .cloned()
}

/// What became of an object submit wanted to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed<K> {
    /// Created now.
    Created,
    /// It existed with this spec's hash (or was allowed to differ): kept as it is.
    Adopted(K),
}

/// Create `obj`, or return the existing object of that name when `accept` takes it (given
/// whether its spec hash is `want_hash`); an existing object `accept` refuses is a conflict
/// (exit 7) naming both hashes.
pub async fn create_or_adopt<K>(
    api: &Api<K>,
    obj: &K,
    name: &str,
    want_hash: &str,
    accept_other_spec: bool,
) -> Result<Placed<K>, StageError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(Placed::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(name).await.map_err(|e| kube_err(name, e))?;
            match spec_hash_of(existing.meta()) {
                Some(h) if h == want_hash => Ok(Placed::Adopted(existing)),
                _ if accept_other_spec => Ok(Placed::Adopted(existing)),
                other => Err(StageError::Conflict(vec![format!(
                    "{name} already exists from another spec (spec-hash {}, this spec {want_hash}): \
                     submit with --force (or --force-stage STAGE) to replace the run's Jobs \
                     (the claim and its data are kept), or `pipeline delete` the run, or rename it",
                    other.unwrap_or_else(|| "none".into())
                )])),
            }
        }
        Err(e) => Err(kube_err(&format!("creating {name}"), e)),
    }
}

/// Delete a Job and its pods (foreground: the Job goes only after its pods), and wait until
/// the name is free again so the Job can be created anew.
pub async fn delete_and_wait(
    api: &Api<Job>,
    name: &str,
    deadline: Instant,
) -> Result<(), StageError> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(kube_err(&format!("deleting job {name}"), e)),
    }
    let mut pause = Duration::from_millis(100);
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) => return Err(kube_err(&format!("job {name}"), e)),
        }
        if Instant::now() >= deadline {
            return Err(StageError::Storage(format!(
                "job {name} was deleted but is still there (its pods are not going away): \
                 check the node with `kubectl describe job {name}`"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Follow one Job until it completes or fails, with the watcher's backoff (a broken watch or
/// an API server restart recovers). A Job deleted meanwhile — seen as a delete event, or
/// missing from the list after a reconnection — is an error naming it (exit 3), never a silent
/// wait.
pub async fn wait_job(api: &Api<Job>, name: &str) -> Result<JobState, StageError> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api.clone(), cfg).default_backoff().boxed();
    let gone = || {
        StageError::InputMissing(vec![format!(
            "job {name} was deleted while being followed (`pipeline delete`, \
             `kubectl delete`, or its TTL): submit again to re-create it"
        )])
    };
    let mut listed = false;
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Apply(job) | Event::InitApply(job))) => {
                listed = true;
                if job.metadata.deletion_timestamp.is_some() {
                    return Err(gone());
                }
                match job_state(&job) {
                    JobState::Running => continue,
                    done => return Ok(done),
                }
            }
            Ok(Some(Event::Init)) => listed = false,
            Ok(Some(Event::InitDone)) => {
                if !listed {
                    return Err(gone());
                }
            }
            Ok(Some(Event::Delete(_))) => return Err(gone()),
            Ok(None) => {
                return Err(StageError::Storage(format!("watch of job {name} ended")));
            }
            Err(e) => {
                // The backoff passes errors through and delays the next attempt; RBAC and
                // missing objects are final.
                let code = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                    | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
                    watcher::Error::WatchError(s) => Some(s.code),
                    _ => None,
                };
                if matches!(code, Some(403) | Some(404)) {
                    return Err(StageError::Storage(format!("watching job {name}: {e}")));
                }
                tracing::warn!("watching job {name}: {e}; retrying with backoff");
            }
        }
    }
}
