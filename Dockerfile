# borgmatic-mqtt on the official borgmatic image (Alpine): the binary is built for
# musl in an Alpine Rust stage, then copied next to borgmatic and borg.

FROM rust:1.88-alpine3.21 AS build
# The image tag pins the Alpine release, and with it these packages' versions.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
    && strip target/release/borgmatic-mqtt

FROM ghcr.io/borgmatic-collective/borgmatic:2.0.7
# tini is PID 1: it forwards SIGTERM to the worker, which then publishes its final
# job states and "offline" before it exits. The base tag pins the Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache tini fuse3 openssh-client
COPY --from=build /src/target/release/borgmatic-mqtt /usr/local/bin/borgmatic-mqtt
COPY docker/entrypoint.sh /usr/local/bin/borgmatic-mqtt-entrypoint
ENV BMQTT_HTTP__LISTEN=0.0.0.0:8484 \
    BMQTT_STATE_DIR=/var/lib/borgmatic-mqtt \
    BMQTT_BORGMATIC__CONFIG_DIR=/etc/borgmatic.d \
    BMQTT_BORGMATIC__RESTORE_ROOT=/restore \
    BMQTT_BORGMATIC__MOUNT_ROOT=/mnt/borgmatic
VOLUME ["/var/lib/borgmatic-mqtt"]
EXPOSE 8484
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8484/healthz"]
ENTRYPOINT ["/sbin/tini", "--", "/usr/local/bin/borgmatic-mqtt-entrypoint"]
CMD ["run"]
