#!/usr/bin/env bash
# Build every kubestyle container image (needs docker or podman; not available on the project's
# CI machines, so this runs on developers' machines and in the GitHub workflow).
#
#   scripts/build-images.sh [REGISTRY] [TAG]      (default: ghcr.io/kubestyle 0.1.0)
#   KUBESTYLE_IMAGES="download stylize" scripts/build-images.sh   # only some
#   KUBESTYLE_NO_CUDA=1 scripts/build-images.sh                   # skip the CUDA image (~10 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:-ghcr.io/kubestyle}
tag=${2:-0.1.0}
engine=${CONTAINER_ENGINE:-$(command -v docker || command -v podman || true)}
[ -n "$engine" ] || { echo "no docker or podman found" >&2; exit 2; }
declare -A file=(
  [download]=components/download/Dockerfile
  [package-model]=components/package-model/Dockerfile
  [stylize]=components/stylize/Dockerfile
  [stylize-cuda]=components/stylize/Dockerfile.cuda
  [upload]=components/upload/Dockerfile
  [pipeline]=pipeline/Dockerfile
)
images=${KUBESTYLE_IMAGES:-download package-model stylize stylize-cuda upload pipeline}
for name in $images; do
  if [ "$name" = stylize-cuda ] && [ -n "${KUBESTYLE_NO_CUDA:-}" ]; then continue; fi
  ref="$registry/kubestyle-$name:$tag"
  echo "== $ref" >&2
  "$engine" build -f "${file[$name]}" -t "$ref" .
done
