//! `pipeline submit | status | logs | delete`: the rendered objects on a real cluster, with
//! kube-rs.
//!
//! Submit creates the claim, then each stage's Job only after the previous one is Complete.
//! Re-submitting adopts an existing run: an object that already exists is checked for the
//! run's spec hash (the same spec continues where it is; another spec under the same run name
//! is a conflict, exit 7). Each Job is followed with kube-runtime's watcher (default backoff,
//! so a broken watch recovers) under one overall deadline; `Failed` and `FailureTarget`
//! conditions count as failure (kube's `is_job_completed` only sees `Complete`). A failed
//! stage's pod exit code, reason and log tail are reported, and the pod's exit code becomes
//! ours.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use kubestyle_manifest::StageError;

use crate::render::{Object, claim_name, job_name, kubernetes_of, render};
use crate::spec::Loaded;
use crate::{PipelineError, Stage};

/// How a submit goes.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Namespace (default: the spec's `kubernetes.namespace`).
    pub namespace: Option<String>,
    /// Overall deadline for the whole run.
    pub timeout: Duration,
    /// Follow each stage's pod logs live, printed with a stage prefix.
    pub logs: bool,
    /// How often a Job's pods are listed to find new ones to follow.
    pub log_poll: Duration,
    /// How often a running Job's pods are checked for states that never resolve on their own
    /// (a missing Secret, an image that cannot be pulled); `None`: never.
    pub pod_check: Option<Duration>,
}

/// Waiting reasons that need a person: a missing Secret or ConfigMap, a missing image.
const STUCK: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// Follow the logs of every pod of `job` as it starts (an Indexed Job has several), printing
/// each line with the stage prefix; returns how many lines were printed. Runs until aborted or
/// until `done` is set and every stream has ended.
async fn follow_logs(
    pods: Api<Pod>,
    job: String,
    stage: Stage,
    every: Duration,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    use futures::AsyncBufReadExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let printed = std::sync::Arc::new(AtomicUsize::new(0));
    let mut seen = std::collections::BTreeSet::new();
    let mut streams = Vec::new();
    loop {
        if let Ok(list) = job_pods(&pods, &job).await {
            for p in list {
                let phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                if matches!(phase.as_str(), "Running" | "Succeeded" | "Failed")
                    && seen.insert(name.clone())
                {
                    let (pods, printed) = (pods.clone(), printed.clone());
                    streams.push(tokio::spawn(async move {
                        let lp = LogParams {
                            follow: true,
                            ..LogParams::default()
                        };
                        let Ok(stream) = pods.log_stream(&name, &lp).await else {
                            return;
                        };
                        let mut lines = stream.lines();
                        while let Some(Ok(line)) = lines.next().await {
                            eprintln!("{:>13} | {line}", stage.as_str());
                            printed.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
            }
        }
        if done.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(every).await;
    }
    for s in streams {
        let _ = s.await;
    }
    printed.load(Ordering::Relaxed)
}

/// The pods a Job made (Kubernetes labels them `job-name=<job>`).
async fn job_pods(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, StageError> {
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map(|l| l.items)
        .map_err(|e| kube_err(&format!("pods of {job}"), e))
}

/// A pod of the Job stuck in a state that will not resolve by itself, described.
async fn stuck_pod(pods: &Api<Pod>, job: &str) -> Result<Option<String>, StageError> {
    for p in job_pods(pods, job).await? {
        let name = p.metadata.name.clone().unwrap_or_default();
        let statuses = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        for cs in statuses {
            if let Some(w) = cs.state.and_then(|s| s.waiting) {
                let reason = w.reason.unwrap_or_default();
                if STUCK.contains(&reason.as_str()) {
                    return Ok(Some(format!(
                        "job {job}: pod {name} is stuck in {reason}: {}",
                        w.message.unwrap_or_default()
                    )));
                }
            }
        }
    }
    Ok(None)
}

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

fn kube_err(what: &str, e: kube::Error) -> StageError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => StageError::Storage(format!(
            "{what}: forbidden by RBAC ({}); see manifests/base/role.yaml",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => {
            StageError::InputMissing(vec![format!("{what}: {}", s.message)])
        }
        _ => StageError::Storage(format!("{what}: {e}")),
    }
}

fn spec_hash_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("kubestyle.dev/spec-hash"))
        .cloned()
}

/// Create, or adopt when it exists with the same spec hash.
async fn create_or_adopt<K>(
    api: &Api<K>,
    obj: &K,
    name: &str,
    want_hash: &str,
) -> Result<bool, StageError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(name).await.map_err(|e| kube_err(name, e))?;
            match spec_hash_of(existing.meta()) {
                Some(h) if h == want_hash => Ok(false),
                other => Err(StageError::Conflict(vec![format!(
                    "{name} already exists from another spec (spec-hash {}, this spec {want_hash}): \
                     delete the run (`pipeline delete`) or rename it",
                    other.unwrap_or_else(|| "none".into())
                )])),
            }
        }
        Err(e) => Err(kube_err(&format!("creating {name}"), e)),
    }
}

/// Follow one Job until it completes or fails, with the watcher's backoff.
async fn wait_job(api: &Api<Job>, name: &str) -> Result<JobState, StageError> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(job)) => match job_state(&job) {
                JobState::Running => continue,
                done => return Ok(done),
            },
            Ok(None) => {
                return Err(StageError::Storage(format!("watch of job {name} ended")));
            }
            Err(e) => {
                // The backoff passes errors through and delays the next attempt: a broken watch
                // or an API server restart recovers; RBAC and missing objects are final.
                let inner = match &e {
                    watcher::Error::InitialListFailed(k)
                    | watcher::Error::WatchStartFailed(k)
                    | watcher::Error::WatchFailed(k) => match k {
                        kube::Error::Api(s) => Some(s.code),
                        _ => None,
                    },
                    watcher::Error::WatchError(s) => Some(s.code),
                    watcher::Error::NoResourceVersion => None,
                };
                if matches!(inner, Some(403) | Some(404)) {
                    return Err(StageError::Storage(format!("watching job {name}: {e}")));
                }
                tracing::warn!("watching job {name}: {e}; retrying with backoff");
            }
        }
    }
}

