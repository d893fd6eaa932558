"""deploy/k8s rendered by kustomize, and the parts of it that the code must agree with."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "APPLIED_ON_THEIR_OWN",
    "K8S_DIR",
    "OVERLAYS",
    "PodTemplate",
    "applied_on_their_own",
    "by_kind",
    "environment_of",
    "one",
    "pod_templates",
    "quantity",
    "render",
]

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
#: Files of an overlay that `kubectl apply -k` leaves out and deploy/k8s/README.md says to apply
#: on their own: objects whose CRD the offline checks do not have, so that they are never taken
#: for validated. The tests still compare them with the rendered objects that depend on them.
APPLIED_ON_THEIR_OWN = {"dev": (), "prod": ("kafka-user.yaml",)}


@functools.cache
def _rendered(folder: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed:\n{done.stderr}")
    return done.stdout


#: Kubernetes' quantity suffixes: binary first, so that "Mi" is not read as "M".
_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "m": 1e-3,
}


def quantity(value: str | float) -> float:
    """A Kubernetes quantity as a number: "5Gi" is 5 * 2**30 (bytes), "500m" 0.5 (cores)."""
    text = str(value)
    for suffix, factor in _SUFFIXES.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects of ``overlay`` (``dev``, ``prod``, or ``base``), a fresh copy each call."""
    folder = K8S_DIR / "base" if overlay == "base" else K8S_DIR / "overlays" / overlay
    return [document for document in yaml.safe_load_all(_rendered(folder)) if document]


def applied_on_their_own(overlay: str) -> list[dict[str, Any]]:
    """The objects of ``overlay``'s files in ``APPLIED_ON_THEIR_OWN``, as written (not rendered)."""
    folder = K8S_DIR / "overlays" / overlay
    texts = [(folder / name).read_text() for name in APPLIED_ON_THEIR_OWN[overlay]]
    return [document for text in texts for document in yaml.safe_load_all(text) if document]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (item,) = by_kind(objects, kind)
    return item


@dataclass(frozen=True)
class PodTemplate:
    """A pod template, wherever it sits: a Deployment's, a StatefulSet's, a Ray group's."""

    owner: str
    template: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.template.get("metadata", {}).get("labels", {}))

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.template["spec"]["containers"])

    def file_source(self, container: dict[str, Any], path: str) -> tuple[str, str, str] | None:
        """(kind, name, key): the Secret or ConfigMap key that the file ``path`` of ``container``
        is, through a volume; None when no such volume is mounted there."""
        mounts = sorted(container.get("volumeMounts", []), key=lambda mount: len(mount["mountPath"]))
        for mount in reversed(mounts):
            folder = mount["mountPath"].rstrip("/")
            if "subPath" in mount:
                relative = mount["subPath"] if path == folder else None
            else:
                relative = path[len(folder) + 1 :] if path.startswith(f"{folder}/") else None
            if relative is None:
                continue
            volumes = self.template["spec"].get("volumes", [])
            volume: dict[str, Any] = next((v for v in volumes if v["name"] == mount["name"]), {})
            for kind, field, name_key in (
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
            ):
                if field in volume:
                    items = {item["path"]: item["key"] for item in volume[field].get("items", [])}
                    key = items.get(relative) if items else relative
                    return (kind, volume[field][name_key], key) if key else None
            return None
        return None

    @property
    def volume_references(self) -> Iterator[tuple[str, str]]:
        """(kind, name) of each Secret and ConfigMap the pod's volumes hold."""
        for volume in self.template["spec"].get("volumes", []):
            if "secret" in volume:
                yield "Secret", volume["secret"]["secretName"]
            if "configMap" in volume:
                yield "ConfigMap", volume["configMap"]["name"]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[PodTemplate]:
    for item in objects:
        name = f"{item['kind']}/{item['metadata']['name']}"
        if item["kind"] in ("Deployment", "StatefulSet"):
            yield PodTemplate(name, item["spec"]["template"])
        elif item["kind"] == "RayService":
            cluster = item["spec"]["rayClusterConfig"]
            yield PodTemplate(f"{name} head", cluster["headGroupSpec"]["template"])
            for group in cluster.get("workerGroupSpecs", []):
                yield PodTemplate(f"{name} {group['groupName']}", group["template"])


def environment_of(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str | None]:
    """The variables ``container`` is given: from the ConfigMaps it takes whole, then its own
    ``env`` (a value from a Secret or a field is None: not known before it runs)."""
    config_maps = {item["metadata"]["name"]: item for item in by_kind(objects, "ConfigMap")}
    secrets = {item["metadata"]["name"]: item for item in by_kind(objects, "Secret")}
    environment: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source and source["configMapRef"]["name"] in config_maps:
            environment.update(config_maps[source["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in source and source["secretRef"]["name"] in secrets:
            environment.update(dict.fromkeys(secrets[source["secretRef"]["name"]].get("data", {})))
    for variable in container.get("env", []):
        environment[variable["name"]] = variable.get("value")
    return environment
