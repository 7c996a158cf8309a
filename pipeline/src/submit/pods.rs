//! A Job's pods: pods that cannot start (and why), which pod failed (the shard of an Indexed
//! Job), and their logs — where a log that cannot be fetched never hides the failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, LogParams};
use kubestyle_manifest::StageError;

use super::kube_err;

/// Container waiting reasons that never resolve by themselves: a missing Secret or ConfigMap, a
/// bad image name, an image that may not be pulled.
const STUCK: [&str; 4] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// Waiting reasons that usually mean a missing image but can pass (a registry's rate limit):
/// reported once the pod has waited past the grace.
const SLOW: [&str; 2] = ["ImagePullBackOff", "ErrImagePull"];

/// Event reasons that explain a pod waiting on its volume.
const VOLUME_EVENTS: [&str; 4] = [
    "FailedAttachVolume",
    "FailedMount",
    "FailedBinding",
    "ProvisioningFailed",
];

/// The annotation an Indexed Job puts on each pod.
const INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The pods a Job made (Kubernetes labels them `job-name=<job>`).
pub async fn job_pods(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, StageError> {
    pods.list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map(|l| l.items)
        .map_err(|e| kube_err(&format!("pods of {job}"), e))
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// `shard i` of an Indexed Job's pod, for messages.
pub fn shard_of(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX))
        .cloned()
}

/// Watches a Job's pods for starts that will not happen: checked every few seconds while the
/// Job runs. Immediate for states that need a person (a missing Secret, a bad image, a Job that
/// cannot create its pods); after `grace` for states a cluster can still resolve
/// (unschedulable: an autoscaler may add a GPU node; a volume still attaching; an image pull
/// backing off).
#[derive(Debug)]
pub struct StartupCheck {
    grace: Duration,
    /// When each pending pod was first seen pending.
    first_seen: BTreeMap<String, Instant>,
    /// Events could not be read (the Role lacks them): said once.
    events_forbidden: bool,
}

impl StartupCheck {
    pub fn new(grace: Duration) -> Self {
        StartupCheck {
            grace,
            first_seen: BTreeMap::new(),
            events_forbidden: false,
        }
    }

    /// Why the Job's pods will not start, if they will not: exit 3 for what is missing (a
    /// Secret, a ServiceAccount, a node, a volume), 5 when the cluster refuses the pods (quota,
    /// Pod Security admission).
    pub async fn check(
        &mut self,
        pods: &Api<Pod>,
        events: &Api<Event>,
        claims: &Api<PersistentVolumeClaim>,
        job: &str,
    ) -> Result<Option<StageError>, StageError> {
        let now = Instant::now();
        let list = job_pods(pods, job).await?;
        if list.is_empty() {
            // No pod at all: the Job controller's events say why it cannot make one.
            let failed: Vec<Event> = self
                .events_of(events, job)
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                .collect();
            if let Some(e) = failed.last() {
                let m = e.message.clone().unwrap_or_default();
                let line = format!("job {job} cannot create its pods: FailedCreate: {m}");
                return Ok(Some(if m.contains("not found") {
                    StageError::InputMissing(vec![line])
                } else {
                    StageError::Storage(line)
                }));
            }
        }
        self.first_seen
            .retain(|n, _| list.iter().any(|p| &pod_name(p) == n));
        for p in &list {
            let name = pod_name(p);
            let who = match shard_of(p) {
                Some(i) => format!("job {job}: pod {name} (shard {i})"),
                None => format!("job {job}: pod {name}"),
            };
            let status = p.status.clone().unwrap_or_default();
            let mut slow = Vec::new();
            for cs in status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
            {
                if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                    let reason = w.reason.clone().unwrap_or_default();
                    let line = format!("{reason}: {}", w.message.clone().unwrap_or_default());
                    if STUCK.contains(&reason.as_str()) {
                        return Ok(Some(StageError::InputMissing(vec![format!(
                            "{who} cannot start: {line}"
                        )])));
                    }
                    if SLOW.contains(&reason.as_str()) {
                        slow.push(line);
                    }
                }
            }
            if phase(p) != "Pending" {
                self.first_seen.remove(&name);
                continue;
            }
            let since = *self.first_seen.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < self.grace {
                continue;
            }
            let waited = now.duration_since(since).as_secs();
            let unschedulable = status.conditions.iter().flatten().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            });
            let mut why = slow;
            if let Some(c) = unschedulable {
                why.push(format!(
                    "Unschedulable: {}",
                    c.message.clone().unwrap_or_default()
                ));
            }
            // Volume trouble counts while it is the latest news about the pod (an old
            // FailedMount followed by a long image pull is not a stuck volume).
            let pod_events = self.events_of(events, &name).await;
            if pod_events
                .last()
                .is_some_and(|e| VOLUME_EVENTS.contains(&e.reason.as_deref().unwrap_or_default()))
            {
                why.extend(volume_lines(&pod_events));
            }
            for claim in claim_names(p) {
                if let Some(line) = self.claim_problem(claims, events, &claim).await {
                    why.push(line);
                }
            }
            if why.is_empty() {
                // Still pulling or creating: nothing known to be wrong.
                continue;
            }
            return Ok(Some(StageError::InputMissing(vec![format!(
                "{who} has not started after {waited}s: {}",
                why.join("; ")
            )])));
        }
        Ok(None)
    }

    /// The events about an object, oldest first (best effort: a Role without events access
    /// gives none, said once).
    async fn events_of(&mut self, events: &Api<Event>, object: &str) -> Vec<Event> {
        let lp = ListParams::default().fields(&format!("involvedObject.name={object}"));
        match events.list(&lp).await {
            Ok(list) => {
                let mut items = list.items;
                items.sort_by_key(|e| {
                    e.last_timestamp
                        .clone()
                        .map(|t| t.0)
                        .or_else(|| e.event_time.clone().map(|t| t.0))
                });
                items
            }
            Err(e) => {
                if !self.events_forbidden {
                    self.events_forbidden = true;
                    super::note(format!(
                        "warning: cannot read events ({}): reasons for pods that do not start \
                         will be less precise (manifests/base/role.yaml grants `events: list`)",
                        kube_err("events", e)
                    ));
                }
                Vec::new()
            }
        }
    }

    /// A claim of the pod that is not bound, with its events.
    async fn claim_problem(
        &mut self,
        claims: &Api<PersistentVolumeClaim>,
        events: &Api<Event>,
        name: &str,
    ) -> Option<String> {
        let c = claims.get_opt(name).await.ok().flatten()?;
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Bound" {
            return None;
        }
        let class = c
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .unwrap_or_else(|| "none (the cluster's default, if it has one)".into());
        let mut line = format!("persistentvolumeclaim {name} is {phase} (storage class {class})");
        let ev = volume_lines(&self.events_of(events, name).await);
        if !ev.is_empty() {
            line.push_str(&format!(": {}", ev.join("; ")));
        }
        Some(line)
    }
}

