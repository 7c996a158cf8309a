//! `pipeline submit | status | logs | delete`: the rendered objects on a real cluster, with
//! kube-rs.
//!
//! Submit creates the claim, then each stage's Job only after the previous one is Complete,
//! and resumes a run the way `pipeline run` does locally: a Job that exists with this spec's
//! hash is kept when Complete, followed when running, and **replaced when Failed** (so are the
//! later stages' Jobs); each stage's step cache on the claim then decides what is recomputed.
//! Another spec under the same run name is a conflict (exit 7) unless `--force` (replace every
//! Job) or `--force-stage S` (replace S and later ones) says otherwise; the claim is kept.
//! Each Job is followed with kube-runtime's watcher (default backoff, so a broken watch or an
//! API server restart recovers; a deleted Job is an error) under one overall deadline, while
//! its pods are checked for starts that will not happen. A failed stage's report — stage,
//! Job reason, failing pod and shard, exit code, log tail when available — always comes out,
//! and its exit code becomes ours.

mod admin;
mod client;
mod follow;
mod jobs;
mod pods;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::{Api, Client};
use kubestyle_manifest::StageError;

pub use admin::{delete, logs, status};
pub use client::{Cluster, ClusterArgs, install_crypto_provider};
pub use jobs::{JobState, job_state};
pub use pods::{FailureReport, failed_pod};

use crate::render::{Object, RenderOptions, claim_name, job_name, kubernetes_of, render_with};
use crate::spec::Loaded;
use crate::{PipelineError, Stage};
use jobs::{Placed, create_or_get, delete_and_wait, not_ours, owned_by_run, wait_job};

/// Which stages to run again whatever their state, like `pipeline run --force/--force-stage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Force {
    /// Every stage.
    pub all: bool,
    /// This stage and every later one.
    pub from: Option<Stage>,
}

impl Force {
    pub fn stage(&self, s: Stage) -> bool {
        self.all || self.from.is_some_and(|f| s >= f)
    }

    pub fn any(&self) -> bool {
        self.all || self.from.is_some()
    }

    /// `--force` for each stage's command, in stage order.
    pub fn per_stage(&self) -> [bool; 4] {
        Stage::ALL.map(|s| self.stage(s))
    }
}

/// How a submit goes.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Namespace (`-n`; default: the spec's `kubernetes.namespace`, else the client's).
    pub namespace: Option<String>,
    /// Overall deadline for the whole run.
    pub timeout: Duration,
    /// Follow each stage's pod logs live, printed with a stage prefix.
    pub logs: bool,
    /// How often a Job's pods are listed to find new ones to follow.
    pub log_poll: Duration,
    /// How often a running Job's pods are checked for starts that will not happen (a missing
    /// Secret, a bad image, unschedulable, a volume that cannot attach); `None`: never.
    pub pod_check: Option<Duration>,
    /// How long a pod may stay unschedulable or waiting on its volume before the run stops.
    pub pending_timeout: Duration,
    /// Stages to run again whatever their state.
    pub force: Force,
    /// Deadline of each single request (not of watches and log streams).
    pub request_timeout: Duration,
}

