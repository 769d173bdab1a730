"""Generate CustomResourceDefinitions from the pydantic models (``make crds``; a test fails when crds/ is stale).

pydantic's JSON Schema is not a Kubernetes structural schema: refs are inlined, ``anyOf [X, null]`` becomes X
(the apiserver prunes nulls), titles and null defaults go, ``const`` becomes ``enum``. CEL rules written on the
models (``x-kubernetes-validations``) pass through unchanged. A ``format: date-time`` in the spec becomes a
string with the rules of ``agentid.api.timestamps`` (the apiserver's date-time admits times Python cannot hold).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from agentid.api import timestamps, v1alpha1

JsonObject = dict[str, Any]
_DROP_KEYS = {"title", "additionalProperties", "$defs"}


@dataclass(frozen=True)
class CrdDefinition:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    scope: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[JsonObject, ...] = ()
    root_rules: tuple[JsonObject, ...] = ()
    spec_required: bool = True

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def filename(self) -> str:
        """kubebuilder's naming: <group>_<plural>.yaml."""
        return f"{self.group}_{self.plural}.yaml"


def structural(schema: JsonObject, *, user_input: bool) -> JsonObject:
    """Turn ``model_json_schema()`` output into a structural schema the apiserver accepts.

    ``user_input`` (the spec) keeps defaults and gives date-times the rules the models apply. The status is
    written by the operator from values it parsed; rules there would also need maxItems on its lists (keys,
    conditions), or the apiserver's CEL cost estimate refuses the CRD."""
    definitions: JsonObject = schema.get("$defs", {})

    def resolve(node: JsonObject) -> JsonObject:
        """Inline a $ref and collapse ``anyOf [X, null]`` to X (keeping sibling keys such as defaults)."""
        if "$ref" in node:
            target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return resolve({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        if "anyOf" in node:
            options = [option for option in node["anyOf"] if option.get("type") != "null"]
            if len(options) == 1:
                return resolve({**options[0], **{k: v for k, v in node.items() if k != "anyOf"}})
        return node

    def convert(raw: JsonObject) -> JsonObject:
        node = resolve(raw)
        out: JsonObject = {"type": node["type"]} if "type" in node else {}
        for key, value in node.items():
            if key in _DROP_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
                continue
            if key == "default":
                if user_input and value not in (None, [], {}):
                    out[key] = _prune_empty(value)
            elif key == "const":
                out["enum"] = [value]
            elif key == "properties":
                out[key] = {name: convert(child) for name, child in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = convert(value)
            elif key != "type":
                out[key] = value
        if "enum" in out:
            out = {"type": "string", **out}
        if user_input and out.get("format") == "date-time":
            out = date_time(out)
        return out

    return convert({k: v for k, v in schema.items() if k != "$defs"})


def date_time(node: JsonObject) -> JsonObject:
    """A date-time string the models can parse: the one place every date-time field gets its rules.

    ``format: date-time`` goes: the apiserver's check for it admits year 0, offsets such as +99:99 and junk after
    a second 'T'; and it makes the value a CEL timestamp, which hides the text the rules read (an offset of
    +00:60 is already +01:00) and turns what Go cannot parse into evaluation errors instead of messages. As a
    string, the value is checked by exactly the grammar, calendar and range the models apply."""
    rules = [*node.get("x-kubernetes-validations", []), *(dict(rule) for rule in timestamps.CEL_RULES)]
    kept = {key: value for key, value in node.items() if key != "format"}
    return {"type": "string", **kept, "maxLength": timestamps.MAX_LENGTH, "x-kubernetes-validations": rules}


# The standard texts of `kubectl explain` for the fields every object has (as in the built-in types).
_API_VERSION_TEXT = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
    "recognized schemas to the latest internal value, and may reject unrecognized values."
)
_KIND_TEXT = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this from "
    "the endpoint the client submits requests to. In CamelCase."
)


def _prune_empty(value: Any) -> Any:
    """Defaults are written without empty lists/maps, so stored objects stay as small as the user wrote them."""
    if isinstance(value, dict):
        return {k: _prune_empty(v) for k, v in value.items() if v not in ([], {}, None)}
    return value


def build(definition: CrdDefinition) -> JsonObject:
    spec_schema = structural(definition.spec_model.model_json_schema(by_alias=True, mode="validation"), user_input=True)
    status_schema = structural(
        definition.status_model.model_json_schema(by_alias=True, mode="serialization"), user_input=False
    )
    root: JsonObject = {
        "type": "object",
        "description": definition.description,
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_TEXT},
            "kind": {"type": "string", "description": _KIND_TEXT},
            "metadata": {"type": "object"},  # the apiserver forbids anything else here; explain shows ObjectMeta
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if definition.spec_required:
        root["required"] = ["spec"]
    if definition.root_rules:
        root["x-kubernetes-validations"] = list(definition.root_rules)
    names: JsonObject = {
        "kind": definition.kind,
        "listKind": f"{definition.kind}List",
        "plural": definition.plural,
        "singular": definition.singular,
    }
    if definition.short_names:
        names["shortNames"] = list(definition.short_names)
    if definition.categories:
        names["categories"] = list(definition.categories)
    version: JsonObject = {
        "name": definition.version,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": root},
    }
    if definition.printer_columns:
        version["additionalPrinterColumns"] = list(definition.printer_columns)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": definition.name,
            "labels": {"app.kubernetes.io/part-of": "agentid"},
        },
        "spec": {"group": definition.group, "names": names, "scope": definition.scope, "versions": [version]},
    }


