#!/usr/bin/env bash
# Build every kubestyle container image from the one root Dockerfile, with docker (BuildKit) or
# podman (buildah). Not available on the project's CI machines (no container engine there), so
# this runs on developers' machines and in the GitHub kind workflow.
#
#   scripts/build-images.sh [REGISTRY] [TAG]      (default: ghcr.io/kubestyle 0.1.0)
#   KUBESTYLE_IMAGES="download stylize" scripts/build-images.sh   # only some
#   KUBESTYLE_NO_CUDA=1 scripts/build-images.sh                   # skip the CUDA image (~6 GB)
#   CONTAINER_ENGINE=podman scripts/build-images.sh               # pick the engine
#
# The images share BuildKit cache mounts (cargo registry, target directory), so the dependencies
# are compiled once for all CPU images and once for the CUDA image. Images are linux/amd64 (the
# CUDA libraries are amd64 wheels; a build on another host emulates amd64).
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${1:-ghcr.io/kubestyle}
tag=${2:-0.1.0}
engine=${CONTAINER_ENGINE:-$(command -v docker || command -v podman || true)}
[ -n "$engine" ] || { echo "no docker or podman found (set CONTAINER_ENGINE)" >&2; exit 2; }
platform=linux/amd64

# image name (kubestyle-<name>), COMPONENT (workspace package = binary), Dockerfile target.
# tests/images.rs checks this table against the workspace and the Dockerfile.
table=(
  "download       download       runtime"
  "package-model  package-model  runtime"
  "stylize        stylize        runtime"
  "stylize-cuda   stylize        runtime-cuda"
  "upload         upload         runtime"
  "pipeline       pipeline       runtime"
)

case "$(basename "$engine")" in
  docker*) export DOCKER_BUILDKIT=1 ;;  # cache mounts need BuildKit (the default since 23.0)
esac

wanted=${KUBESTYLE_IMAGES:-download package-model stylize stylize-cuda upload pipeline}
for want in $wanted; do
  found=
  for row in "${table[@]}"; do
    read -r name component target <<<"$row"
    [ "$name" = "$want" ] || continue
    found=1
    if [ "$target" = runtime-cuda ] && [ -n "${KUBESTYLE_NO_CUDA:-}" ]; then continue; fi
    ref="$registry/kubestyle-$name:$tag"
    echo "== $ref (COMPONENT=$component, target $target, $platform)" >&2
    "$engine" build --platform "$platform" -f Dockerfile \
      --build-arg "COMPONENT=$component" --target "$target" -t "$ref" .
  done
  [ -n "$found" ] || { echo "unknown image $want (known: download package-model stylize stylize-cuda upload pipeline)" >&2; exit 2; }
done
