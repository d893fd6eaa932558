"""deploy/k8s's CPU and memory, checked against what Ray reserves and what was measured: the rules
that a renamed setting, an edited reservation or an edited size would break without a sound.

The measured figures are those of docs/production.md ("Resource requests", and the replica's and
consumer's figures before it), from bench/footprint.py and bench/replica_start.py. Each rule is
also shown to fail on a manifest that breaks it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from k8s_consistency import chroma_server, setting_names, settings_of
from k8s_manifests import OVERLAYS, by_kind, one, pod_templates, quantity, render

from schemas import Settings

GB = 1e9

# Measured (docs/production.md, "Resource requests"), in bytes of resident memory at the peak.
#: An API replica (ray::ServeReplica) under load with 3k chunks, and what each chunk of 1000
#: characters adds to its views.
REPLICA_LOADED = 1.765 * GB
REPLICA_PER_CHUNK = 5_300
#: A consumer actor at its peak (1,160 MiB, a 10-minute backlog).
CONSUMER_PEAK = 1_160 * 2**20
#: `chroma run` with an empty store, and what each chunk of 1000 characters adds in memory (the
#: average at 100k chunks, the largest measured) and on disk.
CHROMA_EMPTY = 0.121 * GB
CHROMA_PER_CHUNK = 4_200
CHROMA_DISK_PER_CHUNK = 8_300
#: Ray's own processes on a node beside its replicas and consumers: raylet, dashboard and
#: runtime-env agents, log monitor, `ray start`, Serve's proxy, 2 idle workers.
RAY_WORKER_OWN = 0.93 * GB
#: The Ray head's processes (1.49 GB: GCS, raylet, dashboard without its modules, agents,
#: monitors, client server, `ray start`, Serve's controller and proxy, `ragstream consume`),
#: and 0.15 GB allowed for KubeRay's full dashboard, which was not measured.
RAY_HEAD = 1.64 * GB
#: The Kafka broker's JVM beyond its heap (its RSS less its committed heap), and the most heap it
#: had committed under the stack's load.
KAFKA_NON_HEAP = 0.14 * GB
KAFKA_HEAP = 0.303 * GB
#: A changes-stage pod: its supervisor and one faust worker.
STAGE_POD = 0.223 * GB

OVERLAYS_AND_BASE = ("base", *OVERLAYS)
#: The settings the Ray workers' sizes rest on: each must be written where the pods read it.
RESERVATIONS = ("RAGSTREAM_API_REPLICA_MEMORY_BYTES", "RAGSTREAM_CONSUMER_MEMORY_BYTES")


def _resources(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Where → resources, for every container and every Kafka node pool."""
    found = {
        f"{pod.owner} {container['name']}": container.get("resources", {})
        for pod in pod_templates(objects)
        for container in pod.containers
    }
    for pool in by_kind(objects, "KafkaNodePool"):
        found[f"KafkaNodePool/{pool['metadata']['name']}"] = pool["spec"].get("resources", {})
    return found


def _limit(resources: dict[str, Any]) -> float:
    return quantity(resources["limits"]["memory"])


def _jvm_bytes(size: str) -> int:
    """-Xmx and -Xms sizes: k, m and g are binary."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)


def _workers(objects: list[dict[str, Any]]) -> dict[str, Any]:
    groups: list[dict[str, Any]] = one(objects, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (group,) = groups
    return group


def _replica_capacity(settings: Settings) -> float:
    """Chunks an API replica's reservation holds, by its measured size."""
    return (settings.api_replica_memory_bytes - REPLICA_LOADED) / REPLICA_PER_CHUNK


# The rules, each returning the problems it finds.


