# syntax=docker/dockerfile:1
#
# inletd container image.
#
#   docker build -t inletd --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 8080:8080 -p 9464:9464 --read-only inletd
#
# Podman: `podman build --format docker ...` (the OCI format has no HEALTHCHECK).
# docs/operations.md ("The container image") has more; in CI, .ci/check-image
# builds this file (target runtime-prebuilt, see there) and starts the image.
#
# Two binaries are shipped: `inletd` (the entrypoint) and `aep-standin` (a local
# AEP stand-in for trying inletd offline: `--entrypoint aep-standin`).
# The runtime image is distroless (glibc + libgcc, no shell, no package manager),
# runs as uid/gid 65532 and needs no writable path: it works with a read-only
# root file system.
#
# For production builds pin both base images by digest (`image:tag@sha256:...`),
# e.g. `--build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...`.
#
# Build arguments (all optional):
#   RUST_IMAGE     the builder's base image (Rust toolchain, Debian bookworm)
#   RUNTIME_IMAGE  the runtime's base image (glibc + libgcc, user 65532)
#   VERSION        OCI label org.opencontainers.image.version, e.g. 0.1.0
#   REVISION       OCI label org.opencontainers.image.revision (the git commit),
#                  also built into `inletd --version` and inletd_build_info
#
# Stages: builder (compiles), runtime-base (the runtime image without its
# binaries: every setting users get), runtime-prebuilt (CI only, see there) and
# runtime, the last one, which `docker build` makes by default.

# ARGs before the first FROM are usable in every FROM line.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build ------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# Strip symbols without editing Cargo.toml (smaller image; panics still print a
# message, only the symbol names in backtraces are lost).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

WORKDIR /src
COPY . .

# The context has no .git (.dockerignore), so build.rs takes the revision that
# `inletd --version` and inletd_build_info report from here (else `unknown`).
ARG REVISION=
ENV BUILD_REVISION=${REVISION}

# The cache mounts keep the crate registry and the target directory between
# builds (BuildKit); the binaries are copied out of the cached target dir in the
# same step because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin inletd --bin aep-standin \
 && install -D -m 0755 -t /out target/release/inletd target/release/aep-standin

# ---- runtime-base -------------------------------------------------------------
# Everything of the runtime image but its binaries; the runtime stage at the end
# adds them. Same Debian release as the builder (bookworm), so the glibc the
# binaries were linked against is the one they run with.
FROM ${RUNTIME_IMAGE} AS runtime-base

ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="inletd" \
      org.opencontainers.image.description="Batching proxy for Adobe Experience Platform streaming ingestion" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Listen on all interfaces inside the container (the built-in defaults are
# 127.0.0.1, which a container port mapping cannot reach).
# Environment variables rank above the TOML file: to move these ports, override
# the variables (or use --listen / --admin-listen), not `listen` in inletd.toml.
ENV INLETD_LISTEN=0.0.0.0:8080 \
    INLETD_ADMIN_LISTEN=0.0.0.0:9464

# 8080: producers (POST /collection/...); 9464: /metrics, /healthz, /readyz.
EXPOSE 8080 9464

# Numeric ids, so Kubernetes' runAsNonRoot can verify them.
USER 65532:65532

# inletd runs as PID 1 and handles SIGTERM itself: it turns /readyz to 503,
# answers new requests 503, flushes what it holds and exits within
# shutdown_grace (default 20s). Give `docker stop -t` / the orchestrator's grace
# period more than that.
STOPSIGNAL SIGTERM

# No curl in a distroless image: inletd checks itself. Without --url it probes
# /healthz on admin_listen (INLETD_ADMIN_LISTEN, INLETD_CONFIG's file), so it
# follows a moved admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/inletd", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/inletd"]

# ---- runtime-prebuilt (CI only) -------------------------------------------------
# runtime-base with binaries built outside, by the builder's own cargo command,
# from the context's prebuilt/ folder. `.ci/check-image` builds this target (with
# RUNTIME_IMAGE set to a local base): its machines cannot run build steps in a
# container. Builders skip this stage for the default target. The repository's
# .dockerignore keeps target/ out of the normal context, so CI passes a context
# of its own.
FROM runtime-base AS runtime-prebuilt
COPY prebuilt/ /usr/local/bin/

# ---- runtime --------------------------------------------------------------------
# The image users build and run: runtime-base plus the builder's binaries.
FROM runtime-base AS runtime
COPY --from=builder /out/inletd /out/aep-standin /usr/local/bin/
