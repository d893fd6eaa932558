"""deploy/k8s, checked without a cluster: kustomize renders every overlay; built-in kinds match
Kubernetes' OpenAPI schemas and custom resources their operators' CRDs (tests/deploy/k8s_schemas.py
says how); the topics, ports and RAGSTREAM_* variables in them are those the code uses; Kafka and
Chroma check the logins and the token their clients present. Each check is also shown to fail on a
manifest that is wrong in the way it looks for.

Nothing here was applied to a real cluster: see deploy/k8s/README.md."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from k8s_consistency import (
    chroma_auth,
    chroma_server,
    chroma_token_problems,
    kafka_client_problems,
    made_by_strimzi,
    port_problems,
    reference_problems,
    setting_problems,
    settings_of,
    topic_problems,
)
from k8s_manifests import K8S_DIR, OVERLAYS, applied_on_their_own, by_kind, one, pod_templates, render
from k8s_schemas import CrdSchemas, builtin_errors, to_json_schema
from unavailable import skip_or_fail

from deploy._process import ManagedProcess, free_port
from deploy.ray_cluster import NODE_HEALTH_CHECKS
from ragstream.api_replicas import APP_NAME, CONTROLLER_ENV, DEPLOYMENT_NAME

#: The oldest Kubernetes the manifests are checked against, and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.30", "1.37")


def _crd_dir() -> Path:
    """The CRDs of KubeRay and Strimzi 1.2, read where they are kept (never copied into the
    project): ``RAGSTREAM_K8S_CRDS``, else ``shared/k8s-crds`` beside the checkout or beside one
    of the folders above it."""
    if configured := os.environ.get("RAGSTREAM_K8S_CRDS"):
        return Path(configured)
    checkout = K8S_DIR.parents[1]
    candidates = [folder / "shared" / "k8s-crds" for folder in checkout.parents]
    return next((path for path in candidates if path.is_dir()), candidates[0])


CRD_DIR = _crd_dir()
#: Secrets the operator makes by hand (deploy/k8s/README.md): API keys and Chroma's token never
#: live in the repository.
MADE_BY_HAND = {"dev": set(), "prod": {"ragstream-api-keys", "ragstream-chroma-token"}}


@pytest.fixture(scope="module")
def crds() -> CrdSchemas:
    if not CRD_DIR.is_dir():
        skip_or_fail(f"the CRDs are not at {CRD_DIR} (set RAGSTREAM_K8S_CRDS)")
    return CrdSchemas(CRD_DIR)


def _custom(objects: list[dict[str, Any]], crds: CrdSchemas) -> list[dict[str, Any]]:
    return [item for item in objects if item["apiVersion"].split("/")[0] in crds.groups()]


def _built_in(objects: list[dict[str, Any]], crds: CrdSchemas) -> list[dict[str, Any]]:
    return [item for item in objects if item["apiVersion"].split("/")[0] not in crds.groups()]


def _name(item: dict[str, Any]) -> str:
    return f"{item['kind']}/{item['metadata']['name']}"


# Rendering


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_kustomize_renders_the_base_and_every_overlay(overlay: str) -> None:
    kinds = {item["kind"] for item in render(overlay)}
    assert {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "StatefulSet", "Deployment"} <= kinds
    assert {"Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


def test_the_overlays_put_ragstream_in_a_namespace_of_their_own() -> None:
    namespaces = {
        overlay: {item["metadata"].get("namespace") for item in render(overlay)} for overlay in OVERLAYS
    }
    assert namespaces == {"dev": {"ragstream-dev"}, "prod": {"ragstream"}}


# Built-in kinds against Kubernetes' schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_match_the_kubernetes_schemas(overlay: str, version: str, crds: CrdSchemas) -> None:
    problems = {_name(item): builtin_errors(item, version) for item in _built_in(render(overlay), crds)}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_misspelt_field_of_a_built_in_kind_is_rejected(crds: CrdSchemas) -> None:
    stage = next(item for item in render("prod") if item["kind"] == "Deployment")
    stage["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    assert builtin_errors(stage, KUBERNETES_VERSIONS[0]) != []


def test_a_value_of_the_wrong_type_in_a_built_in_kind_is_rejected() -> None:
    chroma = next(item for item in render("prod") if item["kind"] == "StatefulSet")
    chroma["spec"]["replicas"] = "one"
    assert builtin_errors(chroma, KUBERNETES_VERSIONS[0]) != []


# Custom resources against their CRDs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crds(overlay: str, crds: CrdSchemas) -> None:
    custom = _custom(render(overlay), crds)
    assert {item["kind"] for item in custom} == {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic"}
    problems = {_name(item): crds.errors(item) for item in custom}
    assert {name: found for name, found in problems.items() if found} == {}


@pytest.mark.parametrize(
    ("kind", "path", "misspelt"),
    [
        ("RayService", ["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParam"),
        ("RayService", ["spec", "rayClusterConfig", "workerGroupSpecs", 0, "template", "spec"], "volume"),
        ("Kafka", ["spec", "kafka"], "listener"),
        ("KafkaNodePool", ["spec"], "role"),
        ("KafkaTopic", ["spec"], "partition"),
        ("KafkaTopic", ["metadata"], "label"),
    ],
)
def test_a_misspelt_field_of_a_custom_resource_is_rejected(
    kind: str, path: list[str | int], misspelt: str, crds: CrdSchemas
) -> None:
    resource = by_kind(render("prod"), kind)[0]
    node: Any = resource
    for step in path:
        node = node[step]
    node[misspelt] = {}
    assert any(misspelt in problem for problem in crds.errors(resource))


def test_an_int_or_string_field_takes_either_and_nothing_else(crds: CrdSchemas) -> None:
    pool = one(render("prod"), "KafkaNodePool")
    for memory in ("4Gi", 4294967296):
        pool["spec"]["resources"]["requests"]["memory"] = memory
        assert crds.errors(pool) == []
    pool["spec"]["resources"]["requests"]["memory"] = ["4Gi"]
    assert crds.errors(pool) != []


def test_a_field_that_preserves_unknown_fields_takes_any_key_and_its_neighbours_do_not(
    crds: CrdSchemas,
) -> None:
    topic = by_kind(render("prod"), "KafkaTopic")[0]
    topic["spec"]["config"]["any.kafka.setting"] = "1"
    assert crds.errors(topic) == []
    topic["spec"]["replicas"] = "three"
    assert crds.errors(topic) != []


def test_a_cel_rule_of_a_crd_is_applied_through_its_python_translation(crds: CrdSchemas) -> None:
    kafka = one(render("prod"), "Kafka")
    kafka["spec"]["kafka"]["rack"] = {"topologyKey": "topology.kubernetes.io/zone"}
    assert crds.errors(kafka) == []
    kafka["spec"]["kafka"]["rack"] = {"topologyKey": ""}
    assert any("topologyKey property is required" in problem for problem in crds.errors(kafka))
    ray_service = one(render("prod"), "RayService")
    ray_service["spec"]["managedBy"] = "someone-else"
    assert any("managedBy" in problem for problem in crds.errors(ray_service))


def test_a_cel_rule_without_a_translation_fails_instead_of_passing_unchecked(tmp_path: Path) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.size < 10", "message": "too big"},
                                        {"rule": "self.size >= oldSelf.size", "message": "no shrinking"},
                                    ],
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    (tmp_path / "widget.yaml").write_text(yaml.safe_dump(crd))
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    widget["spec"] = {"size": 1}
    (problem,) = CrdSchemas(tmp_path).errors(widget)
    # The transition rule (oldSelf) is skipped: it never applies to a new object.
    assert "not evaluated offline" in problem and "self.size < 10" in problem


def test_every_object_schema_of_a_crd_is_closed_unless_it_preserves_unknown_fields() -> None:
    schema = to_json_schema(
        {
            "type": "object",
            "properties": {
                "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
                "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
                "port": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "string", "nullable": True},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["open"]
    assert schema["properties"]["closed"]["additionalProperties"] is False
    assert schema["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert {"type": "null"} in schema["properties"]["maybe"]["anyOf"]


# What the manifests say against what the code does


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ragstream_variable_in_the_manifests_is_a_setting_and_validates(overlay: str) -> None:
    assert setting_problems(render(overlay)) == []


def test_an_unknown_ragstream_variable_is_rejected() -> None:
    objects = render("prod")
    by_kind(objects, "ConfigMap")[0]["data"]["RAGSTREAM_CHUNKSIZE"] = "500"
    problems = setting_problems(objects)
    # Named where it is written, and in every container that would be given it.
    assert any(p.startswith("ConfigMap/") and "RAGSTREAM_CHUNKSIZE is no setting" in p for p in problems)
    assert any(p.startswith("RayService/") and "RAGSTREAM_CHUNKSIZE" in p for p in problems)


def test_a_setting_with_an_invalid_value_is_rejected() -> None:
    objects = render("prod")
    by_kind(objects, "ConfigMap")[0]["data"]["RAGSTREAM_PARTITIONS"] = "six"
    problems = setting_problems(objects)
    assert any("settings do not validate" in problem and "partitions" in problem for problem in problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_the_code_creates_has_a_kafka_topic_with_its_partitions_and_config(overlay: str) -> None:
    assert topic_problems(render(overlay)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda topic: topic["spec"].update(partitions=12), "partitions"),
        (lambda topic: topic["spec"]["config"].pop("cleanup.policy", None), "config"),
        (lambda topic: topic["spec"].update(topicName="docs.change"), "creates no such topic"),
        (lambda topic: topic["spec"].update(replicas=2), "replicas"),
    ],
    ids=["partitions", "compaction", "name", "replicas"],
)
def test_a_kafka_topic_that_differs_from_the_code_is_rejected(change: Any, expected: str) -> None:
    objects = render("prod")
    changes = next(t for t in by_kind(objects, "KafkaTopic") if t["spec"]["topicName"] == "docs.changes")
    change(changes)
    assert any(expected in problem for problem in topic_problems(objects))


def test_the_topics_survive_the_loss_of_one_kafka_node_in_prod() -> None:
    objects = render("prod")
    settings = settings_of(objects, "RayService/")
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    pool = one(objects, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_port_is_one_the_code_or_ray_listens_on(overlay: str) -> None:
    assert port_problems(render(overlay)) == []


def test_a_port_nobody_listens_on_is_rejected() -> None:
    objects = render("prod")
    chroma = next(pod for pod in pod_templates(objects) if pod.owner == "StatefulSet/chroma")
    chroma.containers[0]["ports"][0]["containerPort"] = 8001
    assert any("8001" in problem for problem in port_problems(objects))


def test_a_serve_port_other_than_the_api_port_is_rejected() -> None:
    objects = render("prod")
    ray_service = one(objects, "RayService")
    serve_config = ray_service["spec"]["serveConfigV2"]
    ray_service["spec"]["serveConfigV2"] = serve_config.replace("port: 8080", "port: 8000")
    assert any("RAGSTREAM_API_PORT" in problem for problem in port_problems(objects))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_config_map_and_secret_a_pod_names_exists_or_is_made_by_hand_or_by_strimzi(
    overlay: str,
) -> None:
    objects = render(overlay)
    made_elsewhere = MADE_BY_HAND[overlay] | made_by_strimzi(objects, applied_on_their_own(overlay))
    assert reference_problems(objects, made_elsewhere) == []


def test_a_volume_of_a_secret_nobody_makes_is_rejected() -> None:
    objects = render("prod")
    stage = next(pod for pod in pod_templates(objects) if pod.owner == "Deployment/changes-stage")
    (ca,) = [volume for volume in stage.template["spec"]["volumes"] if "secret" in volume]
    ca["secret"]["secretName"] = "ragstream-cluster-ca"
    made_elsewhere = MADE_BY_HAND["prod"] | made_by_strimzi(objects, applied_on_their_own("prod"))
    assert reference_problems(objects, made_elsewhere) == [
        "Deployment/changes-stage: a volume of no Secret ragstream-cluster-ca"
    ]


def test_the_readme_says_how_to_make_every_secret_made_by_hand() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    for name in MADE_BY_HAND["prod"]:
        assert f"kubectl -n ragstream create secret generic {name} " in readme, name


def test_the_api_keys_come_from_a_secret_in_every_ray_pod() -> None:
    objects = render("prod")
    for pod in pod_templates(objects):
        if pod.owner.startswith("RayService/"):
            (keys,) = [v for v in pod.containers[0]["env"] if v["name"] == "RAGSTREAM_API_KEYS"]
            assert keys["valueFrom"]["secretKeyRef"]["name"] == "ragstream-api-keys"
    assert by_kind(objects, "Secret") == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_disruption_budget_covers_some_pods(overlay: str) -> None:
    objects = render(overlay)
    labels = [pod.labels for pod in pod_templates(objects)]
    for budget in by_kind(objects, "PodDisruptionBudget"):
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        assert any(wanted <= pod.items() for pod in labels), budget["metadata"]["name"]


def test_the_ray_service_runs_the_serve_app_that_ragstream_serve_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    objects = render("prod")
    ray_service = one(objects, "RayService")
    (application,) = yaml.safe_load(ray_service["spec"]["serveConfigV2"])["applications"]
    assert application["name"] == APP_NAME
    module_name, _, function_name = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    settings = settings_of(objects, "RayService/")
    for name in [name for name in os.environ if name.startswith("RAGSTREAM_")]:
        monkeypatch.delenv(name)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    app = call_user_app_builder_with_args_if_necessary(builder, application.get("args", {}))
    deployment = app._bound_deployment
    assert deployment.name == DEPLOYMENT_NAME
    assert deployment.num_replicas == settings.api_replicas == 3
    assert deployment.ray_actor_options is not None
    assert deployment.ray_actor_options["memory"] == settings.api_replica_memory_bytes


def test_the_ray_service_uses_the_locked_ray_and_the_proxy_and_node_checks_of_ragstream_serve() -> None:
    ray_service = one(render("prod"), "RayService")
    assert ray_service["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    node_checks = {f"RAY_{name}": str(value) for name, value in NODE_HEALTH_CHECKS.items()}
    for pod in pod_templates([ray_service]):
        environment = {v["name"]: v.get("value") for v in pod.containers[0]["env"]}
        assert {name: environment.get(name) for name in CONTROLLER_ENV} == CONTROLLER_ENV
        assert {name: environment.get(name) for name in node_checks} == node_checks


def test_each_ray_worker_fits_the_replica_and_consumer_it_is_sized_for() -> None:
    for overlay in OVERLAYS:
        objects = render(overlay)
        settings = settings_of(objects, "RayService/")
        ray_service = one(objects, "RayService")
        (workers,) = ray_service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        limit = _bytes(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
        store = int(workers["rayStartParams"]["object-store-memory"])
        reserved = settings.api_replica_memory_bytes + settings.consumer_memory_bytes + store
        assert reserved < limit, overlay
        # Enough workers for the replicas and the most consumers the scaler may start.
        assert workers["replicas"] >= max(settings.api_replicas, settings.consumers_max), overlay


def test_the_changes_stage_runs_two_workers_in_one_group() -> None:
    for overlay in OVERLAYS:
        (stage,) = [
            d for d in by_kind(render(overlay), "Deployment") if d["metadata"]["name"] == "changes-stage"
        ]
        (container,) = stage["spec"]["template"]["spec"]["containers"]
        environment = {v["name"]: v.get("value") for v in container["env"]}
        assert stage["spec"]["replicas"] * int(environment["RAGSTREAM_STAGE_WORKERS"]) == 2


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


# Kafka's listeners against the clients' settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ragstream_container_reaches_a_kafka_listener_as_that_listener_asks(overlay: str) -> None:
    assert kafka_client_problems(render(overlay), applied_on_their_own(overlay)) == []


def test_prod_kafka_takes_only_tls_connections_with_a_scram_login_and_every_client_makes_one() -> None:
    objects = render("prod")
    kafka = one(objects, "Kafka")
    listeners = [
        (item["name"], item["port"], item["tls"], item.get("authentication"))
        for item in kafka["spec"]["kafka"]["listeners"]
    ]
    assert listeners == [("tls", 9093, True, {"type": "scram-sha-512"})]
    clients = [pod for pod in pod_templates(objects) if pod.owner != "StatefulSet/chroma"]
    assert {pod.owner for pod in clients} == {
        "Deployment/changes-stage",
        "RayService/ragstream head",
        "RayService/ragstream workers",
    }
    for pod in clients:
        connection = settings_of(objects, pod.owner).kafka
        assert connection.bootstrap_servers == "ragstream-kafka-bootstrap:9093", pod.owner
        assert (connection.security_protocol, connection.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert connection.sasl_username == "ragstream" and connection.sasl_password is not None
        assert pod.file_source(pod.containers[0], str(connection.ssl_cafile)) == (
            "Secret",
            "ragstream-cluster-ca-cert",
            "ca.crt",
        )


def test_dev_kafka_stays_plaintext_without_logins() -> None:
    objects = render("dev")
    (listener,) = one(objects, "Kafka")["spec"]["kafka"]["listeners"]
    assert (listener["port"], listener["tls"], "authentication" in listener) == (9092, False, False)
    assert settings_of(objects, "Deployment/").kafka.security_protocol == "PLAINTEXT"


def test_the_kafka_user_is_applied_on_its_own_as_the_readme_says() -> None:
    objects = render("prod")
    (user,) = applied_on_their_own("prod")
    assert (user["apiVersion"], user["kind"]) == (one(objects, "Kafka")["apiVersion"], "KafkaUser")
    assert user["metadata"]["namespace"] == one(objects, "Kafka")["metadata"]["namespace"]
    assert by_kind(objects, "KafkaUser") == []
    readme = (K8S_DIR / "README.md").read_text()
    assert "kubectl -n ragstream apply -f deploy/k8s/overlays/prod/kafka-user.yaml" in readme


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


def _listener(objects: list[dict[str, Any]]) -> dict[str, Any]:
    listener: dict[str, Any] = one(objects, "Kafka")["spec"]["kafka"]["listeners"][0]
    return listener


def _stage_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    stage = next(pod for pod in pod_templates(objects) if pod.owner == "Deployment/changes-stage")
    return stage.containers[0]


def _stage_volume(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    stage = next(pod for pod in pod_templates(objects) if pod.owner == "Deployment/changes-stage")
    return next(volume for volume in stage.template["spec"]["volumes"] if volume["name"] == name)


def _stage_password(objects: list[dict[str, Any]]) -> dict[str, Any]:
    variables = _stage_container(objects)["env"]
    return next(v for v in variables if v["name"] == "RAGSTREAM_KAFKA_SASL_PASSWORD")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda o: _config(o).update(RAGSTREAM_BOOTSTRAP_SERVERS="ragstream-kafka-bootstrap:9092"),
            "RAGSTREAM_BOOTSTRAP_SERVERS ragstream-kafka-bootstrap:9092: not",
        ),
        (
            lambda o: _config(o).update(
                RAGSTREAM_BOOTSTRAP_SERVERS="ragstream-kafka-bootstrap.elsewhere:9093"
            ),
            "RAGSTREAM_BOOTSTRAP_SERVERS ragstream-kafka-bootstrap.elsewhere:9093: not",
        ),
        (lambda o: _listener(o).pop("authentication"), "listener tls (9093) has no authentication"),
        (lambda o: _listener(o).update(tls=False), "listener tls (9093) has no TLS"),
        (
            lambda o: _config(o).update(RAGSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT"),
            "tls (9093) has TLS",
        ),
        (lambda o: _config(o).update(RAGSTREAM_KAFKA_SASL_MECHANISM="SCRAM-SHA-256"), "takes SCRAM-SHA-512"),
        (lambda o: _config(o).pop("RAGSTREAM_KAFKA_SSL_CAFILE"), "no RAGSTREAM_KAFKA_SSL_CAFILE"),
        (lambda o: _config(o).update(RAGSTREAM_KAFKA_SSL_CAFILE="/etc/ragstream/ca.crt"), "is None, not"),
        (
            lambda o: _stage_volume(o, "kafka-ca")["secret"].update(secretName="ragstream-clients-ca-cert"),
            "is ('Secret', 'ragstream-clients-ca-cert', 'ca.crt')",
        ),
        (lambda o: _config(o).update(RAGSTREAM_KAFKA_SASL_USERNAME="admin"), "no SCRAM-SHA-512 KafkaUser"),
        (
            lambda o: one(o, "Kafka")["spec"]["entityOperator"].pop("userOperator"),
            "no SCRAM-SHA-512 KafkaUser",
        ),
        (
            lambda o: _stage_password(o)["valueFrom"]["secretKeyRef"].update(name="ragstream-api-keys"),
            "not the KafkaUser's password",
        ),
    ],
    ids=[
        "plain-port",
        "other-namespace",
        "listener-without-login",
        "listener-without-tls",
        "sasl-plaintext",
        "scram-sha-256",
        "no-ca-file",
        "ca-file-not-mounted",
        "ca-of-another-secret",
        "unknown-user",
        "no-user-operator",
        "password-of-another-secret",
    ],
)
def test_a_kafka_client_that_the_listener_would_refuse_is_rejected(change: Any, expected: str) -> None:
    objects = render("prod")
    change(objects)
    problems = kafka_client_problems(objects, applied_on_their_own("prod"))
    assert any(expected in problem for problem in problems), problems


def test_a_kafka_user_that_strimzi_would_not_serve_is_rejected() -> None:
    (user,) = applied_on_their_own("prod")
    user["metadata"]["namespace"] = "ragstream-dev"
    problems = kafka_client_problems(render("prod"), [user])
    assert any("no SCRAM-SHA-512 KafkaUser" in problem for problem in problems)


def test_a_kafka_password_that_is_missing_or_written_in_a_manifest_is_rejected() -> None:
    objects = render("prod")
    _stage_container(objects)["env"].remove(_stage_password(objects))
    assert any(
        p.startswith("Deployment/changes-stage") and "SASL_SSL needs a SASL user name and password" in p
        for p in setting_problems(objects)
    )
    objects = render("prod")
    _stage_password(objects).pop("valueFrom")
    _stage_password(objects)["value"] = "hunter2"
    assert "Deployment/changes-stage stage: RAGSTREAM_KAFKA_SASL_PASSWORD is a secret, not from a Secret" in (
        setting_problems(objects)
    )
    objects = render("prod")
    _config(objects)["RAGSTREAM_KAFKA_SASL_PASSWORD"] = "hunter2"
    assert any(
        "RAGSTREAM_KAFKA_SASL_PASSWORD is a secret, not for a ConfigMap" in p
        for p in setting_problems(objects)
    )


# Chroma's token against its clients

#: The Secret and key of Chroma's token in prod, made by hand (deploy/k8s/README.md).
CHROMA_SECRET = ("ragstream-chroma-token", "RAGSTREAM_CHROMA_TOKEN")
CLIENTS = {"Deployment/changes-stage", "RayService/ragstream head", "RayService/ragstream workers"}


def _chroma(objects: list[dict[str, Any]]) -> dict[str, Any]:
    server = chroma_server(objects, settings_of(objects, "RayService/"))
    assert server is not None
    return server[1]


def _variable(container: dict[str, Any], name: str) -> dict[str, Any]:
    return next(variable for variable in container["env"] if variable["name"] == name)


def _client(objects: list[dict[str, Any]], owner: str) -> dict[str, Any]:
    return next(pod for pod in pod_templates(objects) if pod.owner == owner).containers[0]


def _set(container: dict[str, Any], name: str, value: str) -> None:
    container["env"] = [v for v in container["env"] if v["name"] != name] + [{"name": name, "value": value}]


def _unset(container: dict[str, Any], name: str) -> None:
    container["env"] = [v for v in container["env"] if v["name"] != name]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chroma_checks_the_token_every_client_sends_or_no_client_is_given_one(overlay: str) -> None:
    assert chroma_token_problems(render(overlay)) == []


def test_prod_chroma_requires_the_token_of_a_secret_made_by_hand_and_every_client_sends_it() -> None:
    objects = render("prod")
    auth = chroma_auth(objects)
    assert (auth.checks_token, auth.secret_key, auth.problems) == (True, CHROMA_SECRET, [])
    assert _chroma(objects)["command"][:2] == ["uvicorn", "chromadb.app:app"]
    assert CHROMA_SECRET[0] in MADE_BY_HAND["prod"] and by_kind(objects, "Secret") == []
    clients = [pod for pod in pod_templates(objects) if pod.owner != "StatefulSet/chroma"]
    assert {pod.owner for pod in clients} == CLIENTS
    for pod in clients:
        token = _variable(pod.containers[0], "RAGSTREAM_CHROMA_TOKEN")["valueFrom"]["secretKeyRef"]
        assert (token["name"], token["key"]) == CHROMA_SECRET, pod.owner
        assert settings_of(objects, pod.owner).chroma_token is not None, pod.owner


def test_dev_chroma_stays_open_and_no_client_is_given_a_token() -> None:
    objects = render("dev")
    assert chroma_auth(objects).checks_token is False
    assert _chroma(objects)["command"][:2] == ["chroma", "run"]
    for pod in pod_templates(objects):
        assert settings_of(objects, pod.owner).chroma_token is None, pod.owner


PLAIN_CHROMA_RUN = ["chroma", "run", "--path", "/data", "--host", "0.0.0.0", "--port", "8000"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda o: _chroma(o).update(command=PLAIN_CHROMA_RUN),
            "RayService/ragstream workers ray-worker: RAGSTREAM_CHROMA_TOKEN is given, but "
            "StatefulSet/chroma chroma runs `chroma run`, which lets every request through",
            id="chroma-run",
        ),
        pytest.param(
            lambda o: _chroma(o).update(command=["python", "-m", "chromadb.cli.cli", "run"]),
            "neither `chroma run` nor chromadb's Python server",
            id="unknown-server",
        ),
        pytest.param(
            lambda o: _unset(_chroma(o), "CHROMA_SERVER_AUTHN_PROVIDER"),
            "CHROMA_SERVER_AUTHN_PROVIDER is None, not "
            "chromadb.auth.token_authn.TokenAuthenticationServerProvider",
            id="no-token-provider",
        ),
        pytest.param(
            # chromadb 0.4's name, which 1.5 ignores.
            lambda o: _variable(_chroma(o), "CHROMA_SERVER_AUTHN_PROVIDER").update(
                name="CHROMA_SERVER_AUTH_PROVIDER"
            ),
            "CHROMA_SERVER_AUTHN_PROVIDER is None",
            id="misspelt-provider-variable",
        ),
        pytest.param(
            lambda o: _set(_chroma(o), "CHROMA_AUTH_TOKEN_TRANSPORT_HEADER", "X-Chroma-Token"),
            "the clients send Authorization: Bearer",
            id="another-header",
        ),
        pytest.param(
            lambda o: _set(_chroma(o), "CHROMA_SERVER_AUTHN_CREDENTIALS", "hunter2"),
            "CHROMA_SERVER_AUTHN_CREDENTIALS, the token it checks, is not from a Secret's key",
            id="token-in-plain-text",
        ),
        pytest.param(
            lambda o: _variable(_chroma(o), "CHROMA_SERVER_AUTHN_CREDENTIALS")["valueFrom"][
                "secretKeyRef"
            ].update(name="ragstream-api-keys", key="RAGSTREAM_API_KEYS"),
            "Deployment/changes-stage stage: RAGSTREAM_CHROMA_TOKEN is ('ragstream-chroma-token', "
            "'RAGSTREAM_CHROMA_TOKEN'), not Chroma's token ('ragstream-api-keys', 'RAGSTREAM_API_KEYS')",
            id="token-of-another-secret",
        ),
        pytest.param(
            lambda o: _unset(_client(o, "RayService/ragstream workers"), "RAGSTREAM_CHROMA_TOKEN"),
            "RayService/ragstream workers ray-worker: RAGSTREAM_CHROMA_TOKEN is None, not Chroma's token",
            id="client-without-token",
        ),
        pytest.param(
            lambda o: _variable(_client(o, "Deployment/changes-stage"), "RAGSTREAM_CHROMA_TOKEN")[
                "valueFrom"
            ]["secretKeyRef"].update(key="token"),
            "Deployment/changes-stage stage: RAGSTREAM_CHROMA_TOKEN is ('ragstream-chroma-token', 'token')",
            id="client-token-of-another-key",
        ),
        pytest.param(
            lambda o: _chroma(o).update(command=[*_chroma(o)["command"], "--workers", "2"]),
            "2 uvicorn workers",
            id="several-workers",
        ),
        pytest.param(
            lambda o: _set(_chroma(o), "PERSIST_DIRECTORY", "/tmp/chroma"),
            "PERSIST_DIRECTORY /tmp/chroma: not kept on the pod's persistent volume",
            id="data-off-the-volume",
        ),
        pytest.param(
            lambda o: _unset(_chroma(o), "IS_PERSISTENT"),
            "IS_PERSISTENT False, PERSIST_DIRECTORY /data: not kept",
            id="not-persistent",
        ),
    ],
)
def test_a_chroma_and_clients_that_disagree_on_the_token_are_rejected(change: Any, expected: str) -> None:
    objects = render("prod")
    change(objects)
    problems = chroma_token_problems(objects)
    assert any(expected in problem for problem in problems), problems


def test_a_token_given_to_a_client_of_an_open_chroma_is_rejected() -> None:
    objects = render("dev")
    token = {"name": "RAGSTREAM_CHROMA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "t"}}}
    _client(objects, "Deployment/changes-stage")["env"].append(token)
    assert chroma_token_problems(objects) == [
        "Deployment/changes-stage stage: RAGSTREAM_CHROMA_TOKEN is given, but StatefulSet/chroma chroma "
        "runs `chroma run`, which lets every request through"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda o: _config(o).update(RAGSTREAM_CHROMA_TOKEN="hunter2"),
            "RAGSTREAM_CHROMA_TOKEN is a secret, not for a ConfigMap",
        ),
        (
            lambda o: _config(o).update(CHROMA_SERVER_AUTHN_CREDENTIALS="hunter2"),
            "CHROMA_SERVER_AUTHN_CREDENTIALS is a secret, not for a ConfigMap",
        ),
        (
            lambda o: _set(_client(o, "RayService/ragstream head"), "RAGSTREAM_CHROMA_TOKEN", "hunter2"),
            "RayService/ragstream head ray-head: RAGSTREAM_CHROMA_TOKEN is a secret, not from a Secret",
        ),
        (
            lambda o: _set(_chroma(o), "CHROMA_SERVER_AUTHN_CREDENTIALS", "hunter2"),
            "StatefulSet/chroma chroma: CHROMA_SERVER_AUTHN_CREDENTIALS is a secret, not from a Secret",
        ),
    ],
    ids=["client-token-in-config-map", "chroma-token-in-config-map", "client-literal", "chroma-literal"],
)
def test_a_chroma_token_written_in_a_manifest_or_a_config_map_is_rejected(change: Any, expected: str) -> None:
    objects = render("prod")
    change(objects)
    problems = setting_problems(objects)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.integration
def test_prod_chroma_as_rendered_refuses_every_request_but_its_probes_without_the_clients_token(
    tmp_path: Path,
) -> None:
    """The prod Chroma container's own command and variables, run here on the chromadb that
    uv.lock pins (the image's), with a token in the Secret's key: only its address (127.0.0.1, a
    free port) and its data folder (the volume's /data) are this machine's."""
    objects = render("prod")
    container = _chroma(objects)
    secrets = {CHROMA_SECRET: "prod-chroma-test.1"}

    def value(variable: dict[str, Any]) -> str:
        if "value" in variable:
            return str(variable["value"])
        reference = variable["valueFrom"]["secretKeyRef"]
        return secrets[(reference["name"], reference["key"])]

    port = free_port()
    argv = list(container["command"])
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    # The image puts its venv first on PATH; here that is this interpreter's.
    argv[0] = str(Path(sys.executable).parent / argv[0])
    environment = {variable["name"]: value(variable) for variable in container["env"]}
    data = tmp_path / "data"
    data.mkdir()
    environment["PERSIST_DIRECTORY"] = str(data)
    server = ManagedProcess(
        "prod Chroma",
        argv,
        log_file=tmp_path / "chroma.log",
        pid_file=tmp_path / "chroma.pid",
        env=environment,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    probes = {
        container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    collections = f"{url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    try:
        server.start()
        server.wait_until(
            lambda: httpx.get(url + "/api/v2/heartbeat", trust_env=False).status_code == 200, 60, url
        )
        # kubelet's probes send no token.
        answers = {path: httpx.get(url + path, trust_env=False).status_code for path in probes}
        assert answers == dict.fromkeys(probes, 200)
        assert httpx.get(collections, trust_env=False).status_code == 403
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(collections, headers=wrong, trust_env=False).status_code == 403
        for index, owner in enumerate(sorted(CLIENTS)):
            # What engines.chroma_client.open_chroma sends with this client's RAGSTREAM_CHROMA_TOKEN.
            token = value(_variable(_client(objects, owner), "RAGSTREAM_CHROMA_TOKEN"))
            bearer = {"Authorization": f"Bearer {token}"}
            made = httpx.post(collections, json={"name": f"client-{index}"}, headers=bearer, trust_env=False)
            assert made.status_code == 200, (owner, made.text)
        # Kept where the StatefulSet's volume is mounted.
        assert (data / "chroma.sqlite3").is_file()
    finally:
        server.stop()


# The image the manifests run (deploy/Dockerfile; never built here, see deploy/k8s/README.md)

DOCKERFILE = K8S_DIR.parent / "Dockerfile"


def test_the_image_holds_every_package_and_runs_as_the_user_the_manifests_name() -> None:
    import tomllib

    text = DOCKERFILE.read_text()
    project = tomllib.loads((K8S_DIR.parents[1] / "pyproject.toml").read_text())
    for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert f"COPY {package} {package}" in text, package
    assert "uv sync --frozen --no-dev --no-editable" in text
    assert "USER 10001:10001" in text
    for pod in pod_templates(render("prod")):
        assert pod.template["spec"]["securityContext"]["runAsUser"] == 10001, pod.owner


def test_the_image_uses_the_uv_of_the_makefile_and_holds_the_ray_head_script() -> None:
    text = DOCKERFILE.read_text()
    makefile = (K8S_DIR.parents[1] / "Makefile").read_text()
    uv_version = next(
        line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("UV_VERSION")
    )
    assert f"ghcr.io/astral-sh/uv:{uv_version}" in text
    head = one(render("prod"), "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    (script,) = [word for word in head["template"]["spec"]["containers"][0]["args"][0].split() if "/" in word]
    assert f"COPY --chmod=0755 deploy/k8s/ray-head.sh {script}" in text