/// The newest pod of a Job, its container's exit code and the tail of its log.
pub async fn pod_report(
    client: &Client,
    ns: &str,
    job: &str,
    tail: i64,
) -> Result<(Option<String>, Option<i32>, String), StageError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut items = job_pods(&pods, job).await?;
    items.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let Some(pod) = items.last() else {
        return Ok((None, None, String::new()));
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let code = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    let log = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(tail),
                ..LogParams::default()
            },
        )
        .await
        .map_err(|e| kube_err(&format!("log of pod {name}"), e))?;
    Ok((Some(name), code, log))
}

/// One stage's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageResult {
    pub stage: Stage,
    pub job: String,
    pub created: bool,
    /// Log lines streamed from its pods (with `logs`).
    pub log_lines: usize,
}

/// Submit the run and follow it to the end.
pub async fn submit(
    client: Client,
    l: &Loaded,
    opts: &SubmitOptions,
) -> Result<Vec<StageResult>, PipelineError> {
    let k = kubernetes_of(l);
    let ns = opts.namespace.clone().unwrap_or(k.namespace.clone());
    let hash = l.hash[..40].to_string();
    let deadline = Instant::now() + opts.timeout;
    let objects = render(l)?;
    let mut results = Vec::new();
    for obj in objects {
        match obj {
            Object::Claim(c) => {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                let name = claim_name(&l.spec.name, &k);
                let created = create_or_adopt(&api, &c, &name, &hash).await?;
                eprintln!(
                    "==> claim {name}: {}",
                    if created {
                        "created"
                    } else {
                        "exists, adopted"
                    }
                );
            }
            Object::Job(j) => {
                let stage: Stage = j
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubestyle.dev/stage"))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StageError::Internal("job without a stage label".into()))?;
                let name = job_name(&l.spec.name, stage);
                let api: Api<Job> = Api::namespaced(client.clone(), &ns);
                let created = create_or_adopt(&api, &j, &name, &hash).await?;
                eprintln!(
                    "==> job {name}: {}",
                    if created {
                        "created"
                    } else {
                        "exists, adopted"
                    }
                );
                let left = deadline.saturating_duration_since(Instant::now());
                let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
                let probe = async {
                    match opts.pod_check {
                        Some(every) => loop {
                            tokio::time::sleep(every).await;
                            if let Some(m) = stuck_pod(&pods, &name).await? {
                                return Err(StageError::InputMissing(vec![m]));
                            }
                        },
                        None => std::future::pending().await,
                    }
                };
                let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let follower = opts.logs.then(|| {
                    tokio::spawn(follow_logs(
                        pods.clone(),
                        name.clone(),
                        stage,
                        opts.log_poll,
                        done.clone(),
                    ))
                });
                let both = async {
                    tokio::select! {
                        r = wait_job(&api, &name) => r,
                        r = probe => r,
                    }
                };
                let state = tokio::time::timeout(left, both).await.map_err(|_| {
                    PipelineError::Timeout {
                        stage,
                        after: opts.timeout,
                    }
                })??;
                match state {
                    JobState::Complete => {
                        // Let the log streams drain (they end when the containers exit).
                        done.store(true, std::sync::atomic::Ordering::Relaxed);
                        let lines = match follower {
                            Some(f) => tokio::time::timeout(Duration::from_secs(10), f)
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .unwrap_or(0),
                            None => 0,
                        };
                        eprintln!("==> {stage}: complete");
                        results.push(StageResult {
                            stage,
                            job: name,
                            created,
                            log_lines: lines,
                        });
                        continue;
                    }
                    JobState::Failed { reason, message } => {
                        if let Some(f) = &follower {
                            f.abort();
                        }
                        let (pod, code, tail) = pod_report(&client, &ns, &name, 30).await?;
                        return Err(PipelineError::StageFailed {
                            stage,
                            code,
                            log: format!(
                                "job {name} ({reason}: {message}){}",
                                pod.map(|p| format!(", pod {p}")).unwrap_or_default()
                            )
                            .into(),
                            tail,
                        });
                    }
                    JobState::Running => unreachable!("wait_job returns a final state"),
                }
            }
        }
    }
    Ok(results)
}

