"""The local stack: a Kafka broker from Maven jars and a Chroma server, on 127.0.0.1."""

from deploy._process import DeployError, ServiceStartError, free_port
from deploy.chroma import ChromaServer
from deploy.cluster import KafkaCluster
from deploy.kafka import KafkaBroker, ensure_kafka_jars

__all__ = [
    "ChromaServer",
    "DeployError",
    "KafkaBroker",
    "KafkaCluster",
    "ServiceStartError",
    "ensure_kafka_jars",
    "free_port",
]
