//! `kubernetes`: the Kubernetes layout of a run (claim, resources, GPU, tolerations).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds;

/// The Kubernetes layout of a run (used by `pipeline render` and `pipeline submit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Namespace of every object. Default: the kubeconfig context's namespace (as kubectl);
    /// `pipeline submit -n` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Image reference prefix: images are `<registry>/kubestyle-<component>:<tag>`.
    #[serde(default = "default_registry")]
    #[schemars(length(max = bounds::REGISTRY_LEN), regex(pattern = bounds::REGISTRY))]
    pub registry: String,
    /// Image tag. Default: this build's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = bounds::TAG))]
    pub tag: Option<String>,
    /// Service account the Jobs run as (see `manifests/`).
    #[serde(default = "default_service_account")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub service_account: String,
    /// Name of a Secret holding `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_REGION`); referenced, never inlined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub s3_secret: Option<String>,
    /// Name of a Secret whose key `salt` is the salt of `anonymize` (given to the upload stage
    /// only, as `KUBESTYLE_ANONYMIZE_SALT`). Default `kubestyle-anonymize`; used only when
    /// `anonymize` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub anonymize_secret: Option<String>,
    #[serde(default)]
    pub volume: ClaimSpec,
    /// CPU/memory requests and limits per stage (`download`, `package-model`, `stylize`,
    /// `upload`), e.g. `{stylize: {cpu: "4", memory: 8Gi}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Resources>,
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Retries of a failed pod per Job.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = bounds::BACKOFF_LIMIT.min, max = bounds::BACKOFF_LIMIT.max))]
    pub backoff_limit: i32,
    /// Deadline of each Job in seconds.
    #[serde(default = "default_deadline")]
    #[schemars(range(
        min = bounds::ACTIVE_DEADLINE_SECONDS.min,
        max = bounds::ACTIVE_DEADLINE_SECONDS.max
    ))]
    pub active_deadline_seconds: i64,
    /// How long finished Jobs are kept, in seconds.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = bounds::TTL_SECONDS.min, max = bounds::TTL_SECONDS.max))]
    pub ttl_seconds_after_finished: i32,
}

fn default_service_account() -> String {
    "kubestyle".into()
}
fn default_registry() -> String {
    "ghcr.io/kubestyle".into()
}
fn default_backoff() -> i32 {
    2
}
fn default_deadline() -> i64 {
    3600
}
fn default_ttl() -> i32 {
    86400
}

/// The volume every stage mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    /// Use this existing PersistentVolumeClaim instead of creating `<name>-volume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub claim: Option<String>,
    /// Size of a created claim.
    #[serde(default = "default_size")]
    #[schemars(length(max = bounds::QUANTITY_LEN), regex(pattern = bounds::QUANTITY))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub storage_class: Option<String>,
    /// Access mode of a created claim: `ReadWriteOnce` (one node at a time: stages run one
    /// after another, so they may land on different nodes of one zone), or `ReadWriteMany`
    /// (EFS, Filestore, Azure Files, NFS…), which parallel stylize shards on several nodes need.
    #[serde(default = "default_access")]
    pub access_mode: String,
    /// Where it is mounted in every container: absolute, normalised, and neither `/tmp` (the
    /// pods' own emptyDir) nor a system directory, nor above or inside one.
    #[serde(default = "default_mount")]
    #[schemars(length(max = bounds::MOUNT_PATH_LEN), regex(pattern = bounds::MOUNT_PATH))]
    pub mount_path: String,
}

fn default_size() -> String {
    "10Gi".into()
}
fn default_access() -> String {
    "ReadWriteOnce".into()
}
fn default_mount() -> String {
    "/data".into()
}

impl Default for ClaimSpec {
    fn default() -> Self {
        ClaimSpec {
            claim: None,
            size: default_size(),
            storage_class: None,
            access_mode: default_access(),
            mount_path: default_mount(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::QUANTITY_LEN), regex(pattern = bounds::QUANTITY))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::QUANTITY_LEN), regex(pattern = bounds::QUANTITY))]
    pub memory: Option<String>,
}

/// Where stylize runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Run stylize on GPU nodes (`nvidia.com/gpu` limit, the CUDA image).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// GPUs per stylize pod.
    #[serde(default = "one")]
    #[schemars(range(min = bounds::GPUS_PER_POD.min, max = bounds::GPUS_PER_POD.max))]
    pub per_pod: u32,
    /// Stylize pods: the work is split into this many shards (an Indexed Job).
    #[serde(default = "one")]
    #[schemars(range(min = bounds::SHARDS.min, max = bounds::SHARDS.max))]
    pub shards: u32,
    /// Shards running at once (the GPU budget).
    #[serde(default = "one")]
    #[schemars(range(min = bounds::GPU_PARALLELISM.min, max = bounds::GPU_PARALLELISM.max))]
    pub parallelism: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DNS_SUBDOMAIN_LEN), regex(pattern = bounds::DNS_SUBDOMAIN))]
    pub runtime_class_name: Option<String>,
    /// Run the parallel stylize shards on one node (required pod affinity to each other), so
    /// they can share a `ReadWriteOnce` claim.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_node: bool,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl Default for GpuSpec {
    fn default() -> Self {
        GpuSpec {
            enabled: true,
            per_pod: 1,
            shards: 1,
            parallelism: 1,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            runtime_class_name: None,
            same_node: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::LABEL_KEY_LEN), regex(pattern = bounds::LABEL_KEY))]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Exists|Equal)$"))]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::LABEL_VALUE_LEN), regex(pattern = bounds::LABEL_VALUE))]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(NoSchedule|PreferNoSchedule|NoExecute)$"))]
    pub effect: Option<String>,
}