/// One line per stage Job of a run: `stage job state`.
pub async fn status(client: Client, ns: &str, run: &str) -> Result<String, PipelineError> {
    let api: Api<Job> = Api::namespaced(client, ns);
    let mut out = String::new();
    for stage in Stage::ALL {
        let name = job_name(run, stage);
        let state = match api.get_opt(&name).await.map_err(|e| kube_err(&name, e))? {
            None => "not created".to_string(),
            Some(j) => match job_state(&j) {
                JobState::Running => {
                    let s = j.status.unwrap_or_default();
                    format!(
                        "running (active {}, succeeded {}, failed {})",
                        s.active.unwrap_or(0),
                        s.succeeded.unwrap_or(0),
                        s.failed.unwrap_or(0)
                    )
                }
                JobState::Complete => "complete".into(),
                JobState::Failed { reason, message } => format!("failed: {reason}: {message}"),
            },
        };
        out.push_str(&format!("{:<14} {name:<56} {state}\n", stage.as_str()));
    }
    Ok(out)
}

/// Delete a run's Jobs (and their pods); the claim only with `with_data`.
pub async fn delete(
    client: Client,
    ns: &str,
    run: &str,
    claim: &str,
    with_data: bool,
) -> Result<Vec<String>, PipelineError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let mut deleted = Vec::new();
    for stage in Stage::ALL {
        let name = job_name(run, stage);
        match jobs.delete(&name, &dp).await {
            Ok(_) => deleted.push(format!("job/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(&format!("deleting {name}"), e).into()),
        }
    }
    if with_data {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
        match claims.delete(claim, &DeleteParams::default()).await {
            Ok(_) => deleted.push(format!("persistentvolumeclaim/{claim}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(&format!("deleting {claim}"), e).into()),
        }
    }
    Ok(deleted)
}
