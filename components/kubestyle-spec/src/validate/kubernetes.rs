//! `kubernetes`: namespace, claim, resources and GPU shards.

use super::Diagnostics;
use crate::Kubernetes;
use crate::bounds;

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
    mount_path(&k.volume.mount_path, d);
    numbers(k, d);
    names(k, d);
}

/// Every number against its [`bounds`] (the schema's minimum and maximum).
fn numbers(k: &Kubernetes, d: &mut Diagnostics) {
    d.range("kubernetes.gpu.shards", k.gpu.shards.into(), bounds::SHARDS);
    d.range(
        "kubernetes.gpu.parallelism",
        k.gpu.parallelism.into(),
        bounds::GPU_PARALLELISM,
    );
    d.range(
        "kubernetes.gpu.per_pod",
        k.gpu.per_pod.into(),
        bounds::GPUS_PER_POD,
    );
    d.range(
        "kubernetes.backoff_limit",
        k.backoff_limit.into(),
        bounds::BACKOFF_LIMIT,
    );
    d.range(
        "kubernetes.active_deadline_seconds",
        k.active_deadline_seconds,
        bounds::ACTIVE_DEADLINE_SECONDS,
    );
    d.range(
        "kubernetes.ttl_seconds_after_finished",
        k.ttl_seconds_after_finished.into(),
        bounds::TTL_SECONDS,
    );
}

/// Names, quantities and labels, each against its pattern: what the API server would refuse
/// is refused here, before anything is created.
fn names(k: &Kubernetes, d: &mut Diagnostics) {
    let dns = |d: &mut Diagnostics, field: &str, v: &str| {
        d.pattern(
            field,
            v,
            bounds::DNS_SUBDOMAIN,
            bounds::DNS_SUBDOMAIN_LEN,
            "a DNS subdomain name",
        )
    };
    let quantity = |d: &mut Diagnostics, field: &str, v: &str| {
        d.pattern(
            field,
            v,
            bounds::QUANTITY,
            bounds::QUANTITY_LEN,
            "a Kubernetes quantity (like 10Gi, 500m, 2)",
        )
    };
    d.pattern(
        "kubernetes.registry",
        &k.registry,
        bounds::REGISTRY,
        bounds::REGISTRY_LEN,
        "an image registry and repository prefix (like ghcr.io/kubestyle)",
    );
    if let Some(t) = &k.tag {
        d.pattern("kubernetes.tag", t, bounds::TAG, 128, "an image tag");
    }
    dns(d, "kubernetes.service_account", &k.service_account);
    for (field, v) in [
        ("kubernetes.s3_secret", &k.s3_secret),
        ("kubernetes.anonymize_secret", &k.anonymize_secret),
        ("kubernetes.volume.claim", &k.volume.claim),
        (
            "kubernetes.gpu.runtime_class_name",
            &k.gpu.runtime_class_name,
        ),
    ] {
        if let Some(v) = v {
            dns(d, field, v);
        }
    }
    if let Some(c) = k.volume.storage_class.as_deref().filter(|c| !c.is_empty()) {
        dns(d, "kubernetes.volume.storage_class", c);
    }
    quantity(d, "kubernetes.volume.size", &k.volume.size);
    for (stage, r) in &k.resources {
        for (what, v) in [("cpu", &r.cpu), ("memory", &r.memory)] {
            if let Some(v) = v {
                quantity(d, &format!("kubernetes.resources.{stage}.{what}"), v);
            }
        }
    }
    for (key, value) in &k.gpu.node_selector {
        let f = format!("kubernetes.gpu.node_selector.{key}");
        d.pattern(
            &f,
            key,
            bounds::LABEL_KEY,
            bounds::LABEL_KEY_LEN,
            "a label key",
        );
        d.pattern(
            &f,
            value,
            bounds::LABEL_VALUE,
            bounds::LABEL_VALUE_LEN,
            "a label value",
        );
    }
    for (i, t) in k.gpu.tolerations.iter().enumerate() {
        let f = |x: &str| format!("kubernetes.gpu.tolerations[{i}].{x}");
        if let Some(key) = &t.key {
            d.pattern(
                &f("key"),
                key,
                bounds::LABEL_KEY,
                bounds::LABEL_KEY_LEN,
                "a taint key",
            );
        }
        if let Some(v) = &t.value {
            d.pattern(
                &f("value"),
                v,
                bounds::LABEL_VALUE,
                bounds::LABEL_VALUE_LEN,
                "a taint value",
            );
        }
        if let Some(op) = &t.operator
            && !matches!(op.as_str(), "Exists" | "Equal")
        {
            d.push(f("operator"), format!("{op:?}: expected Exists or Equal"));
        }
        if let Some(e) = &t.effect
            && !matches!(e.as_str(), "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            d.push(
                f("effect"),
                format!("{e:?}: expected NoSchedule, PreferNoSchedule or NoExecute"),
            );
        }
    }
}

/// The volume's mount path: absolute and normalised, and apart from the pods' own emptyDir
/// (`/tmp`) and the image's system directories (neither one of them, above one, nor inside).
fn mount_path(p: &str, d: &mut Diagnostics) {
    const F: &str = "kubernetes.volume.mount_path";
    let before = d.0.len();
    d.pattern(
        F,
        p,
        bounds::MOUNT_PATH,
        bounds::MOUNT_PATH_LEN,
        "an absolute, normalised path (like /data)",
    );
    if d.0.len() > before {
        return;
    }
    let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    if let Some(r) = bounds::RESERVED_MOUNTS
        .iter()
        .find(|r| within(p, r) || within(r, p))
    {
        d.push(
            F,
            format!("{p:?} collides with {r} (the pods' scratch emptyDir and system directories are reserved)"),
        );
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
