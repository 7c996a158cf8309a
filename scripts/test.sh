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

# --- Python tools, assets, moto, test environment -------------------------------------------
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

# --- Fixtures ---------------------------------------------------------------------------------
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

# --- Rust -------------------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo build (the end-to-end tests run the binaries)"
cargo build --workspace --locked
log "cargo test (default build: burn-flex)"
cargo test --workspace --locked --no-fail-fast "$@"

# The README's benchmark (scripts/bench.py: kubestyle beside PyTorch and onnxruntime), tiny, so
# that a broken benchmark fails the suite: not a timing, only that every implementation runs.
log "benchmark smoke run: scripts/bench.py at 64², one round, one rep, whole job and roofline"
cargo build --locked -p package-model -p stylize --bins --example bench_forward
KUBESTYLE_BENCH_PROFILE=debug "$venv/bin/python" scripts/bench.py --sizes 64 --rounds 1 --reps 1 \
  --job-size 64 --roofline-size 64
# The same for the serving benchmark (stylize serve against Flask + PyTorch, then an overload).
log "serving benchmark smoke run: scripts/bench_serve.py at 64², 1 client, 1 s"
KUBESTYLE_BENCH_PROFILE=debug "$venv/bin/python" scripts/bench_serve.py --sizes 64 --clients 1 \
  --seconds 1 --overload 4 --threads 2

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
  cargo test --locked -p pipeline --test cluster -- --ignored --skip real_node_ --test-threads=1
elif [ -n "${KUBESTYLE_TEST_KUBECONFIG:-}" ] && [ -n "${KUBESTYLE_TEST_POD_S3_ENDPOINT:-}" ]; then
  log "cargo test: the real-cluster tier against $KUBESTYLE_TEST_KUBECONFIG"
  cargo test --locked -p pipeline --test cluster -- --ignored --skip real_node_ --test-threads=1
else
  log "real-cluster tier skipped (set KUBESTYLE_K8S_BIN, or KUBESTYLE_TEST_KUBECONFIG with KUBESTYLE_TEST_POD_S3_ENDPOINT)"
fi

# --- Fuzz smoke run ---------------------------------------------------------------------------
# The cargo-fuzz targets (manifest reader, weight readers) for a few seconds each, on stable
# (--sanitizer none); a crash fails the run and leaves its input under fuzz/artifacts/.
log "fuzz smoke run: ${KUBESTYLE_FUZZ_SECONDS:-5} s per target"
scripts/fuzz.sh "${KUBESTYLE_FUZZ_SECONDS:-5}"
