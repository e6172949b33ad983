#!/bin/sh
# Refuses to start without the secrets the worker needs, then execs it (tini, PID 1,
# forwards signals to it). Secrets come as BMQTT_… or, preferably, BMQTT_…_FILE
# (Docker secrets); none is ever baked into the image.
set -eu

need() {
  key=$1
  eval "value=\${$key:-}"
  eval "file=\${${key}_FILE:-}"
  if [ -z "$value" ] && { [ -z "$file" ] || [ ! -r "$file" ] || [ ! -s "$file" ]; }; then
    echo "borgmatic-mqtt: $key (or ${key}_FILE pointing to a readable, non-empty file) is required" >&2
    missing=1
  fi
}

missing=0
if [ "${1:-run}" = "run" ]; then
  need BMQTT_AUTH__READ_TOKEN
  need BMQTT_AUTH__WRITE_TOKEN
  [ "$missing" -eq 0 ] || exit 2
fi
exec /usr/local/bin/borgmatic-mqtt "$@"
