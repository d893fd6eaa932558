"""Checks that rendered manifests say what the code does: every ``RAGSTREAM_*`` variable is a
setting, every topic is one ``streams/topics.py`` creates with its partitions and config, every
port is one the code or Ray listens on. Each returns the problems it found; [] when none."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from k8s_manifests import by_kind, environment_of, one, pod_templates
from ray._private.ray_constants import DEFAULT_DASHBOARD_PORT, DEFAULT_PORT

from schemas import Settings
from streams.topics import topic_specs

__all__ = [
    "RAY_CLIENT_PORT",
    "port_problems",
    "reference_problems",
    "setting_problems",
    "settings_of",
    "topic_problems",
]

PREFIX = "RAGSTREAM_"
#: `ray start --ray-client-server-port`'s default, which Ray keeps in its CLI, not in a constant.
RAY_CLIENT_PORT = 10001


def setting_names() -> set[str]:
    """The variables the settings read (env_prefix + field name; no nested settings)."""
    return {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}


def ragstream_environments(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, str | None]]]:
    """(where, variables) for each container, and each ConfigMap's data."""
    for pod in pod_templates(objects):
        for container in pod.containers:
            yield f"{pod.owner} {container['name']}", environment_of(container, objects)
    for config_map in by_kind(objects, "ConfigMap"):
        yield f"ConfigMap/{config_map['metadata']['name']}", dict(config_map.get("data", {}))


def setting_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every RAGSTREAM_* variable names a setting, and every container's settings are valid.

    The settings ignore variables they do not know (``extra="ignore"``), so a misspelt or renamed
    one would be silently without effect on the cluster: here it is an error."""
    known = setting_names()
    problems = []
    for where, environment in ragstream_environments(objects):
        for name in sorted(environment):
            if name.startswith(PREFIX) and name not in known:
                problems.append(f"{where}: {name} is no setting of schemas/settings.py")
        if not where.startswith("ConfigMap/"):
            try:
                _settings_from(environment)
            except ValueError as exc:
                problems.append(f"{where}: settings do not validate: {exc}")
    return problems


def settings_of(objects: list[dict[str, Any]], owner_prefix: str) -> Settings:
    """The settings of the first container of the pod template whose owner starts so."""
    pod = next(pod for pod in pod_templates(objects) if pod.owner.startswith(owner_prefix))
    return _settings_from(environment_of(pod.containers[0], objects))


def topic_problems(objects: list[dict[str, Any]]) -> list[str]:
    """One KafkaTopic per topic of ``topic_specs``, as ``ensure_topics`` would create it with
    the RayService's settings (the consumers run it at start), on a cluster with enough nodes."""
    settings = settings_of(objects, "RayService/")
    durability = {"min.insync.replicas": str(settings.min_insync_replicas)}
    expected = {spec.name: spec for spec in topic_specs(settings)}
    kafka = one(objects, "Kafka")["metadata"]["name"]
    brokers = sum(
        pool["spec"]["replicas"]
        for pool in by_kind(objects, "KafkaNodePool")
        if "broker" in pool["spec"]["roles"] and pool["metadata"]["labels"].get("strimzi.io/cluster") == kafka
    )
    problems = []
    seen = set()
    for topic in by_kind(objects, "KafkaTopic"):
        spec = topic["spec"]
        name = spec.get("topicName", topic["metadata"]["name"])
        seen.add(name)
        if name not in expected:
            problems.append(f"KafkaTopic {name}: streams/topics.py creates no such topic")
            continue
        if topic["metadata"].get("labels", {}).get("strimzi.io/cluster") != kafka:
            problems.append(f"KafkaTopic {name}: its strimzi.io/cluster label is not the Kafka {kafka}")
        if spec.get("partitions") != expected[name].partitions:
            problems.append(
                f"KafkaTopic {name}: {spec.get('partitions')} partitions, the code makes "
                f"{expected[name].partitions}"
            )
        if spec.get("replicas") != settings.replication_factor:
            problems.append(
                f"KafkaTopic {name}: {spec.get('replicas')} replicas, RAGSTREAM_REPLICATION_FACTOR "
                f"is {settings.replication_factor}"
            )
        config = {key: str(value) for key, value in spec.get("config", {}).items()}
        if config != {**durability, **expected[name].config}:
            problems.append(f"KafkaTopic {name}: config {config}, the code's is {expected[name].config}")
        if spec.get("replicas", 0) > brokers:
            problems.append(f"KafkaTopic {name}: {spec.get('replicas')} replicas on {brokers} brokers")
        if 1 < spec.get("replicas", 0) <= settings.min_insync_replicas:
            problems.append(f"KafkaTopic {name}: acks=all writes stop when a single broker is down")
    problems += [f"topic {name}: no KafkaTopic" for name in sorted(set(expected) - seen)]
    return problems


