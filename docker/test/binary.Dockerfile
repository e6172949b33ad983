# The stack test's stand-in for the Dockerfile's `build` stage: the worker built on
# the host (glibc; the test's runtime base is Debian bookworm like the host), at the
# path that stage leaves it.
FROM scratch
COPY borgmatic-mqtt /src/target/release/borgmatic-mqtt
