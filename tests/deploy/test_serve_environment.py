"""What Serve's controller, and through it every proxy and replica, is started with."""

from __future__ import annotations

from ragstream.api_replicas import CONTROLLER_ENV, controller_env


def test_serves_own_variables_reach_the_controller_beside_ours() -> None:
    environ = {"RAY_SERVE_PROXY_USE_GRPC": "1", "PATH": "/usr/bin", "RAGSTREAM_API_PORT": "8080"}
    assert controller_env(environ) == CONTROLLER_ENV | {"RAY_SERVE_PROXY_USE_GRPC": "1"}


def test_an_operators_value_wins_over_ours() -> None:
    environ = {"RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "10"}
    assert controller_env(environ)["RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S"] == "10"