CATEGORY = "agentid-all"  # `kubectl get agentid-all` lists agents and policies together ("agentid" is a short name)

AGENT_IDENTITY = CrdDefinition(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=v1alpha1.KIND,
    plural=v1alpha1.PLURAL,
    singular="agentidentity",
    scope="Namespaced",
    spec_model=v1alpha1.AgentIdentitySpec,
    status_model=v1alpha1.AgentIdentityStatus,
    description=(
        "AgentIdentity gives one AI agent its own Kubernetes identity: the operator provisions a ServiceAccount, "
        "rotating signing keys and least-privilege RBAC for it, supervises it (Autonomous, Supervised, Suspended), "
        "and revokes it on request or at expiry. The agent token service issues it short-lived agent tokens."
    ),
    short_names=("agentid", "agentids"),
    categories=(CATEGORY,),
    printer_columns=(
        {"name": "Owner", "type": "string", "jsonPath": ".spec.owner.name"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.supervision.mode"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        # -o wide (priority 1), the same as `agentid list -o wide`
        {"name": "Agent-ID", "type": "string", "jsonPath": ".status.agentID", "priority": 1},
        {"name": "Token-TTL", "type": "string", "jsonPath": ".status.tokenTTL", "priority": 1},
        {"name": "Expires", "type": "date", "jsonPath": ".spec.expiresAt", "priority": 1},
        {"name": "Purpose", "type": "string", "jsonPath": ".spec.purpose", "priority": 1},
    ),
    root_rules=(
        {
            "rule": "self.metadata.name.size() <= 63",
            "message": "an AgentIdentity name must be at most 63 characters (it is used as a label value)",
        },
    ),
)

AGENT_POLICY = CrdDefinition(
    group=v1alpha1.GROUP,
    version=v1alpha1.VERSION,
    kind=v1alpha1.POLICY_KIND,
    plural=v1alpha1.POLICY_PLURAL,
    singular="agentpolicy",
    scope="Cluster",
    spec_model=v1alpha1.AgentPolicySpec,
    status_model=v1alpha1.AgentPolicyStatus,
    description=(
        "AgentPolicy sets ceilings for the AgentIdentities of the namespaces it selects: what they may be granted, "
        "for how long their tokens and they themselves may live, who may own them. Admission refuses what a "
        "policy forbids; the operator holds existing agents within it. The strictest of several policies wins."
    ),
    short_names=("agentpol",),
    categories=(CATEGORY,),
    printer_columns=(
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Agents", "type": "integer", "jsonPath": ".status.agents"},
        {"name": "Out-Of-Bounds", "type": "integer", "jsonPath": ".status.outOfBounds"},
        {"name": "Owner-Ceiling", "type": "boolean", "jsonPath": ".spec.ownerCeiling"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Max-Token-TTL", "type": "string", "jsonPath": ".spec.maxTokenTTL", "priority": 1},
        {"name": "Max-Lifetime", "type": "string", "jsonPath": ".spec.maxLifetime", "priority": 1},
        {"name": "Out-Of-Bounds-Agents", "type": "string", "jsonPath": ".status.outOfBoundsAgents", "priority": 1},
    ),
    spec_required=False,
)

DEFINITIONS: tuple[CrdDefinition, ...] = (AGENT_IDENTITY, AGENT_POLICY)


def render(definition: CrdDefinition) -> str:
    header = "# Generated by `make crds` from agentid.api (pydantic models). Do not edit.\n"
    return header + yaml.safe_dump(build(definition), sort_keys=False, width=120)


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for definition in DEFINITIONS:
        path = directory / definition.filename
        path.write_text(render(definition))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "crds")
    for path in write_all(target):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
