#!/usr/bin/env bash
# Builds deploy/Dockerfile on this host with podman, on the bases base.sh makes, and prints the
# image's name. The tag is a hash of what the build reads: the context's files as the working
# tree has them (tracked or not, less what .gitignore ignores) and the two bases' ids; an image
# with that tag already there is reused, not built again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/common.sh"
"$here/base.sh" >&2

cd "$root"
context=(pyproject.toml uv.lock README.md schemas engines streams consumers query_api evaluation deploy ragstream)
tree=$( {
    git ls-files -z --cached --others --exclude-standard -- "${context[@]}" | sort -z \
        | while IFS= read -r -d '' f; do if [[ -f $f ]]; then sha256sum -- "$f"; fi; done
    podman image inspect --format '{{.Id}}' "$PYTHON_IMAGE" "$UV_IMAGE"
} | sha256sum | cut -c1-12)
image=${RAGSTREAM_IMAGE_NAME:-localhost/ragstream}:tree-$tree

if ! podman image exists "$image"; then
    podman "${PODMAN_FLAGS[@]}" build "${RUN_FLAGS[@]}" --ignorefile "$here/containerignore" \
        --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg UV_IMAGE="$UV_IMAGE" \
        --build-arg UV_SYSTEM_CERTS=true --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
        -f deploy/Dockerfile -t "$image" . >&2
fi
# The images of older trees go: each holds a copy of the venv (GBs). One in use by a container stays.
podman images --format '{{.Repository}}:{{.Tag}}' "${image%:*}" | { grep -vxF "$image" || true; } \
    | xargs -r podman rmi >&2 || echo "older ragstream images kept (in use?)" >&2
echo "$image"
