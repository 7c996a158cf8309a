//! `kubernetes`: namespace, claim, resources and GPU shards.

use super::Diagnostics;
use crate::Kubernetes;

pub(super) fn validate(k: &Kubernetes, d: &mut Diagnostics) {
    if let Some(ns) = &k.namespace
        && !is_dns_label(ns)
    {
        d.push("kubernetes.namespace", format!("{ns:?} is not a DNS label"));
    }
    if !matches!(
        k.volume.access_mode.as_str(),
        "ReadWriteOnce" | "ReadWriteMany" | "ReadWriteOncePod"
    ) {
        d.push(
            "kubernetes.volume.access_mode",
            format!(
                "{:?}: expected ReadWriteOnce, ReadWriteMany or ReadWriteOncePod",
                k.volume.access_mode
            ),
        );
    } else if k.volume.claim.is_none()
        && k.volume.access_mode == "ReadWriteOncePod"
        && k.gpu.shards > 1
        && k.gpu.parallelism > 1
    {
        d.push(
            "kubernetes.volume.access_mode",
            "ReadWriteOncePod lets one pod at a time mount the claim: parallel stylize shards \
                 never all start (not even on one node). Use ReadWriteMany, ReadWriteOnce with \
                 gpu.same_node: true, or gpu.parallelism: 1",
        );
    } else if k.volume.claim.is_none()
        && k.volume.access_mode != "ReadWriteMany"
        && k.gpu.shards > 1
        && k.gpu.parallelism > 1
        && !k.gpu.same_node
    {
        d.push(
                "kubernetes.volume.access_mode",
                format!(
                    "{} with {} stylize shards in parallel cannot schedule on a multi-node cluster: \
                     a {} claim is mounted by one node at a time, so shards on other nodes never start \
                     (Multi-Attach error). Use access_mode: ReadWriteMany (EFS, Filestore, Azure Files), \
                     gpu.parallelism: 1 (shards one at a time), or gpu.same_node: true (every shard on one node)",
                    k.volume.access_mode, k.gpu.parallelism, k.volume.access_mode
                ),
            );
    }
    if k.volume.storage_class.as_deref() == Some("") {
        d.push(
            "kubernetes.volume.storage_class",
            "empty: leave it out for the cluster's default class",
        );
    }
    for stage in k.resources.keys() {
        if !kubestyle_manifest::STAGES.contains(&stage.as_str()) {
            d.push(
                format!("kubernetes.resources.{stage}"),
                format!(
                    "unknown stage (stages: {})",
                    kubestyle_manifest::STAGES.join(", ")
                ),
            );
        }
    }
    if k.gpu.parallelism > k.gpu.shards {
        d.push(
            "kubernetes.gpu.parallelism",
            format!(
                "{} is more than the {} shards",
                k.gpu.parallelism, k.gpu.shards
            ),
        );
    }
    if !k.volume.mount_path.starts_with('/') {
        d.push("kubernetes.volume.mount_path", "must be an absolute path");
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
