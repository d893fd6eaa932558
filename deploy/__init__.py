"""The local stack: a Kafka broker from Maven jars, a Chroma server and a Ray cluster, on this host."""

from deploy._process import DeployError, ServiceStartError, free_port
from deploy.chroma import ChromaServer
from deploy.cluster import KafkaCluster
from deploy.kafka import BrokerSecurity, KafkaBroker, ensure_kafka_jars
from deploy.ray_cluster import RayCluster
from deploy.tls import CertificateAuthority, IssuedCertificate

__all__ = [
    "BrokerSecurity",
    "CertificateAuthority",
    "ChromaServer",
    "DeployError",
    "IssuedCertificate",
    "KafkaBroker",
    "KafkaCluster",
    "RayCluster",
    "ServiceStartError",
    "ensure_kafka_jars",
    "free_port",
]