/// The volume events among `events`, as `reason: message`, each once.
fn volume_lines(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let reason = e.reason.clone().unwrap_or_default();
        if VOLUME_EVENTS.contains(&reason.as_str()) {
            let line = format!("{reason}: {}", e.message.clone().unwrap_or_default());
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}

/// The claims a pod mounts.
fn claim_names(p: &Pod) -> Vec<String> {
    p.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// The pod that failed a Job, for the failure report: the one the Job's failure message names
/// (podFailurePolicy names it), else the newest failed pod, else the newest pod.
pub fn failed_pod<'a>(pods: &'a [Pod], job_message: &str) -> Option<&'a Pod> {
    if let Some(p) = pods.iter().find(|p| {
        let n = pod_name(p);
        !n.is_empty() && job_message.contains(&format!("/{n} "))
    }) {
        return Some(p);
    }
    let finished = |p: &Pod| {
        terminated(p)
            .and_then(|t| t.finished_at.clone())
            .map(|t| t.0)
    };
    pods.iter()
        .filter(|p| phase(p) == "Failed")
        .max_by_key(|p| {
            (
                finished(p),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        })
        .or_else(|| {
            pods.iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        })
}

/// The terminated state of a pod's (first) container.
fn terminated(p: &Pod) -> Option<&ContainerStateTerminated> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
}

/// The exit code of a pod's (first) container, when it terminated.
pub fn exit_code(p: &Pod) -> Option<i32> {
    terminated(p).map(|t| t.exit_code)
}

/// The failing pod of a Job: its name (with the shard of an Indexed Job), exit code and log
/// tail. A log that cannot be fetched (the pod was garbage-collected, its node is gone) is
/// described in place of the tail: it never replaces the report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureReport {
    pub pod: Option<String>,
    pub shard: Option<String>,
    pub code: Option<i32>,
    pub tail: String,
}

pub async fn failure_report(
    pods: &Api<Pod>,
    job: &str,
    job_message: &str,
    tail: i64,
) -> FailureReport {
    let list = match job_pods(pods, job).await {
        Ok(l) => l,
        Err(e) => {
            return FailureReport {
                tail: format!("(pods unavailable: {e})"),
                ..FailureReport::default()
            };
        }
    };
    let Some(p) = failed_pod(&list, job_message) else {
        return FailureReport {
            tail: "(no pod of the job is left to show a log)".into(),
            ..FailureReport::default()
        };
    };
    let name = pod_name(p);
    FailureReport {
        shard: shard_of(p),
        code: exit_code(p),
        tail: log_of(pods, &name, Some(tail)).await,
        pod: Some(name),
    }
}

/// A pod's log, or a line saying why it is not available.
pub async fn log_of(pods: &Api<Pod>, name: &str, tail: Option<i64>) -> String {
    let lp = LogParams {
        tail_lines: tail,
        ..LogParams::default()
    };
    match pods.logs(name, &lp).await {
        Ok(l) => l,
        Err(e) => format!("(log of pod {name} unavailable: {})", short(&e)),
    }
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => other.to_string(),
    }
}
