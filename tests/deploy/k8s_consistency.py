"""Checks that rendered manifests say what the code does: every ``RAGSTREAM_*`` variable is a
setting, every topic is one ``streams/topics.py`` creates with its partitions and config, every
port is one the code or Ray listens on, every Kafka client reaches a listener with the protocol,
login and CA certificate it asks for, and Chroma checks the token its clients send, or none of them
is given one. Each returns the problems it found; [] when none."""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import chromadb.config
import yaml
from chromadb.auth.token_authn import TokenAuthenticationServerProvider, TokenTransportHeader
from k8s_manifests import PodTemplate, by_kind, environment_of, one, pod_templates
from pydantic import SecretStr
from ray._private.ray_constants import DEFAULT_DASHBOARD_PORT, DEFAULT_PORT

from schemas import Settings
from schemas.kafka_connection import KafkaConnection
from streams.topics import topic_specs

__all__ = [
    "RAY_CLIENT_PORT",
    "ChromaAuth",
    "chroma_auth",
    "chroma_server",
    "chroma_token_problems",
    "kafka_client_problems",
    "made_by_strimzi",
    "port_problems",
    "reference_problems",
    "setting_problems",
    "settings_of",
    "topic_problems",
]

PREFIX = "RAGSTREAM_"
#: What a secret setting read from a Secret stands for when the settings are validated offline:
#: any text is a valid password or token.
FROM_A_SECRET = "value-from-a-secret"
#: `ray start --ray-client-server-port`'s default, which Ray keeps in its CLI, not in a constant.
RAY_CLIENT_PORT = 10001
#: The setting whose token the ragstream processes send Chroma, as ``Authorization: Bearer``.
CHROMA_TOKEN = "RAGSTREAM_CHROMA_TOKEN"
#: The variable chromadb's Python server takes the token it checks from.
CHROMA_CREDENTIALS = "CHROMA_SERVER_AUTHN_CREDENTIALS"
#: chromadb's Python server, as uvicorn runs it: it checks a token. ``chroma run`` (chromadb 1.5's
#: Rust server) lets every request through, whatever its auth settings say (docs/security.md).
CHROMA_APP = "chromadb.app:app"
TOKEN_PROVIDER = (
    f"{TokenAuthenticationServerProvider.__module__}.{TokenAuthenticationServerProvider.__name__}"
)


def setting_names() -> set[str]:
    """The variables the settings read (env_prefix + field name; no nested settings)."""
    return {f"{PREFIX}{name.upper()}" for name in Settings.model_fields}


def secret_setting_names() -> set[str]:
    """The variables of the settings that hold secrets (SecretStr): passwords and tokens."""
    return {
        f"{PREFIX}{name.upper()}"
        for name, setting in Settings.model_fields.items()
        if SecretStr in (setting.annotation, *typing.get_args(setting.annotation))
    }


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
    problems = _secret_placement_problems(objects)
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


def _secret_placement_problems(objects: list[dict[str, Any]]) -> list[str]:
    """A password or token (ours, or the one Chroma checks) comes from a Secret (``secretKeyRef``),
    never written in a manifest: the settings then count it as given (``FROM_A_SECRET``)."""
    secret_names = secret_setting_names() | {CHROMA_CREDENTIALS}
    problems = [
        f"ConfigMap/{config_map['metadata']['name']}: {name} is a secret, not for a ConfigMap"
        for config_map in by_kind(objects, "ConfigMap")
        for name in sorted(secret_names & set(config_map.get("data", {})))
    ]
    for pod in pod_templates(objects):
        for container in pod.containers:
            for variable in container.get("env", []):
                if variable["name"] in secret_names and "secretKeyRef" not in variable.get("valueFrom", {}):
                    problems.append(
                        f"{pod.owner} {container['name']}: {variable['name']} is a secret, not from a Secret"
                    )
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
    """Every port is one the code serves on (its settings) or Ray's own (Kafka's: see
    ``kafka_client_problems``)."""
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
    return problems