def request_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every container and node pool asks for CPU and memory, has a memory limit, and asks for no
    more than its limits."""
    problems = []
    for where, resources in _resources(objects).items():
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests]
        missing += ["limits.memory"] if "memory" not in limits else []
        if missing:
            problems.append(f"{where}: no {', '.join(missing)}")
        for key in requests.keys() & limits.keys():
            if quantity(requests[key]) > quantity(limits[key]):
                problems.append(f"{where}: requests {key} {requests[key]} above its limit {limits[key]}")
    return problems


def reservation_problems(objects: list[dict[str, Any]]) -> list[str]:
    """What Ray reserves per replica and per consumer is written in the settings under names the
    settings read (a renamed one would silently fall back to its default), and covers what a
    replica and a consumer were measured to hold."""
    config_maps = by_kind(objects, "ConfigMap")
    written = {name for config_map in config_maps for name in config_map.get("data", {})}
    problems = [
        f"{name} is not written in the settings' ConfigMap, or is no setting"
        for name in RESERVATIONS
        if name not in written or name not in setting_names()
    ]
    settings = settings_of(objects, "RayService/")
    if settings.api_replica_memory_bytes < REPLICA_LOADED:
        problems.append(
            f"RAGSTREAM_API_REPLICA_MEMORY_BYTES {settings.api_replica_memory_bytes:,} is below a "
            f"replica's measured peak {REPLICA_LOADED:,.0f}"
        )
    if settings.consumer_memory_bytes < CONSUMER_PEAK:
        problems.append(
            f"RAGSTREAM_CONSUMER_MEMORY_BYTES {settings.consumer_memory_bytes:,} is below a consumer's "
            f"measured peak {CONSUMER_PEAK:,}"
        )
    return problems


def ray_worker_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Ray's memory on a worker (its ``memory`` start parameter, else the pod's memory limit, which
    KubeRay passes to ``ray start --memory``) holds the reservations of the replicas and consumers
    that land there when they are spread over the fewest worker pods; the pod's limit holds that,
    the object store (/dev/shm counts as the pod's memory) and Ray's own processes; its CPUs
    hold their CPU reservations and are all requested."""
    settings = settings_of(objects, "RayService/")
    group = _workers(objects)
    pods = min(group["replicas"], group.get("minReplicas", group["replicas"]))
    replicas, consumers = math.ceil(settings.api_replicas / pods), math.ceil(settings.consumers_max / pods)
    (container,) = group["template"]["spec"]["containers"]
    limit = _limit(container["resources"])
    parameters = group["rayStartParams"]
    ray_memory = float(parameters.get("memory", limit))
    reserved = replicas * settings.api_replica_memory_bytes + consumers * settings.consumer_memory_bytes
    problems = []
    if ray_memory < reserved:
        problems.append(
            f"Ray's memory on a worker, {ray_memory:,.0f}, is below the {reserved:,} reserved by "
            f"the replicas ({replicas}) and consumers ({consumers}) that land there"
        )
    store = float(parameters["object-store-memory"])
    if limit < ray_memory + store + RAY_WORKER_OWN:
        problems.append(
            f"a worker's memory limit {limit:,.0f} is below Ray's memory {ray_memory:,.0f} + its object "
            f"store {store:,.0f} + Ray's own processes {RAY_WORKER_OWN:,.0f}"
        )
    cpus = float(parameters["num-cpus"])
    if cpus < replicas * settings.api_replica_num_cpus + consumers * settings.consumer_num_cpus:
        problems.append(
            f"a worker's {cpus} Ray CPUs do not hold its replicas ({replicas}) and consumers ({consumers})"
        )
    if quantity(container["resources"]["requests"]["cpu"]) < cpus:
        problems.append(f"a worker offers Ray {cpus} CPUs but requests fewer")
    return problems


