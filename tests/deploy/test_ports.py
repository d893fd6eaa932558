"""The port ranges our launchers choose from never overlap each other or the kernel's ephemeral
ports, and what they hand out is free and inside its range."""

from __future__ import annotations

from pathlib import Path

from deploy.ports import RAY_WORKER_PORTS, SERVICE_PORTS, free_port, free_port_block, port_is_free


def test_the_ranges_are_apart_and_below_the_kernels_ephemeral_ports() -> None:
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    (worker_low, worker_high), (service_low, service_high) = RAY_WORKER_PORTS, SERVICE_PORTS
    assert worker_low > 19_999, "Ray's own default worker ports are 10002-19999"
    assert worker_high < service_low
    assert service_high < ephemeral_low


def test_free_port_gives_a_bindable_port_of_the_service_range() -> None:
    ports = {free_port() for _ in range(20)}
    assert all(SERVICE_PORTS[0] <= port <= SERVICE_PORTS[1] for port in ports)
    assert all(port_is_free(port, "127.0.0.1") for port in ports)


def test_a_block_of_worker_ports_is_free_and_misses_the_ports_taken() -> None:
    taken: set[int] = set()
    for _ in range(5):
        first = free_port_block(100, taken)
        assert first is not None
        block = set(range(first, first + 100))
        assert not block & taken
        assert RAY_WORKER_PORTS[0] <= first and first + 100 <= RAY_WORKER_PORTS[1]
        taken |= block