def kafka_client_problems(objects: list[dict[str, Any]], users: list[dict[str, Any]]) -> list[str]:
    """Every container that reads the settings reaches a listener of the Kafka through its
    bootstrap Service, speaking that listener's protocol: TLS where it has TLS, trusting the CA
    that signs its certificates (Strimzi's cluster CA, mounted from its Secret), and a SCRAM-SHA-512
    login where it has that authentication, as a KafkaUser of ``users`` (applied apart from the
    rendered objects) with the password from that user's Secret."""
    kafka = one(objects, "Kafka")
    listeners = {listener["port"]: listener for listener in kafka["spec"]["kafka"]["listeners"]}
    hosts = _bootstrap_hosts(kafka)
    problems = []
    for pod in pod_templates(objects):
        for container in pod.containers:
            environment = environment_of(container, objects)
            if not any(name.startswith(PREFIX) for name in environment):
                continue
            where = f"{pod.owner} {container['name']}"
            try:
                connection = _settings_from(environment).kafka
            except ValueError:
                continue  # setting_problems reports it
            for address in connection.bootstrap_servers.split(","):
                host, _, port = address.strip().rpartition(":")
                listener = listeners.get(int(port))
                if host not in hosts or listener is None:
                    problems.append(
                        f"{where}: RAGSTREAM_BOOTSTRAP_SERVERS {address}: not {hosts} on {sorted(listeners)}"
                    )
                else:
                    problems += [
                        f"{where}: {problem}" for problem in _protocol_problems(connection, listener)
                    ]
            checks = []
            if connection.uses_tls:
                checks += _ca_problems(pod, container, connection, kafka)
            if connection.uses_sasl:
                checks += _login_problems(container, connection, kafka, users)
            problems += [f"{where}: {problem}" for problem in checks]
    return problems


def made_by_strimzi(objects: list[dict[str, Any]], users: list[dict[str, Any]]) -> set[str]:
    """The Secrets Strimzi writes that pods may read: each Kafka's cluster CA certificate, and
    each KafkaUser's credentials."""
    secrets = set()
    for kafka in by_kind(objects, "Kafka"):
        secrets.add(f"{kafka['metadata']['name']}-cluster-ca-cert")
        secrets.update(_user_secret(kafka, user) for user in _users_of(kafka, users))
    return secrets


def _bootstrap_hosts(kafka: dict[str, Any]) -> list[str]:
    # The names Strimzi's broker certificates carry for the bootstrap Service (so that TLS
    # hostname checks pass), from pods of the Kafka's own namespace.
    service = f"{kafka['metadata']['name']}-kafka-bootstrap"
    namespace = kafka["metadata"].get("namespace")
    if namespace is None:
        return [service]
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _protocol_problems(connection: KafkaConnection, listener: dict[str, Any]) -> list[str]:
    protocol = f"RAGSTREAM_KAFKA_SECURITY_PROTOCOL={connection.security_protocol}"
    name = f"listener {listener['name']} ({listener['port']})"
    authentication = listener.get("authentication", {}).get("type")
    problems = []
    if connection.uses_tls != listener["tls"]:
        problems.append(f"{protocol}, but {name} {'has' if listener['tls'] else 'has no'} TLS")
    if authentication == "scram-sha-512":
        if not connection.uses_sasl or connection.sasl_mechanism != "SCRAM-SHA-512":
            problems.append(f"{protocol} {connection.sasl_mechanism}, but {name} takes SCRAM-SHA-512 logins")
    elif authentication is None:
        if connection.uses_sasl:
            problems.append(f"{protocol}, but {name} has no authentication")
    else:
        problems.append(f"{name}: authentication {authentication} is not checked here")
    return problems


def _ca_problems(
    pod: PodTemplate, container: dict[str, Any], connection: KafkaConnection, kafka: dict[str, Any]
) -> list[str]:
    # Strimzi signs the listeners' certificates with its own cluster CA, which no system trusts.
    expected = ("Secret", f"{kafka['metadata']['name']}-cluster-ca-cert", "ca.crt")
    if connection.ssl_cafile is None:
        return [f"no RAGSTREAM_KAFKA_SSL_CAFILE: the system's CAs do not trust Strimzi's, {expected[1]}"]
    source = pod.file_source(container, str(connection.ssl_cafile))
    if source != expected:
        return [f"RAGSTREAM_KAFKA_SSL_CAFILE {connection.ssl_cafile} is {source}, not the key {expected}"]
    return []


