"""An AgentIdentity read field by field, without parsing it: what deletion and the agent's audit records need.

Called by the reconciler. Deletion must never depend on the spec parsing: an agent this version cannot read (one
stored under a newer schema, or a value the CRD's schema admits and the model refuses) would otherwise keep its
objects and its finalizer, and with them its namespace and the CRD, in Terminating. Each field here is read on its
own and a malformed one is skipped; metadata (name, namespace, UID, creation time) is always there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from agentid.domain import attribution

Body = Mapping[str, Any]


def cluster_roles(body: Body) -> tuple[str, ...]:
    """The ClusterRoles the agent may hold bindings to: its spec's ``clusterRoleRefs`` and what its status last
    reported granted (the bindings' names derive from them, for the lookup of ones that lost their labels)."""
    found: list[str] = []
    for part, field in (("spec", "clusterRoleRefs"), ("status", "grantedClusterRoles")):
        values = _mapping(body.get(part)).get(field)
        if isinstance(values, list):
            found += [value for value in values if isinstance(value, str) and value]
    return tuple(dict.fromkeys(found))


def audit_subject(body: Body) -> dict[str, str | None]:
    """Who and what an audit record about the agent names (``audit.record`` fields; None: unreadable, left out)."""
    metadata, spec = _mapping(body.get("metadata")), _mapping(body.get("spec"))
    owner, annotations = _mapping(spec.get("owner")), _mapping(metadata.get("annotations"))
    actor = attribution.parse(annotations, attribution.LAST_CHANGED_BY) if _text_only(annotations) else None
    owner_kind, owner_name = owner.get("kind"), owner.get("name")  # as stored: the apiserver applied the defaults
    return {
        "namespace": _text(metadata.get("namespace")),
        "name": _text(metadata.get("name")),
        "uid": _text(metadata.get("uid")),
        "owner": f"{owner_kind}:{owner_name}" if isinstance(owner_kind, str) and isinstance(owner_name, str) else None,
        "actor": actor.username if actor else None,
        "supervision": _text(_mapping(spec.get("supervision")).get("mode")),
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text_only(values: Mapping[str, Any]) -> TypeGuard[Mapping[str, str]]:
    return all(isinstance(value, str) for value in values.values())


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