def ray_head_problems(objects: list[dict[str, Any]]) -> list[str]:
    """No replica or consumer lands on the head (it offers no CPU, and both reserve some), and its
    memory holds its measured processes."""
    settings = settings_of(objects, "RayService/")
    head = one(objects, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    problems = []
    if float(head["rayStartParams"].get("num-cpus", "1")) != 0:
        problems.append("the head offers Ray CPUs: replicas and consumers may land beside the GCS")
    if min(settings.api_replica_num_cpus, settings.consumer_num_cpus) <= 0:
        problems.append("a replica or consumer reserves no CPU: it may land on the head, which offers none")
    (container,) = head["template"]["spec"]["containers"]
    if _limit(container["resources"]) < RAY_HEAD:
        problems.append(f"the head's memory limit is below its measured {RAY_HEAD:,.0f}")
    return problems


def kafka_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The broker's heap is fixed (-Xms = -Xmx), no smaller than the measured committed heap, and
    its memory limit holds the heap, the JVM beyond it and some page cache."""
    problems = []
    for pool in by_kind(objects, "KafkaNodePool"):
        jvm = pool["spec"].get("jvmOptions", {})
        if "-Xmx" not in jvm or jvm.get("-Xms") != jvm["-Xmx"]:
            problems.append(f"{pool['metadata']['name']}: -Xms and -Xmx not set, or not equal: {jvm}")
            continue
        heap, limit = _jvm_bytes(jvm["-Xmx"]), _limit(pool["spec"]["resources"])
        if heap < KAFKA_HEAP:
            problems.append(f"-Xmx {jvm['-Xmx']} is below the measured committed heap {KAFKA_HEAP:,.0f}")
        if limit < heap + KAFKA_NON_HEAP:
            problems.append(
                f"memory limit {limit:,.0f} does not hold -Xmx {jvm['-Xmx']} and the JVM beyond its heap"
            )
    return problems


def chroma_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Chroma's memory and volume hold every chunk an API replica is sized for."""
    settings = settings_of(objects, "RayService/")
    chunks = _replica_capacity(settings)
    server = chroma_server(objects, settings)
    if server is None:
        return ["no Chroma server"]
    limit = _limit(server[1]["resources"])
    problems = []
    if limit < CHROMA_EMPTY + chunks * CHROMA_PER_CHUNK:
        problems.append(
            f"Chroma's memory limit {limit:,.0f} does not hold the {chunks:,.0f} chunks of a replica"
        )
    (stateful_set,) = [
        s for s in by_kind(objects, "StatefulSet") if server[0].owner.endswith(s["metadata"]["name"])
    ]
    (claim,) = stateful_set["spec"]["volumeClaimTemplates"]
    storage = quantity(claim["spec"]["resources"]["requests"]["storage"])
    if storage < chunks * CHROMA_DISK_PER_CHUNK:
        problems.append(f"Chroma's volume {storage:,.0f} does not hold the {chunks:,.0f} chunks of a replica")
    return problems


def stage_problems(objects: list[dict[str, Any]]) -> list[str]:
    """A changes-stage pod's memory holds its measured supervisor and worker."""
    (stage,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == "changes-stage"]
    (container,) = stage["spec"]["template"]["spec"]["containers"]
    limit = _limit(container["resources"])
    return [] if limit >= STAGE_POD else [f"the stage's memory limit {limit:,.0f} is below {STAGE_POD:,.0f}"]


RULES = (
    request_problems,
    reservation_problems,
    ray_worker_problems,
    ray_head_problems,
    kafka_problems,
    chroma_problems,
    stage_problems,
)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS_AND_BASE)
def test_the_sizes_hold_what_ray_reserves_and_what_was_measured(overlay: str, rule: Any) -> None:
    assert rule(render(overlay)) == []


# Each rule fails where it should.


def _config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = [
        c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("ragstream-settings")
    ]
    data: dict[str, str] = config_map["data"]
    return data


def test_a_request_above_its_limit_or_a_missing_limit_is_caught() -> None:
    objects = render("prod")
    pool = one(objects, "KafkaNodePool")
    pool["spec"]["resources"]["requests"]["memory"] = "8Gi"
    del _workers(objects)["template"]["spec"]["containers"][0]["resources"]["limits"]
    problems = request_problems(objects)
    assert any("KafkaNodePool/dual-role: requests memory" in p for p in problems)
    assert any("workers ray-worker: no limits.memory" in p for p in problems)


