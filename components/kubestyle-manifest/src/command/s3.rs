//! The S3 connection flags of the stages that talk to S3 (`download`, `upload`). The client
//! itself is built in `kubestyle-s3` (`S3ArgsExt::client`), which re-exports these.

use std::time::Duration;

use super::{Argv, enum_arg};
use crate::StageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Addressing {
    /// Path-style when a custom endpoint is set, virtual-hosted otherwise.
    Auto,
    /// `https://endpoint/bucket/key` (MinIO, moto, most on-premise servers).
    Path,
    /// `https://bucket.endpoint/key` (AWS).
    Virtual,
}

/// Default `--max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default `--connect-timeout`, seconds.
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 10.0;
/// Default `--read-timeout`, seconds. It also covers sending a request body (a single PUT is at
/// most the upload's multipart threshold, 64 MiB by default: about 0.5 MiB/s suffices).
pub const DEFAULT_READ_TIMEOUT: f64 = 120.0;
/// Default `--attempt-timeout`, seconds (0: none).
pub const DEFAULT_ATTEMPT_TIMEOUT: f64 = 0.0;
/// Default `--operation-timeout`, seconds.
pub const DEFAULT_OPERATION_TIMEOUT: f64 = 600.0;
/// Default `--max-listed-objects`: a million (a few hundred MiB of keys in memory).
pub const DEFAULT_MAX_LISTED_OBJECTS: u64 = 1_000_000;

/// S3 connection options shared by every stage's command line.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct S3Args {
    /// S3-compatible endpoint (MinIO, moto, Ceph...). Default: AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Bucket addressing style.
    #[arg(long, env = "KUBESTYLE_S3_ADDRESSING", value_enum, default_value_t = Addressing::Auto)]
    pub addressing: Addressing,
    /// Region (default: the AWS chain, then us-east-1).
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Attempts per request for transient errors (throttling, 5xx, timeouts), with backoff.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    pub max_attempts: u32,
    /// Seconds to establish a connection (TCP and TLS) to the endpoint. 0 disables.
    #[arg(long, env = "KUBESTYLE_S3_CONNECT_TIMEOUT", default_value_t = DEFAULT_CONNECT_TIMEOUT, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// Seconds a request may wait for the server: from sending the request (its body included)
    /// to the response headers, and, while a download streams, between two pieces of its body.
    /// 0 disables.
    #[arg(long, env = "KUBESTYLE_S3_READ_TIMEOUT", default_value_t = DEFAULT_READ_TIMEOUT, value_name = "SECONDS")]
    pub read_timeout: f64,
    /// Seconds one attempt of a request may take (connection and request body included), after
    /// which it is retried. 0 (the default) leaves the bound to --connect-timeout and
    /// --read-timeout.
    #[arg(
        long,
        env = "KUBESTYLE_S3_ATTEMPT_TIMEOUT",
        default_value_t = DEFAULT_ATTEMPT_TIMEOUT,
        value_name = "SECONDS"
    )]
    pub attempt_timeout: f64,
    /// Seconds one request may take over all its attempts and backoff; not retried. Downloads
    /// stream the body after this (the body is bounded by --read-timeout instead); uploads send it
    /// within it. 0 disables.
    #[arg(long, env = "KUBESTYLE_S3_OPERATION_TIMEOUT", default_value_t = DEFAULT_OPERATION_TIMEOUT, value_name = "SECONDS")]
    pub operation_timeout: f64,
    /// Most objects one listed prefix may hold: a listing that goes on past it (a huge prefix,
    /// or a server that never stops paging) is refused (exit 4) before it fills memory.
    #[arg(long, env = "KUBESTYLE_S3_MAX_LISTED_OBJECTS", default_value_t = DEFAULT_MAX_LISTED_OBJECTS, value_name = "N")]
    pub max_listed_objects: u64,
}

impl Default for S3Args {
    fn default() -> Self {
        S3Args {
            endpoint_url: None,
            addressing: Addressing::Auto,
            region: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_listed_objects: DEFAULT_MAX_LISTED_OBJECTS,
        }
    }
}

/// The timeouts of [`S3Args`], checked (`None`: disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub attempt: Option<Duration>,
    pub operation: Option<Duration>,
}