impl SubmitOptions {
    /// The defaults of the command line.
    pub fn new(timeout: Duration) -> Self {
        SubmitOptions {
            namespace: None,
            timeout,
            logs: false,
            log_poll: Duration::from_secs(2),
            pod_check: Some(Duration::from_secs(5)),
            pending_timeout: Duration::from_secs(300),
            force: Force::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One stage's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageResult {
    pub stage: Stage,
    pub job: String,
    /// The Job was created by this submit (new, or replacing a failed or forced one).
    pub created: bool,
    /// An existing Job was replaced (it had failed, or was forced).
    pub replaced: bool,
    /// Log lines streamed from its pods (with `logs`).
    pub log_lines: usize,
}

pub(crate) fn kube_err(what: &str, e: kube::Error) -> StageError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => StageError::Storage(format!(
            "{what}: forbidden by RBAC ({}); see manifests/base/role.yaml",
            s.message
        )),
        kube::Error::Api(s) if s.code == 401 => StageError::Storage(format!(
            "{what}: unauthorized ({}): the kubeconfig's credentials were refused",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => {
            StageError::InputMissing(vec![format!("{what}: {}", s.message)])
        }
        _ => StageError::Storage(format!("{what}: {}", error_chain(&e))),
    }
}

/// An error with its sources ("error trying to connect: tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// The stage a rendered Job belongs to (its label).
fn stage_of(j: &Job) -> Result<Stage, StageError> {
    j.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubestyle.dev/stage"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StageError::Internal("job without a stage label".into()))
}

/// Submit the run into namespace `ns` and follow it to the end. `ns` is the namespace in
/// force ([`Cluster::namespace`]); the objects are rendered for it.
pub async fn submit(
    client: Client,
    l: &Loaded,
    opts: &SubmitOptions,
) -> Result<Vec<StageResult>, PipelineError> {
    let k = kubernetes_of(l);
    let ns = opts
        .namespace
        .clone()
        .or(k.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let hash = l.hash.get(..40).unwrap_or(&l.hash).to_string();
    let run = l.spec.name.as_str();
    // A timeout too large to add to now is no deadline at all.
    let deadline = Instant::now()
        .checked_add(opts.timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    let limit = opts.request_timeout;
    let objects = render_with(
        l,
        &RenderOptions {
            namespace: Some(ns.clone()),
            force: opts.force.per_stage(),
        },
    )?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let mut results = Vec::new();
    // Once a stage's Job is (re)created, every later stage must run again too.
    let mut renew_rest = false;
    for obj in objects {
        let j = match obj {
            Object::Claim(c) => {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                let name = claim_name(run, &k);
                match create_or_get(&api, &c, &name, limit).await? {
                    Placed::Created => note(format!("==> claim {name}: created")),
                    Placed::Exists(existing) => {
                        // The claim is the run's data, whatever spec made it: kept. It cannot
                        // change its storage, though.
                        if !owned_by_run(&existing.metadata, run) {
                            return Err(not_ours("persistentvolumeclaim", &name, run).into());
                        }
                        check_claim_unchanged(&existing, &c)?;
                        note(format!("==> claim {name}: exists, kept (the run's data)"));
                    }
                }
                continue;
            }
            Object::Job(j) => j,
        };
        let stage = stage_of(&j)?;
        let name = job_name(run, stage);
        let forced = opts.force.stage(stage);
        let (created, replaced) = match create_or_get(&jobs, &j, &name, limit).await? {
            Placed::Created => (true, false),
            Placed::Exists(existing) => {
                if !owned_by_run(&existing.metadata, run) {
                    return Err(not_ours("job", &name, run).into());
                }
                let state = job_state(&existing);
                let theirs = jobs::spec_hash_of(&existing.metadata);
                let from_other_spec = theirs.as_deref() != Some(hash.as_str());
                if from_other_spec && !opts.force.any() {
                    return Err(jobs::other_spec(&name, theirs, &hash).into());
                }
                let why = if existing.metadata.deletion_timestamp.is_some() {
                    Some("it was being deleted".to_string())
                } else if forced {
                    Some("forced".to_string())
                } else if from_other_spec {
                    // Only with --force/--force-stage: the stage runs again without --force,
                    // and its step cache decides what is recomputed.
                    Some("it came from another spec".to_string())
                } else if renew_rest {
                    Some("an earlier stage ran again".to_string())
                } else if let JobState::Failed { reason, .. } = &state {
                    Some(format!("it had failed ({reason})"))
                } else {
                    None
                };
                match why {
                    Some(why) => {
                        note(format!("==> job {name}: replacing it: {why}"));
                        let uid = existing.metadata.uid.clone();
                        delete_and_wait(&jobs, &name, uid, deadline, limit).await?;
                        match create_or_get(&jobs, &j, &name, limit).await? {
                            Placed::Created => (true, true),
                            Placed::Exists(_) => {
                                return Err(StageError::Conflict(vec![format!(
                                    "job {name} was re-created by someone else meanwhile"
                                )])
                                .into());
                            }
                        }
                    }
                    None if state == JobState::Complete => {
                        note(format!("==> job {name}: complete already, kept"));
                        results.push(StageResult {
                            stage,
                            job: name,
                            created: false,
                            replaced: false,
                            log_lines: 0,
                        });
                        continue;
                    }
                    None => (false, false),
                }
            }
        };
        renew_rest |= created;
        if created && !replaced {
            note(format!("==> job {name}: created"));
        } else if !created {
            note(format!("==> job {name}: running already, following it"));
        }
        let log_lines = follow_stage(&client, &ns, stage, &name, deadline, opts).await?;
        note(format!("==> {stage}: complete"));
        results.push(StageResult {
            stage,
            job: name,
            created,
            replaced,
            log_lines,
        });
    }
    Ok(results)
}

/// A line for people on stderr; a closed stderr is not an error.
pub(crate) fn note(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// An existing claim is kept as it is: a spec asking for another access mode or storage class
/// cannot be met by it (exit 7).
fn check_claim_unchanged(
    existing: &PersistentVolumeClaim,
    wanted: &PersistentVolumeClaim,
) -> Result<(), StageError> {
    let name = existing.metadata.name.clone().unwrap_or_default();
    let (have, want) = (
        existing.spec.clone().unwrap_or_default(),
        wanted.spec.clone().unwrap_or_default(),
    );
    let modes_differ = have.access_modes != want.access_modes;
    let class_differs =
        want.storage_class_name.is_some() && have.storage_class_name != want.storage_class_name;
    if modes_differ || class_differs {
        return Err(StageError::Conflict(vec![format!(
            "persistentvolumeclaim {name} exists with access modes {:?} and storage class {:?}; \
             this spec asks for {:?} and {:?}. A claim cannot change its storage: \
             `pipeline delete RUN --with-data` (its data goes) or rename the run",
            have.access_modes.unwrap_or_default(),
            have.storage_class_name.unwrap_or_default(),
            want.access_modes.unwrap_or_default(),
            want.storage_class_name.unwrap_or_default(),
        )]));
    }
    Ok(())
}

/// Follow one stage's Job to its end: Ok when complete (with the number of log lines
/// streamed), the failure report when it failed, exit 3 when a pod cannot start, 124 at the
/// deadline.
async fn follow_stage(
    client: &Client,
    ns: &str,
    stage: Stage,
    name: &str,
    deadline: Instant,
    opts: &SubmitOptions,
) -> Result<usize, PipelineError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let left = deadline.saturating_duration_since(Instant::now());
    let probe = async {
        match opts.pod_check {
            Some(every) => {
                let mut check = pods::StartupCheck::new(opts.pending_timeout);
                loop {
                    tokio::time::sleep(every).await;
                    let found = tokio::time::timeout(
                        opts.request_timeout * 4,
                        check.check(&pods, &events, &claims, name),
                    )
                    .await;
                    // A check the API server does not answer in time is tried again.
                    if let Ok(r) = found
                        && let Some(e) = r?
                    {
                        return Err(e);
                    }
                }
            }
            None => std::future::pending().await,
        }
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = opts.logs.then(|| {
        tokio::spawn(follow::follow_logs(
            pods.clone(),
            name.to_string(),
            stage,
            opts.log_poll,
            done.clone(),
        ))
    });
    let both = async {
        tokio::select! {
            r = wait_job(&jobs, name) => r,
            r = probe => r,
        }
    };
    let outcome = tokio::time::timeout(left, both).await;
    let stop_follower = || {
        if let Some(f) = &follower {
            f.abort();
        }
    };
    let state = match outcome {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            stop_follower();
            return Err(e.into());
        }
        Err(_) => {
            stop_follower();
            return Err(PipelineError::Timeout {
                stage,
                after: opts.timeout,
            });
        }
    };
    match state {
        JobState::Complete => {
            // Let the log streams drain (they end when the containers exit).
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(match follower {
                Some(f) => tokio::time::timeout(Duration::from_secs(10), f)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0),
                None => 0,
            })
        }
        JobState::Failed { reason, message } => {
            stop_follower();
            // The report always comes out: a pod list or log that does not answer in time is
            // described in its place.
            let r = tokio::time::timeout(
                opts.request_timeout * 2,
                pods::failure_report(&pods, name, &message, 30),
            )
            .await
            .unwrap_or_else(|_| FailureReport {
                tail: "(the API server did not answer with the failed pod and its log in time)"
                    .into(),
                ..FailureReport::default()
            });
            let mut place = format!("job {name} ({reason}: {message})");
            if let Some(p) = &r.pod {
                place.push_str(&format!(", pod {p}"));
            }
            if let Some(s) = &r.shard {
                place.push_str(&format!(", shard {s}"));
            }
            place.push_str("; fix the cause and submit again to resume from this stage");
            Err(PipelineError::JobFailed {
                stage,
                code: r.code,
                place,
                tail: r.tail,
            })
        }
        JobState::Running => Err(StageError::Internal(format!(
            "job {name}: the watch ended while it was running"
        ))
        .into()),
    }
}
