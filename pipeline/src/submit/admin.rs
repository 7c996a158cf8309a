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
        match jobs.get_opt(&name).await {
            Ok(Some(j)) if !owned_by_run(&j.metadata, run) => {
                return Err(not_ours("job", &name, run).into());
            }
            Ok(_) => {}
            Err(e) => return Err(kube_err(&name, e).into()),
        }
        match jobs.delete(&name, &dp).await {
            Ok(_) => deleted.push(format!("job/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(&format!("deleting {name}"), e).into()),
        }
    }
    if with_data {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, ns);
        // Only the run's own claim: never a claim someone else named like it.
        match claims.get_opt(claim).await {
            Ok(Some(c)) if !owned_by_run(&c.metadata, run) => {
                return Err(not_ours("persistentvolumeclaim", claim, run).into());
            }
            Ok(_) => {}
            Err(e) => return Err(kube_err(claim, e).into()),
        }
        match claims.delete(claim, &DeleteParams::default()).await {
            Ok(_) => deleted.push(format!("persistentvolumeclaim/{claim}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(&format!("deleting {claim}"), e).into()),
        }
    }
    Ok(deleted)
}
