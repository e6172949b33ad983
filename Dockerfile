# borgmatic-mqtt on the official borgmatic image (Alpine): the binary is built for
# musl in an Alpine Rust stage, then copied next to borgmatic and borg.
#
# Two build arguments exist for the stack test (tests/stack.rs), which cannot pull
# images: RUNTIME_BASE replaces the `runtime-base` stage (borgmatic's image plus
# tini, FUSE and ssh) and WORKER_BINARY the `build` stage (an image holding
# /src/target/release/borgmatic-mqtt). Users leave both alone. With BuildKit,
# stages that the chosen arguments do not use are never built.
ARG RUNTIME_BASE=runtime-base
ARG WORKER_BINARY=build

FROM rust:1.88-alpine3.21 AS build
# The image tag pins the Alpine release, and with it these packages' versions.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
    && strip target/release/borgmatic-mqtt

# borgmatic >= 2.1 (structured progress). The official image's tag follows
# borgmatic's release.
FROM ghcr.io/borgmatic-collective/borgmatic:2.1.10 AS runtime-base
# tini is PID 1: it forwards SIGTERM to the worker, which then publishes its final
# job states and "offline" before it exits. The base tag pins the Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache tini fuse3 openssh-client

# hadolint ignore=DL3006
FROM ${WORKER_BINARY} AS binary

# hadolint ignore=DL3006
FROM ${RUNTIME_BASE}
COPY --from=binary /src/target/release/borgmatic-mqtt /usr/local/bin/borgmatic-mqtt
COPY docker/entrypoint.sh /usr/local/bin/borgmatic-mqtt-entrypoint
# The root filesystem is read-only in docker-compose.yml: everything borg and
# borgmatic write lives in the volumes named here (keys and nonces, caches, check
# times), and their temporary files go to the /tmp tmpfs.
ENV BMQTT_HTTP__LISTEN=0.0.0.0:8484 \
    BMQTT_STATE_DIR=/var/lib/borgmatic-mqtt \
    BMQTT_BORGMATIC__CONFIG_DIR=/etc/borgmatic.d \
    BMQTT_BORGMATIC__RESTORE_ROOT=/restore \
    BMQTT_BORGMATIC__MOUNT_ROOT=/mnt/borgmatic \
    BORG_CONFIG_DIR=/var/lib/borg/config \
    BORG_CACHE_DIR=/var/lib/borg/cache \
    XDG_STATE_HOME=/var/lib/borgmatic \
    XDG_CACHE_HOME=/var/cache/borgmatic \
    TMPDIR=/tmp
VOLUME ["/var/lib/borgmatic-mqtt", "/var/lib/borg", "/var/lib/borgmatic"]
EXPOSE 8484
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8484/healthz"]
ENTRYPOINT ["/sbin/tini", "--", "/usr/local/bin/borgmatic-mqtt-entrypoint"]
CMD ["run"]
