#!/usr/bin/env bash
# Makes the two base images deploy/Dockerfile names, from Debian's archive and PyPI alone (no other
# registry is reachable here); each is made once, kept while it exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! podman image exists "$DEBIAN_IMAGE"; then
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian
    tar -C "$work/rootfs" -c . | podman import - "$DEBIAN_IMAGE"
    rm -rf "$work/rootfs"
fi
if ! podman image exists "$PYTHON_IMAGE"; then
    podman "${PODMAN_FLAGS[@]}" build "${RUN_FLAGS[@]}" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
        -f "$here/python.Containerfile" -t "$PYTHON_IMAGE" "$work"
fi
if ! podman image exists "$UV_IMAGE"; then
    version=${UV_IMAGE##*:}
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" \
        --platform manylinux_2_17_x86_64 "uv==$version"
    python3 -m zipfile -e "$work"/uv-"$version"-*.whl "$work/wheel"
    install -m 0755 "$work"/wheel/uv-"$version".data/scripts/uv "$work/uv"
    podman "${PODMAN_FLAGS[@]}" build -f "$here/uv.Containerfile" -t "$UV_IMAGE" "$work"
fi
