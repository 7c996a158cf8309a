# Every kubestyle image, built from the repository root (scripts/build-images.sh builds them all):
#
#   docker build --platform linux/amd64 --build-arg COMPONENT=download --target runtime \
#     -t ghcr.io/kubestyle/kubestyle-download:0.1.0 .
#   docker build --platform linux/amd64 --build-arg COMPONENT=stylize --target runtime-cuda \
#     -t ghcr.io/kubestyle/kubestyle-stylize-cuda:0.1.0 .
#
# COMPONENT is a workspace package with a binary of the same name: download, package-model,
# stylize, upload or pipeline. Targets:
#   runtime       the binary on distroless cc-debian12:nonroot (glibc, libstdc++, CA certificates)
#   runtime-cuda  stylize built with the `tch` feature on the PyPI torch 2.9.0 CUDA 12.8 libraries,
#                 linked with libtorch_cuda.so (kubestyle-build), on the same distroless base
# Both run as 65532:65532. The binary is /usr/local/bin/<COMPONENT> (the rendered Jobs run it by
# name); the entrypoint /usr/local/bin/kubestyle-entrypoint is a symlink to it (ENTRYPOINT cannot
# expand a build argument).
#
# BuildKit (DOCKER_BUILDKIT=1, podman's buildah) with the engine's built-in Dockerfile frontend:
# there is no `# syntax=` line, which would pull a frontend image and so fail where no registry
# is reachable. BuildKit cache mounts keep cargo's registry and the target directory between
# builds, so the images share one compilation of the dependencies (burn is compiled once, not
# once per image). A cache mount is not part of the image: the binary is copied out of it in the
# same step.
#
# Behind a TLS-inspecting proxy (a corporate network; this project's machines), give the proxy's
# CA bundle as the build secret `extra-ca` (`--secret id=extra-ca,src=FILE`, what
# `scripts/build-images.sh --extra-ca FILE` does): the steps that download (cargo, pip) trust it
# besides the toolchain image's own CAs. It is a secret mount, so it is in no layer and in no
# image.
#
# The base images are build arguments, so that a machine without a registry can build from local
# stand-ins (`scripts/build-images.sh --offline`, scripts/stand-in-images.sh) without retagging
# anything as the real images.
# tests/images.rs checks this file against the workspace (toolchain >= rust-version, every COPY
# source present and not excluded by .dockerignore, package and binary names, entrypoints).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# The toolchain: at least the workspace's rust-version (the highest of the locked dependencies).
FROM ${RUST_IMAGE} AS toolchain
WORKDIR /src
# `with-extra-ca CMD…` runs CMD trusting the `extra-ca` build secret too, when one is given (the
# bundle is joined in a tmpfs mounted at /run/kubestyle-ca by the RUN that calls it).
RUN printf '%s\n' '#!/bin/sh' 'set -e' \
      'if [ -s /run/secrets/extra-ca ]; then' \
      '  cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra-ca >/run/kubestyle-ca/bundle.pem' \
      '  export CARGO_HTTP_CAINFO=/run/kubestyle-ca/bundle.pem SSL_CERT_FILE=/run/kubestyle-ca/bundle.pem PIP_CERT=/run/kubestyle-ca/bundle.pem' \
      'fi' 'exec "$@"' >/usr/local/bin/with-extra-ca \
 && chmod 755 /usr/local/bin/with-extra-ca

# What cargo needs: the workspace manifest, the lock file and every member (cargo reads the whole
# workspace even to build one package).
FROM scratch AS sources
COPY Cargo.toml Cargo.lock /src/
COPY components /src/components
COPY pipeline /src/pipeline
COPY tests /src/tests

FROM toolchain AS build
ARG COMPONENT
COPY --from=sources /src /src
RUN --mount=type=cache,id=kubestyle-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=kubestyle-target,target=/src/target,sharing=locked \
    --mount=type=secret,id=extra-ca --mount=type=tmpfs,target=/run/kubestyle-ca \
    test -n "${COMPONENT}" || { echo "--build-arg COMPONENT=<package> is required" >&2; exit 2; }; \
    with-extra-ca cargo build --release --locked -p "${COMPONENT}" \
 && mkdir -p /out \
 && cp "target/release/${COMPONENT}" /out/ \
 && ln -s "${COMPONENT}" /out/kubestyle-entrypoint

# libtorch from the PyPI torch wheel (the version scripts/requirements-models.txt pins, the one
# burn-tch 0.22 needs), in a venv at a fixed path: the binary's rpath points into it.
FROM toolchain AS toolchain-cuda
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/requirements-models.txt /tmp/requirements-models.txt
RUN --mount=type=cache,id=kubestyle-pip,target=/root/.cache/pip \
    --mount=type=secret,id=extra-ca --mount=type=tmpfs,target=/run/kubestyle-ca \
    python3 -m venv /opt/venv \
 && with-extra-ca /opt/venv/bin/pip install "$(grep -E '^torch==' /tmp/requirements-models.txt)"
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv LIBTORCH_USE_PYTORCH=1

FROM toolchain-cuda AS build-cuda
ARG COMPONENT=stylize
COPY --from=sources /src /src
# The runtime keeps only what the binary loads: torch/lib and the nvidia/*/lib directories
# (libtorch_cuda.so finds them through its own $ORIGIN/../../nvidia/... rpath), at the path they
# have here, and zlib, which cuDNN's sub-libraries (loaded at the first convolution) need and
# distroless cc lacks. No Python, headers, static libraries, triton or libtorch_python.
RUN --mount=type=cache,id=kubestyle-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=kubestyle-target-cuda,target=/src/target,sharing=locked \
    --mount=type=secret,id=extra-ca --mount=type=tmpfs,target=/run/kubestyle-ca \
    with-extra-ca cargo build --release --locked -p "${COMPONENT}" --features "${COMPONENT}/tch" \
 && mkdir -p /out \
 && cp "target/release/${COMPONENT}" /out/ \
 && ln -s "${COMPONENT}" /out/kubestyle-entrypoint \
 && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && mkdir -p "/runtime$site/torch" \
 && cp -a "$site/torch/lib" "/runtime$site/torch/" \
 && rm -f "/runtime$site/torch/lib/libtorch_python.so" \
 && for d in "$site"/nvidia/*/lib; do mkdir -p "/runtime$(dirname "$d")" && cp -a "$d" "/runtime$d"; done \
 && find /runtime -name '*.a' -delete \
 && mkdir -p /runtime/usr/lib/x86_64-linux-gnu \
 && cp -L /usr/lib/x86_64-linux-gnu/libz.so.1 /runtime/usr/lib/x86_64-linux-gnu/

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubestyle-entrypoint"]

# The NVIDIA driver (libcuda.so.1) comes from the node: the NVIDIA container toolkit mounts it
# when the pod has an nvidia.com/gpu limit.
FROM ${RUNTIME_IMAGE} AS runtime-cuda
COPY --from=build-cuda /runtime/ /
COPY --from=build-cuda /out/ /usr/local/bin/
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubestyle-entrypoint"]