def port_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every port is one the code serves on (its settings), Strimzi's listener, or Ray's own."""
    ray_service = one(objects, "RayService")
    cluster = ray_service["spec"]["rayClusterConfig"]
    settings = settings_of(objects, "RayService/")
    serve_config = yaml.safe_load(ray_service["spec"]["serveConfigV2"])
    problems = []
    if serve_config["http_options"]["port"] != settings.api_port:
        problems.append(f"Serve listens on {serve_config['http_options']['port']}, RAGSTREAM_API_PORT")
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    metrics = {int(group["rayStartParams"].get("metrics-export-port", 0)) for group in groups}
    ray_ports = {DEFAULT_PORT, DEFAULT_DASHBOARD_PORT, RAY_CLIENT_PORT, *metrics}
    if settings.api_port in ray_ports:
        problems.append(f"RAGSTREAM_API_PORT {settings.api_port} is also a port of Ray's")
    # Outside Ray only Chroma listens (the stage serves nothing).
    allowed = {"ray": ray_ports | {settings.api_port}, "other": {settings.chroma_port}}
    for pod in pod_templates(objects):
        kind = "ray" if pod.owner.startswith("RayService/") else "other"
        for container in pod.containers:
            ports = [port["containerPort"] for port in container.get("ports", [])]
            if len(ports) != len(set(ports)):
                problems.append(f"{pod.owner} {container['name']}: a port listed twice: {ports}")
            unknown = set(ports) - allowed[kind]
            if unknown:
                problems.append(f"{pod.owner} {container['name']}: ports {sorted(unknown)} are no one's")
            if kind == "ray" and ports and _named(container, "serve") != settings.api_port:
                problems.append(f"{pod.owner}: KubeRay's serve port is not RAGSTREAM_API_PORT")
    problems += _chroma_port_problems(objects, settings)
    problems += _kafka_port_problems(objects, settings)
    return problems


def reference_problems(objects: list[dict[str, Any]], made_by_the_operator: set[str]) -> list[str]:
    """Every ConfigMap and Secret a container names is rendered, or is one the operator makes."""
    present = {(item["kind"], item["metadata"]["name"]) for item in objects}
    problems = []
    for pod in pod_templates(objects):
        for container in pod.containers:
            for kind, name in _references(container):
                if (kind, name) not in present and name not in made_by_the_operator:
                    problems.append(f"{pod.owner} {container['name']}: no {kind} {name}")
    return problems


def _references(container: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            yield "ConfigMap", source["configMapRef"]["name"]
        if "secretRef" in source:
            yield "Secret", source["secretRef"]["name"]
    for variable in container.get("env", []):
        value_from = variable.get("valueFrom", {})
        if "configMapKeyRef" in value_from:
            yield "ConfigMap", value_from["configMapKeyRef"]["name"]
        if "secretKeyRef" in value_from:
            yield "Secret", value_from["secretKeyRef"]["name"]


def _chroma_port_problems(objects: list[dict[str, Any]], settings: Settings) -> list[str]:
    services = {item["metadata"]["name"]: item for item in by_kind(objects, "Service")}
    service = services.get(settings.chroma_host)
    if service is None:
        return [f"RAGSTREAM_CHROMA_HOST {settings.chroma_host} is no Service"]
    ports = [port["port"] for port in service["spec"]["ports"]]
    problems = []
    if ports != [settings.chroma_port]:
        problems.append(f"Service {settings.chroma_host} ports {ports}, not RAGSTREAM_CHROMA_PORT")
    chroma = next(pod for pod in pod_templates(objects) if pod.owner == "StatefulSet/chroma").containers[0]
    command = chroma["command"]
    if command[command.index("--port") + 1] != str(settings.chroma_port):
        problems.append("chroma run --port is not RAGSTREAM_CHROMA_PORT")
    return problems


def _kafka_port_problems(objects: list[dict[str, Any]], settings: Settings) -> list[str]:
    kafka = one(objects, "Kafka")
    listeners = {listener["port"] for listener in kafka["spec"]["kafka"]["listeners"]}
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap"
    problems = []
    for address in settings.bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if host.split(".")[0] != bootstrap or int(port) not in listeners:
            problems.append(f"RAGSTREAM_BOOTSTRAP_SERVERS {address}: not {bootstrap} on {sorted(listeners)}")
    return problems


def _named(container: dict[str, Any], name: str) -> int | None:
    ports = container.get("ports", [])
    return next((port["containerPort"] for port in ports if port.get("name") == name), None)


def _settings_from(environment: dict[str, str | None]) -> Settings:
    """Settings as a process with ``environment`` would build them (secrets left out)."""
    given = {name: value for name, value in environment.items() if value is not None}
    with _only_environment(given):
        return Settings()


@contextmanager
def _only_environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update({name: value for name, value in variables.items() if name.startswith(PREFIX)})
    try:
        yield
    finally:
        for name in [name for name in os.environ if name.startswith(PREFIX)]:
            del os.environ[name]
        os.environ.update(saved)
