#!/usr/bin/env bash
# Local STAND-INS for the two base images the Dockerfile builds from, for machines that reach
# Debian's packages but no container registry (this project's machines; air-gapped builders).
# They are for building and testing kubestyle's images locally, never for publishing: each is
# labelled `dev.kubestyle.stand-in=true` and named under `kubestyle-stand-in/`, so nothing that
# is pushed can be taken for the real base. `scripts/build-images.sh --offline` calls this.
#
#   scripts/stand-in-images.sh          # makes both (skips one that exists; FORCE=1 remakes)
#
# Made:
#   kubestyle-stand-in/distroless-cc:nonroot  for gcr.io/distroless/cc-debian12:nonroot
#       the Debian 12 packages distroless cc is made of (libc6, libgcc-s1, libgomp1, libstdc++6,
#       libssl3, base-files, netbase, tzdata, ca-certificates), unpacked with dpkg-deb (no
#       maintainer scripts, no shell, no package manager), the Mozilla CA bundle of the
#       ca-certificates package (not this machine's bundle), `nonroot` 65532:65532, /tmp 1777.
#   kubestyle-stand-in/rust:1.95-bookworm     for rust:1.95-bookworm
#       debootstrap's minimal Debian 12 with build-essential, pkg-config, git, curl and
#       ca-certificates, and this machine's Rust toolchain (the one `rustc --version` runs,
#       which must be at least the workspace's rust-version) at /usr/local/rustup, with cargo's
#       home at /usr/local/cargo, as the official image has them.
# Needs: root, docker (or CONTAINER_ENGINE), debootstrap, dpkg-deb, apt-get (Debian 12 sources).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${CONTAINER_ENGINE:-$(command -v docker || command -v podman || true)}
[ -n "$engine" ] || { echo "stand-in-images: no docker or podman found (set CONTAINER_ENGINE)" >&2; exit 2; }
for tool in debootstrap dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || { echo "stand-in-images: $tool not found (apt-get install debootstrap)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "stand-in-images: run as root (debootstrap, file ownership)" >&2; exit 2; }

runtime_tag=kubestyle-stand-in/distroless-cc:nonroot
rust_tag=kubestyle-stand-in/rust:1.95-bookworm
label=dev.kubestyle.stand-in=true
work=$(mktemp -d -t kubestyle-stand-in.XXXXXX)
trap 'rm -rf "$work"' EXIT
log() { printf '== stand-in-images: %s\n' "$*" >&2; }
have() { [ -z "${FORCE:-}" ] && "$engine" image inspect "$1" >/dev/null 2>&1; }

# --- distroless cc --------------------------------------------------------------------------
if have "$runtime_tag"; then
  log "$runtime_tag exists"
else
  log "making $runtime_tag"
  t0=$(date +%s)
  root="$work/runtime"
  mkdir -p "$root" "$work/debs"
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root \
    libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 base-files netbase tzdata ca-certificates >/dev/null)
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # What ca-certificates' maintainer script would make: the bundle of the certificates it ships.
  mkdir -p "$root/etc/ssl/certs"
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
  # distroless's users and groups.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$root/etc/group"
  mkdir -p "$root/home/nonroot" "$root/tmp" "$root/root"
  chown 65532:65532 "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  # No documentation, no package database (there is no package manager).
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/share/info"
  tar -C "$root" -c . | "$engine" import \
    -c "LABEL $label" -c 'USER 65532' -c 'WORKDIR /home/nonroot' \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$runtime_tag" >/dev/null
  log "$runtime_tag made in $(($(date +%s) - t0)) s"
fi

# --- rust toolchain -------------------------------------------------------------------------
if have "$rust_tag"; then
  log "$rust_tag exists"
else
  log "making $rust_tag (debootstrap, ~2-4 min)"
  t0=$(date +%s)
  command -v rustc >/dev/null || { echo "stand-in-images: no rustc on PATH" >&2; exit 2; }
  sysroot=$(rustc --print sysroot)
  root="$work/rust"
  debootstrap --variant=minbase \
    --include=build-essential,pkg-config,git,curl,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; echo "stand-in-images: debootstrap failed" >&2; exit 1; }
  toolchain="$root/usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu"
  mkdir -p "$toolchain" "$root/usr/local/cargo/bin"
  # The toolchain without its documentation (1.4 GB).
  tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$toolchain" -x
  for b in "$toolchain"/bin/*; do ln -s "../../rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin/$(basename "$b")" "$root/usr/local/cargo/bin/"; done
  printf 'default_toolchain = "1.95.0-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nversion = "12"\n' >"$root/usr/local/rustup/settings.toml"
  rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/* "$root/usr/share/doc"
  chroot "$root" /usr/local/cargo/bin/cargo --version >/dev/null
  tar -C "$root" -c . | "$engine" import \
    -c "LABEL $label" \
    -c 'ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$rust_tag" >/dev/null
  log "$rust_tag made in $(($(date +%s) - t0)) s ($("$engine" run --rm "$rust_tag" rustc --version))"
fi
