"""Several KRaft nodes as one Kafka cluster, for replication and failover."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy._process import free_port
from deploy.kafka import KafkaBroker, _random_cluster_id


class KafkaCluster:
    """``size`` nodes, each broker and controller, with internal topics replicated to all of them
    (so losing one node loses no committed offset)."""

    def __init__(self, state_dir: Path, size: int = 3) -> None:
        ports = [free_port() for _ in range(size)]
        controller_ports = {node_id: free_port() for node_id in range(1, size + 1)}
        replicated = {
            "offsets.topic.replication.factor": str(size),
            "transaction.state.log.replication.factor": str(size),
            "transaction.state.log.min.isr": str(max(1, size - 1)),
            "default.replication.factor": str(size),
            "min.insync.replicas": str(max(1, size - 1)),
        }
        cluster_id = _random_cluster_id()
        self.brokers = [
            KafkaBroker(
                state_dir,
                port,
                controller_ports[node_id],
                node_id,
                cluster_id=cluster_id,
                voters=controller_ports,
                overrides=replicated,
            )
            for node_id, port in enumerate(ports, start=1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(broker.bootstrap_servers for broker in self.brokers)

    def start(self, timeout: float = 180.0) -> None:
        """Start every node at once: none answers before a quorum of controllers is up."""
        with ThreadPoolExecutor(len(self.brokers)) as pool:
            for started in [pool.submit(broker.start, timeout) for broker in self.brokers]:
                started.result()

    def stop(self) -> None:
        # SIGKILL: a node that lost its quorum waits out its whole shutdown timeout otherwise.
        for broker in self.brokers:
            broker.kill()
