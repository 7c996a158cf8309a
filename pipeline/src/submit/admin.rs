//! `pipeline status | logs | delete` of a run.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, PropagationPolicy};
use kube::{Api, Client};

use super::jobs::{JobState, job_state, not_ours, owned_by_run};
use super::kube_err;
use super::pods::{exit_code, job_pods, log_of, shard_of};
use crate::render::job_name;
use crate::{PipelineError, Stage};
use kubestyle_manifest::StageError;

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
                JobState::Failed { reason, message } => format!(
                    "failed: {reason}: {message} (submit the spec again to retry from here)"
                ),
            },
        };
        out.push_str(&format!("{:<14} {name:<56} {state}\n", stage.as_str()));
    }
    Ok(out)
}

/// The logs of every pod of the run's stage Jobs (every shard of an Indexed Job), each line
/// prefixed with its stage (and shard). A log that cannot be fetched is noted in its place and
/// the others still come; only failing to list the pods is an error.
pub async fn logs(
    client: Client,
    ns: &str,
    run: &str,
    stages: &[Stage],
) -> Result<String, PipelineError> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let mut out = String::new();
    for &stage in stages {
        let job = job_name(run, stage);
        let mut list = job_pods(&pods, &job).await?;
        list.sort_by_key(|p| {
            (
                shard_of(p).and_then(|s| s.parse::<u32>().ok()),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        for p in &list {
            let name = p.metadata.name.clone().unwrap_or_default();
            let prefix = match shard_of(p) {
                Some(i) => format!("{stage}[{i}]"),
                None => stage.to_string(),
            };
            let code = exit_code(p)
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            out.push_str(&format!("{prefix:>16} | ==> pod {name}{code}\n"));
            for line in log_of(&pods, &name, None).await.lines() {
                out.push_str(&format!("{prefix:>16} | {line}\n"));
            }
        }
    }
    Ok(out)
}

/// Delete a run's Jobs (and their pods); the claim only with `with_data`. Each object is
/// deleted only as the one looked up and found to be the run's: the DELETE carries its uid as
/// a precondition, so an object replaced in between (someone else's of the same name) is left
/// alone (the API server answers 409), and nothing is deleted where the lookup found nothing.
pub async fn delete(
    client: Client,
    ns: &str,
    run: &str,
    claim: &str,
    with_data: bool,
) -> Result<Vec<String>, PipelineError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let mut deleted = Vec::new();
    for stage in Stage::ALL {
        let name = job_name(run, stage);
        let uid = match jobs.get_opt(&name).await {
            Ok(Some(j)) if !owned_by_run(&j.metadata, run) => {
                return Err(not_ours("job", &name, run).into());
            }
            Ok(Some(j)) => j.metadata.uid,
            Ok(None) => continue,
            Err(e) => return Err(kube_err(&name, e).into()),
        };
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(precondition(uid)),
            ..DeleteParams::default()
        };
        match jobs.delete(&name, &dp).await {
            Ok(_) => deleted.push(format!("job/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Err(replaced("job", &name).into());
            }
            Err(e) => return Err(kube_err(&format!("deleting {name}"), e).into()),
        }
    }
    if with_data {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
        // Only the run's own claim: never a claim someone else named like it.
        let uid = match claims.get_opt(claim).await {
            Ok(Some(c)) if !owned_by_run(&c.metadata, run) => {
                return Err(not_ours("persistentvolumeclaim", claim, run).into());
            }
            Ok(Some(c)) => Some(c.metadata.uid),
            Ok(None) => None,
            Err(e) => return Err(kube_err(claim, e).into()),
        };
        if let Some(uid) = uid {
            let dp = DeleteParams {
                preconditions: Some(precondition(uid)),
                ..DeleteParams::default()
            };
            match claims.delete(claim, &dp).await {
                Ok(_) => deleted.push(format!("persistentvolumeclaim/{claim}")),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(replaced("persistentvolumeclaim", claim).into());
                }
                Err(e) => return Err(kube_err(&format!("deleting {claim}"), e).into()),
            }
        }
    }
    Ok(deleted)
}

/// Delete only the object with this uid (an object without one is never deleted: a uid that
/// no object has).
fn precondition(uid: Option<String>) -> kube::api::Preconditions {
    kube::api::Preconditions {
        uid: Some(uid.unwrap_or_else(|| "kubestyle-no-uid".into())),
        resource_version: None,
    }
}

fn replaced(kind: &str, name: &str) -> StageError {
    StageError::Conflict(vec![format!(
        "{kind} {name} was replaced between its lookup and its deletion: left alone"
    )])
}
