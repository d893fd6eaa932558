"""Validating Kubernetes objects offline, as an API server with strict field validation would.

Built-in kinds go to ``kubernetes-validate``, which bundles Kubernetes' OpenAPI schemas (its
strict variant rejects unknown fields). Custom resources go to ``jsonschema`` with the
``openAPIV3Schema`` of their CRD, read from the CRD files at test time and made into plain JSON
Schema first, since a CRD's structural schema means more than its JSON Schema reading:

- an object without ``x-kubernetes-preserve-unknown-fields`` takes no field it does not list (the
  API server prunes or, with ``kubectl apply --validate=strict``, rejects them): we add
  ``additionalProperties: false``, so that a misspelt field fails here too;
- ``x-kubernetes-int-or-string`` takes an integer or a string (KubeRay's CRDs say so with an
  ``anyOf`` already, Strimzi's do too; one that does not gets it added);
- ``nullable: true`` also takes null;
- ``x-kubernetes-validations`` are CEL rules, which no Python library here evaluates. A rule that
  compares with ``oldSelf`` only runs on an update, so a new object never meets it: skipped. Every
  other rule on a field that an object sets must have a Python translation in ``CEL_RULES``, or
  the object is reported as not validated: a new rule fails the tests instead of passing unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = ["CEL_RULES", "CrdSchemas", "builtin_errors", "to_json_schema"]

#: The CEL rules of the CRDs in use that apply to a new object, each with its meaning in Python
#: (``self`` is the value of the field that carries the rule).
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    # KubeRay: RayService.spec.managedBy and RayCluster.spec.managedBy.
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda value: (
        value in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    ),
    # Strimzi: Kafka.spec.kafka.rack.
    '(has(self.type) && self.type != "topology-label") || self.topologyKey != ""': lambda rack: (
        ("type" in rack and rack["type"] != "topology-label") or rack.get("topologyKey", "") != ""
    ),
    'has(self.type) == false || self.type != "environment-variable" || self.envVarName != ""': lambda rack: (
        "type" not in rack or rack["type"] != "environment-variable" or rack.get("envVarName", "") != ""
    ),
    # Strimzi: Kafka.spec.kafka.metricsConfig and Kafka.spec.cruiseControl.metricsConfig.
    "self.type != 'jmxPrometheusExporter' || has(self.valueFrom)": lambda config: (
        config.get("type") != "jmxPrometheusExporter" or "valueFrom" in config
    ),
    "self.type != 'strimziMetricsReporter'": lambda config: config.get("type") != "strimziMetricsReporter",
}


def builtin_errors(resource: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Why Kubernetes ``kubernetes_version`` would refuse ``resource`` (a built-in kind); [] if not."""
    try:
        kubernetes_validate.validate(resource, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(exc.absolute_path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def to_json_schema(node: Any) -> Any:
    """A CRD's structural schema as plain JSON Schema (see the module's docstring); CEL rules
    stay where they are, for ``CrdSchemas`` to apply."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        # `properties` maps names to schemas: its keys are field names, not schema keywords.
        key: {name: to_json_schema(child) for name, child in value.items()}
        if key in ("properties", "patternProperties")
        else to_json_schema(value)
        for key, value in node.items()
    }
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserves = node.get("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and not preserves:
        schema.setdefault("additionalProperties", False)
    if node.get("nullable"):
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


class CrdSchemas:
    """The schemas of the CRDs in ``crd_dir``, by (apiVersion, kind)."""

    def __init__(self, crd_dir: Path) -> None:
        self._raw: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(crd_dir.glob("*.yaml")):
            # LibYAML's loader when there is one: the CRDs are megabytes of YAML.
            for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if version.get("served", False):
                        raw = version["schema"]["openAPIV3Schema"]
                        self._raw[(f"{group}/{version['name']}", kind)] = raw
        self._validators: dict[tuple[str, str], jsonschema.Draft7Validator] = {}

    def groups(self) -> set[str]:
        """The API groups these CRDs define: a resource of any other group is a built-in kind."""
        return {api_version.split("/")[0] for api_version, _ in self._raw}

    def errors(self, resource: dict[str, Any]) -> list[str]:
        """Why the API server would refuse ``resource``, as far as its CRD says; [] if not."""
        key = (resource.get("apiVersion", ""), resource.get("kind", ""))
        if key not in self._raw:
            return [f"no served CRD version for {key[1]} {key[0]}"]
        if key not in self._validators:
            self._validators[key] = jsonschema.Draft7Validator(to_json_schema(self._raw[key]))
        problems = [
            f"{_where(error.absolute_path)}: {error.message}"
            for error in self._validators[key].iter_errors(resource)
        ]
        problems += _metadata_errors(resource)
        problems += _cel_errors(self._raw[key], resource, "")
        return problems


def _metadata_errors(resource: dict[str, Any]) -> list[str]:
    # A CRD's schema says only `metadata: {type: object}`: the API server checks ObjectMeta itself.
    # The same check here, through a kind whose metadata is all it needs.
    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": resource.get("metadata", {})}
    return builtin_errors(holder, kubernetes_validate.latest_version())


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    problems = []
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule["rule"]
        if "oldSelf" in text:
            continue  # a transition rule: checked on update only, never on a new object
        check = CEL_RULES.get(text)
        if check is None:
            problems.append(f"{path or '.'}: CEL rule not evaluated offline, add it to CEL_RULES: {text}")
        elif not check(value):
            problems.append(f"{path or '.'}: {rule.get('message', text)}")
    for child_schema, child, child_path in _children(schema, value, path):
        problems += _cel_errors(child_schema, child, child_path)
    return problems


def _children(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[dict[str, Any], Any, str]]:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, child in value.items():
            if name in properties:
                yield properties[name], child, f"{path}.{name}"
            elif isinstance(extra, dict):
                yield extra, child, f"{path}.{name}"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            yield schema["items"], child, f"{path}[{index}]"


def _where(path: Any) -> str:
    return ".".join(str(part) for part in path) or "."