def test_a_renamed_reservation_setting_is_caught() -> None:
    objects = render("prod")
    data = _config_map(objects)
    data["RAGSTREAM_API_REPLICA_MEMORY"] = data.pop("RAGSTREAM_API_REPLICA_MEMORY_BYTES")
    assert any("RAGSTREAM_API_REPLICA_MEMORY_BYTES" in p for p in reservation_problems(objects))


@pytest.mark.parametrize(
    ("overlay", "setting", "value", "rule", "expected"),
    [
        # A consumer's reservation below its measured peak.
        ("base", "RAGSTREAM_CONSUMER_MEMORY_BYTES", "1000000000", reservation_problems, "measured peak"),
        # A replica's reservation larger than the worker sized for it.
        ("prod", "RAGSTREAM_API_REPLICA_MEMORY_BYTES", "6000000000", ray_worker_problems, "replicas (1)"),
        # More replicas than the workers hold, one each.
        ("base", "RAGSTREAM_API_REPLICAS", "4", ray_worker_problems, "replicas (2)"),
        # A replica that reserves no CPU, which the head (offering none) would then take.
        ("prod", "RAGSTREAM_API_REPLICA_NUM_CPUS", "0", ray_head_problems, "may land on the head"),
        # A replica sized for more chunks than Chroma's memory holds.
        (
            "base",
            "RAGSTREAM_API_REPLICA_MEMORY_BYTES",
            "4500000000",
            chroma_problems,
            "Chroma's memory limit",
        ),
    ],
    ids=[
        "consumer-below-peak",
        "replica-above-worker",
        "replicas-above-workers",
        "replica-on-head",
        "chroma",
    ],
)
def test_a_setting_that_breaks_a_size_is_caught(
    overlay: str, setting: str, value: str, rule: Any, expected: str
) -> None:
    objects = render(overlay)
    assert rule(objects) == []
    _config_map(objects)[setting] = value
    assert any(expected in problem for problem in rule(objects))


def test_a_worker_limit_that_does_not_hold_rays_memory_and_its_own_processes_is_caught() -> None:
    objects = render("prod")
    resources = _workers(objects)["template"]["spec"]["containers"][0]["resources"]
    resources["limits"]["memory"] = resources["requests"]["memory"] = "6Gi"
    assert any("Ray's own processes" in p for p in ray_worker_problems(objects))


def test_without_rays_memory_parameter_the_pod_limit_is_rays_memory() -> None:
    # KubeRay passes the limit as `ray start --memory`: then Ray may reserve the whole pod, and
    # nothing is left for its object store and its own processes.
    objects = render("prod")
    del _workers(objects)["rayStartParams"]["memory"]
    assert any("Ray's own processes" in p for p in ray_worker_problems(objects))


def test_a_kafka_heap_that_fills_its_memory_limit_is_caught() -> None:
    objects = render("prod")
    pool = one(objects, "KafkaNodePool")
    pool["spec"]["jvmOptions"] = {"-Xms": "4g", "-Xmx": "4g"}
    assert any("does not hold -Xmx 4g" in p for p in kafka_problems(objects))
    pool["spec"]["jvmOptions"] = {"-Xms": "256m", "-Xmx": "256m"}
    assert any("below the measured committed heap" in p for p in kafka_problems(objects))
    pool["spec"]["jvmOptions"] = {"-Xmx": "1g"}
    assert any("not equal" in p for p in kafka_problems(objects))


def test_a_stage_limit_below_its_measured_worker_is_caught() -> None:
    objects = render("dev")
    (stage,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == "changes-stage"]
    stage["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "64Mi"
    assert stage_problems(objects) != []
