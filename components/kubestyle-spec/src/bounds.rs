//! The bounds of every field of the spec, in one place: the JSON Schema's `minimum`, `maximum`,
//! `maxLength` and `pattern` (attributes on the types) and the validator read the same
//! constants, so the published schema and `pipeline validate` cannot disagree.
//! `tests.rs` holds each numeric bound against the generated schema and the validator.
//!
//! Also the byte bounds of the spec file itself: its size as read, and what YAML aliases may
//! expand it to.

/// An inclusive range of a numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i64,
    pub max: i64,
}

impl Range {
    pub const fn new(min: i64, max: i64) -> Range {
        Range { min, max }
    }

    pub fn contains(self, v: i64) -> bool {
        (self.min..=self.max).contains(&v)
    }
}

/// `kubernetes.gpu.shards`: the stylize pods of an Indexed Job (a plan, Job and manifest path
/// per shard).
pub const SHARDS: Range = Range::new(1, 1000);
/// `kubernetes.gpu.parallelism`: shards at once (also at most `shards`).
pub const GPU_PARALLELISM: Range = Range::new(1, 1000);
/// `kubernetes.gpu.per_pod`: GPUs per stylize pod.
pub const GPUS_PER_POD: Range = Range::new(1, 16);
/// `kubernetes.backoff_limit`: retries of a failed pod (Kubernetes refuses negatives).
pub const BACKOFF_LIMIT: Range = Range::new(0, 100);
/// `kubernetes.active_deadline_seconds`: up to a year (Kubernetes refuses 0 and negatives).
pub const ACTIVE_DEADLINE_SECONDS: Range = Range::new(1, 31_536_000);
/// `kubernetes.ttl_seconds_after_finished`: up to a year.
pub const TTL_SECONDS: Range = Range::new(0, 31_536_000);
/// `parallelism.transfers`: downloads and uploads in flight.
pub const TRANSFERS: Range = Range::new(1, 256);
/// `parallelism.threads`: forward-pass threads.
pub const THREADS: Range = Range::new(1, 1024);
/// `stylize.max_size`: longest edge in pixels (JPEG's own limit is 65,535).
pub const MAX_SIZE: Range = Range::new(4, 65_535);
/// `stylize.max_pixels`: 1 to 2^40 pixels.
pub const MAX_PIXELS: Range = Range::new(1, 1 << 40);

/// A Kubernetes quantity as the API server accepts it (a non-negative decimal with an SI or
/// binary suffix, or an exponent): `10Gi`, `500m`, `1.5`, `2e3`.
pub const QUANTITY: &str =
    r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";
/// Longest quantity text.
pub const QUANTITY_LEN: usize = 32;
/// An RFC 1123 DNS subdomain (Secrets, ServiceAccounts, claims, storage and runtime classes).
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub const DNS_SUBDOMAIN_LEN: usize = 253;
/// An image registry and repository prefix: `ghcr.io/kubestyle`, `localhost:5000/team/x`.
pub const REGISTRY: &str =
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$";
pub const REGISTRY_LEN: usize = 200;
/// An image tag.
pub const TAG: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";
/// A label value (node selectors, tolerations' values).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
pub const LABEL_VALUE_LEN: usize = 63;
/// A label or taint key: an optional DNS-subdomain prefix and `/`, then a name.
pub const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub const LABEL_KEY_LEN: usize = 317;
/// The volume's mount path: absolute and normalised (no `.`, `..` or empty parts).
pub const MOUNT_PATH: &str = r"^(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$";
pub const MOUNT_PATH_LEN: usize = 200;
/// Where the rendered pods mount their own emptyDir: the volume may not be it, hold it, or be
/// inside it; nor may it hide the image's system directories.
pub const RESERVED_MOUNTS: [&str; 10] = [
    "/tmp", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64",
];

/// Largest spec file read (`pipeline validate`, `run`, `render`, `submit`).
pub const MAX_SPEC_BYTES: u64 = 1 << 20;
/// Largest a spec may grow to once its YAML aliases are expanded (scalar bytes, counting each
/// node as 16 bytes more): an anchored string aliased many times is refused with exit 2 before
/// anything is allocated for it.
pub const MAX_EXPANDED_BYTES: usize = 4 << 20;

/// `regex-lite` of a pattern above (they are constants and compile).
pub(crate) fn matches(pattern: &str, s: &str) -> bool {
    regex_lite::Regex::new(pattern).is_ok_and(|r| r.is_match(s))
}
