# syntax=docker/dockerfile:1
# MiniDB container image: `make docker` builds it; `make check-ops` lints it with hadolint.
#
#   docker build -t ghcr.io/minidb/minidb:0.1.0 .
#   docker run -p 6866:6866 -v minidb-data:/data --memory 256m ghcr.io/minidb/minidb:0.1.0
#
# Stage 1 compiles with BuildKit cache mounts, so the cargo registry, git checkouts and target/
# survive between builds: a source change recompiles MiniDB only, not its dependencies.
# RUST_VERSION=1 follows the newest stable 1.x; pass --build-arg RUST_VERSION=1.85 (the crate's
# rust-version) for a fully pinned toolchain.
ARG RUST_VERSION=1
ARG DEBIAN_VERSION=12.8-slim

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    locked=(); if [[ -f Cargo.lock ]]; then locked=(--locked); fi; \
    cargo build --release "${locked[@]}" --bin minidb \
    && install -D -m 0755 target/release/minidb /out/minidb

# Stage 2: a small Debian runtime (glibc, for jemalloc) with no compiler and no package manager
# run. The CA bundle comes from the builder, for OTLP export over TLS.
FROM debian:${DEBIAN_VERSION} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="MiniDB" \
      org.opencontainers.image.description="A document database on its own crash-safe, memory-bounded LSM engine" \
      org.opencontainers.image.source="https://github.com/minidb/minidb" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# Non-root user and group 1000 (the k8s securityContext and docker-compose use the same ids);
# /data belongs to it so that a fresh named volume is writable.
RUN groupadd --gid 1000 minidb \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /data --shell /usr/sbin/nologin minidb \
    && mkdir -p /data \
    && chown 1000:1000 /data \
    && chmod 0750 /data
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/minidb /usr/local/bin/minidb

# MiniDBGo-compatible settings, with their defaults.
ENV DB_PATH=/data \
    FLUSH_SIZE=10000 \
    MAX_MEM_MB=16
# MINIDB_MEMORY__LIMIT_MB (the process memory limit that backpressure and /metrics use) is left
# unset on purpose: an image-wide value would be wrong for every container run with a different
# memory limit. Set it at run time (`docker run -e MINIDB_MEMORY__LIMIT_MB=256 --memory 256m`);
# on Kubernetes the StatefulSet passes the container's limit as MINIDB_MEMORY__CONTAINER_LIMIT_BYTES
# through the downward API.

USER 1000:1000
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6866
# The server drains in-flight requests on SIGTERM (Kubernetes gives it 60s).
STOPSIGNAL SIGTERM
# `minidb healthcheck` GETs http://127.0.0.1:6866/api/health; no shell or curl in the image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/minidb", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/minidb"]
CMD ["serve", "--listen", "0.0.0.0:6866"]
