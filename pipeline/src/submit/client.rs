//! Which cluster, and a client for it that never panics: kubeconfig (`KUBECONFIG`,
//! `~/.kube/config`, `--context`) or the in-cluster service account, a rustls crypto provider
//! installed explicitly, a connect timeout, and a first request (`/version`) under a deadline so
//! an API server that refuses, hangs or presents the wrong certificate is reported at once with
//! its address (exit 5) instead of a panic or an endless wait.

use std::time::Duration;

use kube::Client;
use kubestyle_manifest::StageError;

use super::kube_err;

/// Which cluster: kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster service account.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace (default: the spec's `kubernetes.namespace`, else the kubeconfig context's
    /// namespace, else `default` — like kubectl).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Seconds to wait for the API server to connect and answer a request.
    #[arg(
        long,
        default_value_t = 30,
        value_name = "SECONDS",
        env = "KUBESTYLE_REQUEST_TIMEOUT"
    )]
    pub request_timeout: u64,
}

/// A connected client and what the configuration says about the namespace.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The kubeconfig context's namespace (or the service account's), `default` when unset.
    pub context_namespace: String,
    /// The API server's address, for messages.
    pub server: String,
    /// The per-request deadline.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("context_namespace", &self.context_namespace)
            .finish_non_exhaustive()
    }
}

/// rustls is linked with two crypto providers (ring through kube, aws-lc-rs through the AWS
/// SDK), so it cannot pick one by itself and kube-client does not install one: without this,
/// building any TLS client panics. Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ClusterArgs {
    /// The deadline for one request.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout.max(1))
    }

    /// Load the configuration, build the client and check that the API server answers.
    /// No configuration at all is a usage error naming what was looked for (2); a server that
    /// refuses, hangs or fails TLS is a storage error naming it (5).
    pub async fn connect(&self) -> Result<Cluster, StageError> {
        install_crypto_provider();
        let mut config = match &self.context {
            Some(ctx) => {
                let opts = kube::config::KubeConfigOptions {
                    context: Some(ctx.clone()),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&opts).await.map_err(|e| {
                    StageError::Usage(format!("kubeconfig context {ctx:?}: {e}"))
                })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                StageError::Usage(format!(
                    "no usable Kubernetes configuration: no kubeconfig (KUBECONFIG or ~/.kube/config) and not running in a cluster ({e})"
                ))
            })?,
        };
        let timeout = self.timeout();
        config.connect_timeout = Some(timeout);
        let server = config.cluster_url.to_string();
        let context_namespace = config.default_namespace.clone();
        let client = Client::try_from(config)
            .map_err(|e| StageError::Usage(format!("Kubernetes client for {server}: {e}")))?;
        match tokio::time::timeout(timeout, client.apiserver_version()).await {
            Err(_) => Err(StageError::Storage(format!(
                "the API server at {server} did not answer within {}s (--request-timeout)",
                timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(kube_err(&format!("API server at {server}"), e)),
            Ok(Ok(v)) => {
                tracing::debug!("API server {server}: Kubernetes {}", v.git_version);
                Ok(Cluster {
                    client,
                    context_namespace,
                    server,
                    request_timeout: timeout,
                })
            }
        }
    }
}

impl Cluster {
    /// The namespace in force: the flag, else the spec's, else the context's (kubectl's order).
    pub fn namespace(&self, flag: Option<&str>, spec: Option<&str>) -> String {
        flag.or(spec)
            .map(str::to_string)
            .unwrap_or_else(|| self.context_namespace.clone())
    }
}
