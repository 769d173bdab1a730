"""Reduce watched objects to what the reconciler compares: managed fields only, never key material.

Called by the Kopf index functions (every watch event of an owned object) and by the reconciler after its own
writes. A Secret is reduced to its public key information; the private key is parsed only to prove it matches
the key ID it claims, then dropped.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import sys
from collections.abc import Mapping
from typing import Any

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import KeyAlgorithm, KeyStatus
from agentid.domain import keyring, keys, naming
from agentid.domain.keyring import ObservedKey
from agentid.domain.supervision import ClusterRoleInfo, is_read_only

_METADATA_FIELDS = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",  # ownership: an object older than the agent is never its own
    "labels",
    "annotations",
    "ownerReferences",
)
_BODY_FIELDS = {"Role": ("rules",), "RoleBinding": ("roleRef", "subjects"), "ServiceAccount": (), "Secret": ("type",)}


def summary(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """kind + the metadata and spec-like fields agentid manages (what ``desired`` builds)."""
    metadata = body.get("metadata", {})
    reduced: dict[str, Any] = {
        "apiVersion": body.get("apiVersion", ""),
        "kind": kind,
        "metadata": {k: metadata[k] for k in _METADATA_FIELDS if k in metadata},
    }
    for name in _BODY_FIELDS.get(kind, ()):
        if name in body:
            reduced[name] = body[name]
    if kind == "Secret":
        reduced["metadata"]["annotations"] = dict(metadata.get("annotations") or {})
    kept: dict[str, Any] = shared(reduced)
    return kept


_SHARED_STRING_LENGTH = 64


def shared(value: Any) -> Any:
    """A copy of a JSON value whose keys and short strings are interned: every decoded object has its own copy of
    "apiVersion", "rbac.authorization.k8s.io/v1" or "agentid.dev/agent", and at thousands of agents those copies
    were half of what the operator keeps in memory (docs/benchmarks.md, P4)."""
    if isinstance(value, dict):
        return {sys.intern(key): shared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shared(item) for item in value]
    if isinstance(value, str) and len(value) <= _SHARED_STRING_LENGTH:
        return sys.intern(value)
    return value


_AGENT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "finalizers",
    "deletionTimestamp",
    "creationTimestamp",
)
_BULKY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def compact_agent(body: Mapping[str, Any]) -> dict[str, Any]:
    """An AgentIdentity as the operator keeps it in memory: what the reconciler reads, without managedFields or
    kubectl's copy of the last applied manifest (together most of an object's size, times thousands of agents)."""
    metadata = body.get("metadata") or {}
    kept = {key: metadata[key] for key in _AGENT_METADATA if key in metadata}
    if "annotations" in kept:
        kept["annotations"] = {k: v for k, v in kept["annotations"].items() if k not in _BULKY_ANNOTATIONS}
    compact = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept}
    for part in ("spec", "status"):
        if part in body:
            compact[part] = body[part]
    in_memory: dict[str, Any] = shared(compact)
    return in_memory


def agent_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, agent name) of an owned object: from its label, or, when someone removed the label (the object
    then leaves the operator's label-selected watch), from its owner reference."""
    metadata = body.get("metadata", {})
    namespace = metadata.get("namespace")
    agent = (metadata.get("labels") or {}).get(naming.AGENT_LABEL)
    if not agent:
        agent = next(
            (
                owner.get("name")
                for owner in metadata.get("ownerReferences") or []
                if owner.get("kind") == v1alpha1.KIND and str(owner.get("apiVersion", "")).startswith(v1alpha1.GROUP)
            ),
            None,
        )
    return (namespace, agent) if agent and namespace else None


def observed_key(secret: Mapping[str, Any]) -> ObservedKey | None:
    """The public side of the agent's key Secret, or None if the Secret is unusable (wrong type, unreadable
    key, key not matching its declared ID or algorithm): an unusable Secret is replaced, never trusted."""
    if secret.get("type") != naming.KEY_SECRET_TYPE:
        return None
    data = secret.get("data") or {}
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        algorithm = KeyAlgorithm(_decode(data.get(naming.KEY_SECRET_ALGORITHM)).decode())
        signing_key = keys.load_pem(_decode(data.get(naming.KEY_SECRET_PRIVATE_KEY)), algorithm)
        created_at = dt.datetime.fromisoformat(annotations[naming.KEY_CREATED_ANNOTATION])
    except (ValueError, KeyError, UnicodeDecodeError, binascii.Error):
        return None
    declared = annotations.get(naming.KEY_ID_ANNOTATION)
    if declared != signing_key.key_id or _decode(data.get(naming.KEY_SECRET_KEY_ID)).decode() != signing_key.key_id:
        return None
    return ObservedKey(
        key_id=signing_key.key_id,
        algorithm=algorithm,
        created_at=created_at,
        jwk=dict(signing_key.jwk),
        retiring=_retiring(data.get(naming.KEY_SECRET_RETIRING)),
    )


def _retiring(value: object) -> tuple[KeyStatus, ...]:
    """The replaced keys the Secret keeps; an unreadable record keeps none (it can only shorten an overlap)."""
    if value is None:
        return ()
    try:
        return keyring.decode_keys(_decode(value).decode())
    except (ValueError, binascii.Error):  # pydantic's ValidationError and UnicodeDecodeError are ValueErrors
        return ()


def _decode(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("missing field")
    return base64.b64decode(value, validate=True)


def cluster_role_info(body: Mapping[str, Any]) -> ClusterRoleInfo:
    rules = [rule for rule in body.get("rules") or [] if not rule.get("nonResourceURLs")]
    return ClusterRoleInfo(
        name=str(body.get("metadata", {}).get("name")),
        read_only=is_read_only(body.get("rules") or []),
        resources=frozenset(str(resource) for rule in rules for resource in rule.get("resources") or []),
        verbs=frozenset(str(verb) for rule in rules for verb in rule.get("verbs") or []),
        uid=str(body.get("metadata", {}).get("uid") or ""),
        rules=tuple(shared(rule) for rule in rules),
    )


def resource_version(body: Mapping[str, Any] | None) -> int:
    """An object's resourceVersion as a number, to tell which of two observations is newer (0 if unknown).
    Kubernetes calls it opaque; etcd-backed apiservers serve increasing integers, which is all this relies on."""
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0
