# Stand-in for tecnativa/docker-socket-proxy (not pullable here): HAProxy in front
# of /var/run/docker.sock with that image's allow-list, switched by the same
# environment variables and defaults (EVENTS, PING, VERSION on; everything else,
# POST included, off unless the compose file sets it).
ARG BASE
# hadolint ignore=DL3006
FROM ${BASE}
# AUTH and SECRETS are API sections switched off, not secrets.
# hadolint ignore=DL3064
ENV AUTH=0 BUILD=0 COMMIT=0 CONFIGS=0 CONTAINERS=0 DISTRIBUTION=0 EVENTS=1 EXEC=0 \
    GRPC=0 IMAGES=0 INFO=0 NETWORKS=0 NODES=0 PING=1 PLUGINS=0 POST=0 SECRETS=0 \
    SERVICES=0 SESSION=0 SWARM=0 SYSTEM=0 TASKS=0 VERSION=1 VOLUMES=0 \
    ALLOW_START=0 ALLOW_STOP=0 ALLOW_RESTARTS=0
COPY haproxy.cfg /etc/haproxy/socket-proxy.cfg
EXPOSE 2375
CMD ["/usr/sbin/haproxy", "-db", "-f", "/etc/haproxy/socket-proxy.cfg"]
