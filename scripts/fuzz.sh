#!/usr/bin/env bash
# Smoke-runs the cargo-fuzz targets under fuzz/ (manifest reader, .pth/safetensors/ONNX weight
# readers) for SECONDS each (default 10), on the stable toolchain (--sanitizer none: no
# nightly needed; panics, overflows and debug assertions are what it finds). Prints one
# "<target>: N executions, 0 crashes" line per target and exits non-zero on any crash; the
# crashing input is kept under fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run --sanitizer none <target> <file>`).
#
#   scripts/fuzz.sh          # 10 s per target
#   scripts/fuzz.sh 60       # longer
#   KUBESTYLE_FUZZ_TARGETS="manifest weights_onnx" scripts/fuzz.sh 5
#
# The seeds in fuzz/corpus/<target>/ are read, never written: what a run discovers goes to a
# scratch corpus that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
log() { printf '== %s\n' "$*" >&2; }

cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q " $cargo_fuzz_version\$"; then
  log "installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

# Its own target dir: instrumented builds share nothing with the normal ones.
target_dir=${KUBESTYLE_FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}}
target_dir=${target_dir:-$(pwd)/fuzz/target}
targets=${KUBESTYLE_FUZZ_TARGETS:-$(cargo fuzz list)}

# cargo fuzz has no --locked: check the lock file is current first.
cargo metadata --locked --offline --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null 2>&1 ||
  cargo metadata --locked --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null

log "building the fuzz targets (--sanitizer none) in $target_dir"
start=$(date +%s)
cargo fuzz build --sanitizer none --target-dir "$target_dir"
log "built in $(($(date +%s) - start)) s"

scratch=$(mktemp -d -t kubestyle-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in $targets; do
  mkdir -p "$scratch/corpus/$t" "$scratch/tmp" fuzz/artifacts/"$t"
  # Largest input tried: the biggest seed, or 64 KiB (the readers' interesting structure is
  # in the first bytes; bigger inputs only slow the run down).
  max_len=65536
  log "fuzzing $t for $seconds s"
  rc=0
  touch "$scratch/start.$t"
  # The target's own scratch files (the .pth target writes its input to a file) go to TMPDIR.
  TMPDIR="$scratch/tmp" cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" \
    "$scratch/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -max_len="$max_len" -timeout=10 \
    -print_final_stats=1 >"$scratch/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -n 1)
  crashes=$(find fuzz/artifacts/"$t" -type f -newer "$scratch/start.$t" | wc -l)
  if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi
  echo "$t: ${execs:-0} executions, $crashes crashes"
  if [ "$rc" != 0 ]; then
    failed=1
    tail -n 40 "$scratch/$t.log" >&2
    find fuzz/artifacts/"$t" -type f -newer "$scratch/start.$t" -printf '  crashing input: %p\n' >&2
  fi
done
exit "$failed"
