//! What a stage runs as, logged once at its start (from [`crate::manifest::open_volume`]): the
//! user and groups, whether the root filesystem is read-only, whether the volume is writable and
//! through which group, and whether S3 credentials came in through the environment (whether, never
//! what). In a pod this is the evidence, from inside the container, that the securityContext
//! (`runAsUser`, `readOnlyRootFilesystem`, `fsGroup`) and the Secret's reach are what the rendered
//! Job asked for; on a laptop it says which user wrote the files.

use std::fmt;
use std::path::Path;

/// The environment variables whose presence (never value) is reported, and how the line names
/// them (in words: a log line never spells a credential variable, so that a scan of published
/// logs for those names stays a clean test).
const CREDENTIAL_VARS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "access key id"),
    ("AWS_SECRET_ACCESS_KEY", "secret access key"),
    ("AWS_SESSION_TOKEN", "session token"),
];

/// One probe of the process and its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunsAs {
    /// Effective uid and gid (`/proc/self/status`); `None` where there is no procfs.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Supplementary groups (where `fsGroup` shows up in a pod).
    pub groups: Vec<u32>,
    /// The mount options of `/` say `ro`; `None` where mountinfo cannot be read.
    pub root_read_only: Option<bool>,
    /// The volume: owner, group, permission bits and whether this process may write to it.
    pub volume: Option<VolumeAccess>,
    /// Which of [`CREDENTIAL_VARS`] are set, in words (never a value).
    pub credentials_in_env: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeAccess {
    pub owner: u32,
    pub group: u32,
    pub mode: u32,
    pub writable: bool,
    /// How write access is granted: `"owner"`, `"group"`, `"other"`, or `"root"`.
    pub through: Option<&'static str>,
}

impl RunsAs {
    /// Probe this process, with `volume` as the stage's volume.
    pub fn probe(volume: &Path) -> RunsAs {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let (uid, gid, groups) = parse_status(&status);
        let root_read_only = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| root_read_only(&m));
        let volume = volume_access(volume, uid, gid, &groups);
        let credentials_in_env = CREDENTIAL_VARS
            .into_iter()
            .filter(|(v, _)| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
            .map(|(_, words)| words)
            .collect();
        RunsAs {
            uid,
            gid,
            groups,
            root_read_only,
            volume,
            credentials_in_env,
        }
    }
}

/// `Uid:`/`Gid:` (the effective id, the second of four) and `Groups:` of `/proc/self/status`.
pub fn parse_status(status: &str) -> (Option<u32>, Option<u32>, Vec<u32>) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
    };
    let effective = |name: &str| field(name).and_then(|f| f.get(1).and_then(|v| v.parse().ok()));
    let groups = field("Groups:")
        .map(|f| f.iter().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default();
    (effective("Uid:"), effective("Gid:"), groups)
}

/// Whether the mount at `/` (the last one listed wins, as it is the one on top) is read-only,
/// from `/proc/self/mountinfo`: field 5 is the mount point, field 6 its per-mount options.
pub fn root_read_only(mountinfo: &str) -> Option<bool> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 5 && f[4] == "/").then(|| f[5].split(',').any(|o| o == "ro"))
        })
        .next_back()
}

fn volume_access(
    volume: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: &[u32],
) -> Option<VolumeAccess> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(volume).ok()?;
    let (owner, group, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
    let through = match uid {
        Some(0) => Some("root"),
        Some(u) if u == owner && mode & 0o200 != 0 => Some("owner"),
        Some(u) if u == owner => None,
        _ if (gid == Some(group) || groups.contains(&group)) && mode & 0o020 != 0 => Some("group"),
        _ if mode & 0o002 != 0 => Some("other"),
        _ => None,
    };
    Some(VolumeAccess {
        owner,
        group,
        mode,
        writable: through.is_some(),
        through,
    })
}

impl fmt::Display for RunsAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        write!(f, "running as uid {} gid {}", id(self.uid), id(self.gid))?;
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        write!(f, " groups [{}]", groups.join(","))?;
        match self.root_read_only {
            Some(true) => write!(f, "; root filesystem read-only")?,
            Some(false) => write!(f, "; root filesystem writable")?,
            None => write!(f, "; root filesystem unknown")?,
        }
        match &self.volume {
            Some(v) => {
                write!(
                    f,
                    "; volume owner {} group {} mode {:04o} ",
                    v.owner, v.group, v.mode
                )?;
                match v.through {
                    Some(t) => write!(f, "writable (as {t})")?,
                    None => write!(f, "not writable")?,
                }
            }
            None => write!(f, "; volume unreadable")?,
        }
        if self.credentials_in_env.is_empty() {
            write!(f, "; S3 credentials in environment: none")
        } else {
            write!(
                f,
                "; S3 credentials in environment: {}",
                self.credentials_in_env.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tdownload\nUmask:\t0022\nState:\tR (running)\nUid:\t1000\t65532\t65532\t65532\nGid:\t1000\t65532\t65532\t65532\nFDSize:\t64\nGroups:\t65532 4242 \n";

    #[test]
    fn the_effective_ids_and_groups_come_from_proc_status() {
        assert_eq!(
            parse_status(STATUS),
            (Some(65532), Some(65532), vec![65532, 4242])
        );
        assert_eq!(parse_status(""), (None, None, vec![]));
    }

    #[test]
    fn the_root_mount_on_top_decides_read_only() {
        let mi = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  900 22 0:50 / / ro,relatime master:1 - overlay overlay rw,lowerdir=x\n\
                  901 900 0:51 / /data rw,relatime - ext4 /dev/vdb rw\n";
        assert_eq!(root_read_only(mi), Some(true));
        let rw = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda ro\n";
        assert_eq!(
            root_read_only(rw),
            Some(false),
            "super options do not count"
        );
        assert_eq!(
            root_read_only("901 900 0:51 / /data ro - ext4 x ro\n"),
            None
        );
    }

    #[test]
    fn the_line_says_which_credentials_in_words_never_values_nor_variable_names() {
        let r = RunsAs {
            uid: Some(65532),
            gid: Some(65532),
            groups: vec![65532],
            root_read_only: Some(true),
            volume: Some(VolumeAccess {
                owner: 0,
                group: 65532,
                mode: 0o2775,
                writable: true,
                through: Some("group"),
            }),
            credentials_in_env: vec!["access key id", "secret access key"],
        };
        assert_eq!(
            r.to_string(),
            "running as uid 65532 gid 65532 groups [65532]; root filesystem read-only; volume owner 0 group 65532 mode 2775 writable (as group); S3 credentials in environment: access key id, secret access key"
        );
        assert!(!r.to_string().contains("AWS_"));
    }

    #[test]
    fn a_probe_of_this_process_agrees_with_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = RunsAs::probe(dir.path());
        let v = r.volume.clone().expect("a temp dir has metadata");
        // The test's own temp dir: created by this user, so writable (as owner, or as root).
        assert!(v.writable, "{r}");
        assert!(matches!(v.through, Some("owner") | Some("root")), "{r}");
        assert_eq!(
            r.root_read_only,
            Some(false),
            "tests run on a writable root: {r}"
        );
        let gone = RunsAs::probe(&dir.path().join("missing"));
        assert_eq!(gone.volume, None);
    }
}
