#!/usr/bin/env bash
# Build every kubestyle container image from the one root Dockerfile, with docker (BuildKit) or
# podman (buildah). The container tier (tests/containers/run.sh), the kind workflow and the
# release workflow all build with this script.
#
#   scripts/build-images.sh [OPTIONS] [REGISTRY] [TAG]
#       REGISTRY  default ghcr.io/kubestyle (images are REGISTRY/kubestyle-<name>:TAG)
#       TAG       default: the version the binaries report (the workspace version, 0.1.0)
#   --offline         build FROM local stand-ins of the base images (scripts/stand-in-images.sh
#                     makes them first): for machines that reach package registries but no
#                     container registry. Such images are for local tests only: --push refuses.
#   --extra-ca FILE   trust this CA bundle too while building (cargo, pip), as a BuildKit secret:
#                     for TLS-inspecting proxies; never in an image (env KUBESTYLE_EXTRA_CA)
#   --push            push each image after it is built (`docker login` to REGISTRY first)
#   KUBESTYLE_IMAGES="download stylize" scripts/build-images.sh   # only some
#   KUBESTYLE_NO_CUDA=1 scripts/build-images.sh                   # skip the CUDA image (~6 GB)
#   CONTAINER_ENGINE=podman scripts/build-images.sh               # pick the engine
#
# The images share BuildKit cache mounts (cargo registry, target directory), so the dependencies
# are compiled once for all CPU images and once for the CUDA image. Images are linux/amd64 (the
# CUDA libraries are amd64 wheels; a build on another host emulates amd64). Each image's build
# time and size are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

offline= push= extra_ca=${KUBESTYLE_EXTRA_CA:-}
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=1 ;;
    --push) push=1 ;;
    --extra-ca) extra_ca=${2:?--extra-ca FILE}; shift ;;
    --extra-ca=*) extra_ca=${1#--extra-ca=} ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-images: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) positional+=("$1") ;;
  esac
  shift
done
registry=${positional[0]:-ghcr.io/kubestyle}
# The version the binaries report (`download --version`): the workspace package version.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
tag=${positional[1]:-$version}
[ -n "$tag" ] || { echo "build-images: no tag and no workspace version" >&2; exit 2; }
if [ -n "$offline" ] && [ -n "$push" ]; then
  echo "build-images: --offline images are built on stand-in bases and are never pushed" >&2; exit 2
fi
if [ -n "$extra_ca" ] && [ ! -s "$extra_ca" ]; then
  echo "build-images: --extra-ca $extra_ca: no such file (or empty)" >&2; exit 2
fi

# The engine: CONTAINER_ENGINE, else a docker whose BuildKit builds work (a client from Docker 23
# on needs the buildx plugin for that; older clients build with DOCKER_BUILDKIT=1 themselves),
# else podman.
buildkit_ok() {
  "$1" buildx version >/dev/null 2>&1 && return 0
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
  [ -n "$v" ] && [ "$v" -lt 23 ]
}
engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  for c in $(type -ap docker) /usr/bin/docker; do
    if [ -x "$c" ] && buildkit_ok "$c"; then engine=$c; break; fi
  done
  [ -n "$engine" ] || engine=$(command -v podman || true)
fi
[ -n "$engine" ] || { echo "build-images: no docker with BuildKit (buildx) and no podman found (set CONTAINER_ENGINE)" >&2; exit 2; }
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

common=(--platform "$platform" -f Dockerfile)
if [ -n "$offline" ]; then
  CONTAINER_ENGINE=$engine scripts/stand-in-images.sh
  common+=(--build-arg RUST_IMAGE=kubestyle-stand-in/rust:1.95-bookworm
           --build-arg RUNTIME_IMAGE=kubestyle-stand-in/distroless-cc:nonroot)
fi
[ -z "$extra_ca" ] || common+=(--secret "id=extra-ca,src=$extra_ca")

wanted=${KUBESTYLE_IMAGES:-download package-model stylize stylize-cuda upload pipeline}
summary=()
for want in $wanted; do
  found=
  for row in "${table[@]}"; do
    read -r name component target <<<"$row"
    [ "$name" = "$want" ] || continue
    found=1
    if [ "$target" = runtime-cuda ] && [ -n "${KUBESTYLE_NO_CUDA:-}" ]; then continue; fi
    ref="$registry/kubestyle-$name:$tag"
    echo "== $ref (COMPONENT=$component, target $target, $platform${offline:+, stand-in bases})" >&2
    t0=$(date +%s)
    "$engine" build "${common[@]}" --build-arg "COMPONENT=$component" --target "$target" -t "$ref" .
    size=$("$engine" image inspect --format '{{.Size}}' "$ref")
    summary+=("$(printf "%-48s %6d s %8.1f MB" "$ref" $(($(date +%s) - t0)) "$(awk "BEGIN { print $size / 1e6 }")")")
    if [ -n "$push" ]; then
      "$engine" push "$ref"
    fi
  done
  [ -n "$found" ] || { echo "unknown image $want (known: download package-model stylize stylize-cuda upload pipeline)" >&2; exit 2; }
done
printf '== built (build time, size):\n' >&2
printf '   %s\n' "${summary[@]}" >&2
