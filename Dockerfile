# syntax=docker/dockerfile:1
#
# inletd container image.
#
#   docker build -t inletd .
#   docker run --rm -p 8080:8080 -p 9464:9464 --read-only inletd
#
# Two binaries are shipped: `inletd` (the entrypoint) and `aep-standin` (a local
# AEP stand-in for trying inletd offline: `--entrypoint aep-standin`).
# The runtime image is distroless (glibc + libgcc, no shell, no package manager),
# runs as uid/gid 65532 and needs no writable path: it works with a read-only
# root file system.
#
# For production builds pin both base images by digest (`image:tag@sha256:...`).

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# Strip symbols without editing Cargo.toml (smaller image; panics still print a
# message, only the symbol names in backtraces are lost).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

WORKDIR /src
COPY . .

# The cache mounts keep the crate registry and the target directory between
# builds (BuildKit); the binaries are copied out of the cached target dir in the
# same step because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin inletd --bin aep-standin \
 && install -D -m 0755 -t /out target/release/inletd target/release/aep-standin

# ---- runtime ----------------------------------------------------------------
# Same Debian release as the builder (bookworm), so the glibc the binaries were
# linked against is the one they run with.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="inletd" \
      org.opencontainers.image.description="Batching proxy for Adobe Experience Platform streaming ingestion" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/inletd /out/aep-standin /usr/local/bin/

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

# No curl in a distroless image: inletd checks itself. The URL must follow
# INLETD_ADMIN_LISTEN if you move the admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/inletd", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]

ENTRYPOINT ["/usr/local/bin/inletd"]
