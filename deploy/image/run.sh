#!/usr/bin/env bash
# `podman run` as this host allows it, with the host's network: run.sh [podman run options] IMAGE [command].
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
exec podman "${PODMAN_FLAGS[@]}" run "${RUN_FLAGS[@]}" "$@"