fn secs(v: f64, flag: &str) -> Result<Option<Duration>, StageError> {
    if !v.is_finite() || v < 0.0 {
        return Err(StageError::Usage(format!(
            "{flag} must be a number of seconds >= 0, got {v}"
        )));
    }
    Ok((v > 0.0).then(|| Duration::from_secs_f64(v)))
}

impl S3Args {
    pub fn path_style(&self) -> bool {
        match self.addressing {
            Addressing::Path => true,
            Addressing::Virtual => false,
            Addressing::Auto => self.endpoint_url.is_some(),
        }
    }

    /// `--read-timeout` as a duration (`None`: disabled).
    pub fn read_timeout(&self) -> Option<Duration> {
        secs(self.read_timeout, "--read-timeout").ok().flatten()
    }

    /// Every timeout, checked in flag order (the first bad one is the usage error).
    pub fn timeouts(&self) -> Result<Timeouts, StageError> {
        Ok(Timeouts {
            connect: secs(self.connect_timeout, "--connect-timeout")?,
            read: secs(self.read_timeout, "--read-timeout")?,
            attempt: secs(self.attempt_timeout, "--attempt-timeout")?,
            operation: secs(self.operation_timeout, "--operation-timeout")?,
        })
    }

    /// The flags (those not at their default; the rest a stage takes from its environment or
    /// its defaults).
    pub fn to_args(&self) -> Vec<String> {
        let S3Args {
            endpoint_url,
            addressing,
            region,
            max_attempts,
            connect_timeout,
            read_timeout,
            attempt_timeout,
            operation_timeout,
            max_listed_objects,
        } = self;
        let mut a = Argv::new();
        a.opt_some("--endpoint-url", endpoint_url);
        if *addressing != Addressing::Auto {
            a.opt("--addressing", enum_arg(addressing));
        }
        a.opt_some("--region", region);
        a.opt_unless("--max-attempts", max_attempts, &DEFAULT_MAX_ATTEMPTS);
        a.opt_unless(
            "--connect-timeout",
            connect_timeout,
            &DEFAULT_CONNECT_TIMEOUT,
        );
        a.opt_unless("--read-timeout", read_timeout, &DEFAULT_READ_TIMEOUT);
        a.opt_unless(
            "--attempt-timeout",
            attempt_timeout,
            &DEFAULT_ATTEMPT_TIMEOUT,
        );
        a.opt_unless(
            "--operation-timeout",
            operation_timeout,
            &DEFAULT_OPERATION_TIMEOUT,
        );
        a.opt_unless(
            "--max-listed-objects",
            max_listed_objects,
            &DEFAULT_MAX_LISTED_OBJECTS,
        );
        a.finish()
    }

    /// These options as a stage started with them sees them: the flags [`to_args`] writes, and
    /// for the rest the variables of this process's environment (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `KUBESTYLE_S3_*`), which a stage started from here inherits.
    ///
    /// [`to_args`]: S3Args::to_args
    pub fn with_env(&self) -> Result<S3Args, clap::Error> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            s3: S3Args,
        }
        <Only as clap::Parser>::try_parse_from(
            std::iter::once("s3".to_string()).chain(self.to_args()),
        )
        .map(|o| o.s3)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every field differs from its default.
    pub(crate) fn full() -> S3Args {
        S3Args {
            endpoint_url: Some("http://127.0.0.1:9000".into()),
            addressing: Addressing::Virtual,
            region: Some("eu-west-3".into()),
            max_attempts: 2,
            connect_timeout: 2.5,
            read_timeout: 0.0,
            attempt_timeout: 30.0,
            operation_timeout: 1e-3,
            max_listed_objects: 7,
        }
    }

    #[test]
    fn defaults_write_nothing_and_set_flags_come_back() {
        assert!(S3Args::default().to_args().is_empty());
        let s = full();
        assert_eq!(s.with_env().unwrap(), s);
    }

    #[test]
    fn timeouts_are_checked_in_flag_order() {
        let t = S3Args::default().timeouts().unwrap();
        assert_eq!(t.connect, Some(Duration::from_secs(10)));
        assert_eq!(t.attempt, None);
        let bad = S3Args {
            read_timeout: -1.0,
            operation_timeout: f64::NAN,
            ..S3Args::default()
        };
        assert_eq!(
            bad.timeouts().unwrap_err().to_string(),
            StageError::Usage("--read-timeout must be a number of seconds >= 0, got -1".into())
                .to_string()
        );
    }
}
