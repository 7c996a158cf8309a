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
    /// One of that name exists already (returned as it is).
    Exists(K),
}

/// `fut` under the per-request deadline: the outer error is the deadline (exit 5 naming
/// `what`), the inner one the API's answer.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, StageError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        StageError::Storage(format!(
            "{what}: the API server did not answer within {}s (--request-timeout)",
            limit.as_secs()
        ))
    })
}

/// Create `obj`, or return the existing object of that name. When the existing one vanishes
/// between the conflict and the read (its TTL, a delete), the create is tried again.
pub async fn create_or_get<K>(
    api: &Api<K>,
    obj: &K,
    name: &str,
    limit: Duration,
) -> Result<Placed<K>, StageError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    for _ in 0..3 {
        match within(
            limit,
            &format!("creating {name}"),
            api.create(&PostParams::default(), obj),
        )
        .await?
        {
            Ok(_) => return Ok(Placed::Created),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                match within(limit, name, api.get_opt(name)).await? {
                    Ok(Some(existing)) => return Ok(Placed::Exists(existing)),
                    Ok(None) => continue,
                    Err(e) => return Err(kube_err(name, e)),
                }
            }
            Err(e) => return Err(kube_err(&format!("creating {name}"), e)),
        }
    }
    Err(StageError::Conflict(vec![format!(
        "{name} keeps appearing and disappearing: another client is creating and deleting it"
    )]))
}

/// An object of this run made by kubestyle (its labels say so); anything else of that name is
/// never adopted, replaced or deleted.
pub fn owned_by_run(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    run: &str,
) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    label("app.kubernetes.io/managed-by") == Some("kubestyle-pipeline")
        && label("kubestyle.dev/run") == Some(run)
}

/// The conflict of an existing object that is not this run's.
pub fn not_ours(kind: &str, name: &str, run: &str) -> StageError {
    StageError::Conflict(vec![format!(
        "{kind} {name} exists but was not made by kubestyle for run {run:?} (labels \
         app.kubernetes.io/managed-by=kubestyle-pipeline, kubestyle.dev/run={run}): \
         rename the run or remove it yourself"
    )])
}

/// The conflict of a Job from another spec, without `--force`.
pub fn other_spec(name: &str, theirs: Option<String>, ours: &str) -> StageError {
    StageError::Conflict(vec![format!(
        "{name} already exists from another spec (spec-hash {}, this spec {ours}): \
         submit with --force (or --force-stage STAGE) to replace the run's Jobs \
         (the claim and its data are kept), or `pipeline delete` the run, or rename it",
        theirs.unwrap_or_else(|| "none".into())
    )])
}

/// Delete a Job and its pods (foreground: the Job goes only after its pods), and wait until
/// the name is free again so the Job can be created anew. Only the Job looked up (`uid`, a
/// precondition of the DELETE): one replaced in between by someone else's is left alone.
pub async fn delete_and_wait(
    api: &Api<Job>,
    name: &str,
    uid: Option<String>,
    deadline: Instant,
    limit: Duration,
) -> Result<(), StageError> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.unwrap_or_else(|| "kubestyle-no-uid".into())),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let what = format!("deleting job {name}");
    match within(limit, &what, api.delete(name, &dp)).await? {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(StageError::Conflict(vec![format!(
                "job {name} was replaced between its lookup and its deletion: left alone"
            )]));
        }
        Err(e) => return Err(kube_err(&what, e)),
    }
    let mut pause = Duration::from_millis(100);
    loop {
        match within(limit, &what, api.get_opt(name)).await? {
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
