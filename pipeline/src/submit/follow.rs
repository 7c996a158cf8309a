//! `submit --watch`: every pod of the running stage followed live, each line with a stage
//! prefix (an Indexed Job has several pods).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;

use super::pods::job_pods;
use crate::Stage;

/// Follow the logs of every pod of `job` as it starts, printing each line with the stage
/// prefix; returns how many lines were printed. Runs until aborted or until `done` is set and
/// every stream has ended.
pub async fn follow_logs(
    pods: Api<Pod>,
    job: String,
    stage: Stage,
    every: Duration,
    done: Arc<AtomicBool>,
) -> usize {
    use futures::AsyncBufReadExt;
    let printed = Arc::new(AtomicUsize::new(0));
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
                        let stream = match pods.log_stream(&name, &lp).await {
                            Ok(s) => s,
                            Err(e) => {
                                super::note(format!(
                                    "{:>13} | (log of pod {name} unavailable: {e})",
                                    stage.as_str()
                                ));
                                return;
                            }
                        };
                        let mut lines = stream.lines();
                        while let Some(Ok(line)) = lines.next().await {
                            super::note(format!("{:>13} | {line}", stage.as_str()));
                            printed.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
            }
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(every).await;
    }
    for s in streams {
        let _ = s.await;
    }
    printed.load(Ordering::Relaxed)
}