def _login_problems(
    container: dict[str, Any], connection: KafkaConnection, kafka: dict[str, Any], users: list[dict[str, Any]]
) -> list[str]:
    scram_users = {
        user["spec"].get("userName", user["metadata"]["name"]): user
        for user in _users_of(kafka, users)
        if user["spec"].get("authentication", {}).get("type") == "scram-sha-512"
    }
    user = scram_users.get(connection.sasl_username or "")
    if user is None:
        return [
            f"RAGSTREAM_KAFKA_SASL_USERNAME {connection.sasl_username}: no SCRAM-SHA-512 KafkaUser of that "
            "name, for this Kafka, where its User Operator watches"
        ]
    variables = container.get("env", [])
    password: dict[str, Any] = next(
        (v for v in variables if v["name"] == "RAGSTREAM_KAFKA_SASL_PASSWORD"), {}
    )
    reference = password.get("valueFrom", {}).get("secretKeyRef", {})
    expected = {"name": _user_secret(kafka, user), "key": "password"}
    if {key: reference.get(key) for key in expected} != expected:
        return [f"RAGSTREAM_KAFKA_SASL_PASSWORD is not the KafkaUser's password, {expected}"]
    return []


def _users_of(kafka: dict[str, Any], users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The KafkaUsers that the Kafka's User Operator serves: of its cluster, in the namespace it
    watches; none without a User Operator."""
    operator = kafka["spec"].get("entityOperator", {}).get("userOperator")
    if operator is None:
        return []
    namespace = operator.get("watchedNamespace", kafka["metadata"].get("namespace"))
    return [
        user
        for user in users
        if user["kind"] == "KafkaUser"
        and user["metadata"].get("labels", {}).get("strimzi.io/cluster") == kafka["metadata"]["name"]
        and user["metadata"].get("namespace") == namespace
    ]


def _user_secret(kafka: dict[str, Any], user: dict[str, Any]) -> str:
    # The User Operator names the Secret after the user, with its secretPrefix if one is set.
    operator = kafka["spec"]["entityOperator"]["userOperator"]
    return f"{operator.get('secretPrefix', '')}{user['metadata']['name']}"


def reference_problems(objects: list[dict[str, Any]], made_elsewhere: set[str]) -> list[str]:
    """Every ConfigMap and Secret a container or a volume names is rendered, or is one of
    ``made_elsewhere`` (by hand, or by an operator)."""
    present = {(item["kind"], item["metadata"]["name"]) for item in objects}
    problems = []
    for pod in pod_templates(objects):
        for kind, name in pod.volume_references:
            if (kind, name) not in present and name not in made_elsewhere:
                problems.append(f"{pod.owner}: a volume of no {kind} {name}")
        for container in pod.containers:
            for kind, name in _references(container):
                if (kind, name) not in present and name not in made_elsewhere:
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
    server = chroma_server(objects, settings)
    if server is None:
        return [*problems, f"Service {settings.chroma_host} selects no one container of one pod"]
    if _option(_argv(server[1]), "--port") != str(settings.chroma_port):
        problems.append("Chroma's server --port is not RAGSTREAM_CHROMA_PORT")
    return problems


def chroma_server(
    objects: list[dict[str, Any]], settings: Settings
) -> tuple[PodTemplate, dict[str, Any]] | None:
    """The pod template and container behind the Service ``RAGSTREAM_CHROMA_HOST``; None unless
    its selector picks exactly one pod template with a container serving its port."""
    services = [
        item for item in by_kind(objects, "Service") if item["metadata"]["name"] == settings.chroma_host
    ]
    if len(services) != 1:
        return None
    selector = services[0]["spec"].get("selector", {}).items()
    pods = [pod for pod in pod_templates(objects) if selector and selector <= pod.labels.items()]
    if len(pods) != 1:
        return None
    targets = {port.get("targetPort", port["port"]) for port in services[0]["spec"]["ports"]}
    for container in pods[0].containers:
        if any({port.get("name"), port["containerPort"]} & targets for port in container.get("ports", [])):
            return pods[0], container
    return None


@dataclass(frozen=True)
class ChromaAuth:
    """What Chroma's server checks: the Secret key its token comes from, where it checks one."""

    #: Whether Chroma's server refuses requests without the token (all but heartbeat and version).
    checks_token: bool
    #: (Secret, key) of the token it checks; None where it checks none, or where the token is
    #: not from a Secret's key (a problem).
    secret_key: tuple[str, str] | None
    #: Why it checks no token, for the clients that would send one in vain.
    open_because: str = ""
    problems: list[str] = field(default_factory=list)


def chroma_auth(objects: list[dict[str, Any]]) -> ChromaAuth:
    """How Chroma's container runs: ``chroma run``, which checks no token, or chromadb's Python
    server under uvicorn, read through chromadb's own settings (a misspelt variable is ignored
    there, as it would be in the pod): the token provider, the header the clients use, the token
    from a Secret's key, its data on the pod's volume and one worker."""
    server = chroma_server(objects, settings_of(objects, "RayService/"))
    if server is None:
        return ChromaAuth(
            False, None, "there is no Chroma server", ["RAGSTREAM_CHROMA_HOST: no Chroma server"]
        )
    pod, container = server
    where = f"{pod.owner} {container['name']}"
    argv = _argv(container)
    if argv[:2] == ["chroma", "run"]:
        return ChromaAuth(False, None, f"{where} runs `chroma run`, which lets every request through")
    if not argv or argv[0].rpartition("/")[2] != "uvicorn" or CHROMA_APP not in argv:
        return ChromaAuth(
            False,
            None,
            f"{where} runs no server known to check tokens",
            [f"{where}: runs {argv}, neither `chroma run` nor chromadb's Python server ({CHROMA_APP})"],
        )
    environment = environment_of(container, objects)
    problems = []
    workers = _option(argv, "--workers") or environment.get("WEB_CONCURRENCY") or "1"
    if workers != "1":
        problems.append(f"{workers} uvicorn workers: Chroma's storage takes one process per directory")
    chroma = _chroma_settings(environment)
    if not chroma.is_persistent or not _on_a_claimed_volume(
        objects, pod, container, chroma.persist_directory
    ):
        problems.append(
            f"IS_PERSISTENT {chroma.is_persistent}, PERSIST_DIRECTORY {chroma.persist_directory}: "
            "not kept on the pod's persistent volume"
        )
    header = chroma.chroma_auth_token_transport_header or TokenTransportHeader.AUTHORIZATION.value
    if header != TokenTransportHeader.AUTHORIZATION.value:
        problems.append(
            f"CHROMA_AUTH_TOKEN_TRANSPORT_HEADER {header}: the clients send Authorization: Bearer"
        )
    if chroma.chroma_server_authn_provider != TOKEN_PROVIDER:
        problems.append(
            f"CHROMA_SERVER_AUTHN_PROVIDER is {chroma.chroma_server_authn_provider}, not {TOKEN_PROVIDER}"
        )
        why = f"{where} runs chromadb's Python server without its token provider"
        return ChromaAuth(False, None, why, [f"{where}: {problem}" for problem in problems])
    secret_key = _secret_key(container, CHROMA_CREDENTIALS)
    if secret_key is None:
        problems.append(f"{CHROMA_CREDENTIALS}, the token it checks, is not from a Secret's key")
    return ChromaAuth(True, secret_key, problems=[f"{where}: {problem}" for problem in problems])


def chroma_token_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Chroma's server and its clients agree on the token: where the server checks one, every
    container that reads the settings sends ``RAGSTREAM_CHROMA_TOKEN`` from the same Secret key;
    where it checks none, no container is given a token it would send in vain."""
    auth = chroma_auth(objects)
    server = chroma_server(objects, settings_of(objects, "RayService/"))
    chroma = f"{server[0].owner} {server[1]['name']}" if server is not None else None
    problems = list(auth.problems)
    for pod in pod_templates(objects):
        for container in pod.containers:
            where = f"{pod.owner} {container['name']}"
            environment = environment_of(container, objects)
            if where == chroma or not any(name.startswith(PREFIX) for name in environment):
                continue
            if not auth.checks_token and CHROMA_TOKEN in environment:
                problems.append(f"{where}: {CHROMA_TOKEN} is given, but {auth.open_because}")
            elif auth.checks_token and (
                auth.secret_key is None or _secret_key(container, CHROMA_TOKEN) != auth.secret_key
            ):
                problems.append(
                    f"{where}: {CHROMA_TOKEN} is {_secret_key(container, CHROMA_TOKEN)}, not Chroma's token "
                    f"{auth.secret_key}: Chroma refuses it"
                )
    return problems


def _argv(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name value`` or ``name=value`` on a command line, the last one given as the
    CLI of uvicorn (click) takes it; None when absent."""
    value = None
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(f"{name}="):
            value = word.partition("=")[2]
    return value


def _secret_key(container: dict[str, Any], variable: str) -> tuple[str, str] | None:
    """(Secret, key) that ``variable`` of ``container`` is read from; None when it is not."""
    for item in container.get("env", []):
        reference = item.get("valueFrom", {}).get("secretKeyRef")
        if item["name"] == variable and reference is not None:
            return reference["name"], reference["key"]
    return None


def _on_a_claimed_volume(
    objects: list[dict[str, Any]], pod: PodTemplate, container: dict[str, Any], path: str
) -> bool:
    """Whether ``path`` is in a folder mounted whole from a persistent volume claim: one of the
    StatefulSet's claim templates, or a claim the pod names."""
    kind, _, name = pod.owner.partition("/")
    owner = next((item for item in by_kind(objects, kind) if item["metadata"]["name"] == name), {})
    claims = {claim["metadata"]["name"] for claim in owner.get("spec", {}).get("volumeClaimTemplates", [])}
    claims |= {
        volume["name"]
        for volume in pod.template["spec"].get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/")
        if (
            mount["name"] in claims
            and "subPath" not in mount
            and (path == folder or path.startswith(f"{folder}/"))
        ):
            return True
    return False


def _chroma_settings(environment: dict[str, str | None]) -> chromadb.config.Settings:
    """chromadb's settings as its server in a container with ``environment`` reads them (a value
    read from a Secret counts as given)."""
    given = {name: FROM_A_SECRET if value is None else value for name, value in environment.items()}
    with _only_environment(given, lambda name: name.lower() in chromadb.config.Settings.model_fields):
        # Not a .env file of this machine: the pod has none. (chromadb's class declares its
        # settings without pydantic-settings' own keyword arguments.)
        return chromadb.config.Settings(_env_file=None)  # type: ignore[call-arg]


def _named(container: dict[str, Any], name: str) -> int | None:
    ports = container.get("ports", [])
    return next((port["containerPort"] for port in ports if port.get("name") == name), None)


def _settings_from(environment: dict[str, str | None]) -> Settings:
    """Settings as a process with ``environment`` would build them: a password or token read
    from a Secret counts as given, any other value read at run time is left out."""
    secret_names = secret_setting_names()
    given = {name: value for name, value in environment.items() if value is not None}
    given |= {
        name: FROM_A_SECRET for name in secret_names if name in environment and environment[name] is None
    }
    with _only_environment(given, lambda name: name.startswith(PREFIX)):
        return Settings()


@contextmanager
def _only_environment(variables: dict[str, str], read: Callable[[str], bool]) -> Iterator[None]:
    """The process's environment holds, of the variables that ``read`` says settings read, only
    those of ``variables``, until the block ends."""
    saved = {name: value for name, value in os.environ.items() if read(name)}
    for name in saved:
        del os.environ[name]
    os.environ.update({name: value for name, value in variables.items() if read(name)})
    try:
        yield
    finally:
        for name in [name for name in os.environ if read(name)]:
            del os.environ[name]
        os.environ.update(saved)
