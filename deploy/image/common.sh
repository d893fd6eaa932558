# Sourced by base.sh and build.sh. This host's podman runs containers only with runc and with
# rlimits at or below its own (it cannot raise them), and its builds need the host's network.
PODMAN_FLAGS=(--runtime runc)
RUN_FLAGS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)
PYTHON_IMAGE=${PYTHON_IMAGE:-localhost/ragstream-python:3.11-bookworm}
UV_IMAGE=${UV_IMAGE:-localhost/ragstream-uv:0.13.9}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-localhost/ragstream-debian:bookworm}
# This host reaches PyPI through a TLS-inspecting proxy: the build trusts the host's CA bundle.
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
