# Stand-in for eclipse-mosquitto:2 (not pullable here): Debian's Mosquitto 2.0 with
# the official image's layout (/mosquitto/config, /mosquitto/data) and its user
# (uid and gid 1883), started the same way (as root; Mosquitto drops to that user).
ARG BASE
# hadolint ignore=DL3006
FROM ${BASE}
RUN groupmod -g 1883 mosquitto && usermod -u 1883 -g 1883 mosquitto \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/certs \
    && chown mosquitto:mosquitto /mosquitto/data
VOLUME ["/mosquitto/data"]
EXPOSE 1883 8883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
