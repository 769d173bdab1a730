"""Pure builders of the objects an agent owns, as plain manifests ready for server-side apply.

Called by the reconciler's planner. Each builder returns exactly the fields agentid manages, in the shape the
apiserver returns them, so "desired is contained in observed" means "nothing to write".
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import AgentIdentity, KeyStatus, PolicyRule
from agentid.domain import keyring, naming
from agentid.domain.supervision import Access

Manifest = dict[str, Any]
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"


def owner_reference(agent: AgentIdentity) -> dict[str, Any]:
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "name": agent.name,
        "uid": agent.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(agent: AgentIdentity, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": agent.namespace,
        "labels": naming.labels(agent.name, component),
        "ownerReferences": [owner_reference(agent)],
    }


def service_account(agent: AgentIdentity, agent_id: str, published: Sequence[KeyStatus] = ()) -> Manifest:
    """The agent's ServiceAccount; ``published`` mirrors the key Secret's public keys for the token service."""
    metadata = _metadata(agent, naming.service_account(agent.name), "service-account")
    metadata["annotations"] = {
        naming.OWNER_ANNOTATION: f"{agent.spec.owner.kind}:{agent.spec.owner.name}",
        naming.PURPOSE_ANNOTATION: agent.spec.purpose,
        naming.AGENT_ID_ANNOTATION: agent_id,
        naming.PUBLIC_KEYS_ANNOTATION: keyring.encode_keys(published),
    }
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def key_secret(
    agent: AgentIdentity,
    *,
    private_pem: bytes,
    key_id: str,
    algorithm: str,
    created_at: str,
    retiring: Sequence[KeyStatus] = (),
) -> Manifest:
    """The agent's private key Secret. The key ID and creation time ride along so a restarted operator can
    rebuild the public half and the rotation schedule from the Secret alone (crash consistency); ``retiring``
    keeps the public halves of the keys it replaced, for as long as they stay published."""
    metadata = _metadata(agent, naming.key_secret(agent.name), "key")
    metadata["annotations"] = {naming.KEY_ID_ANNOTATION: key_id, naming.KEY_CREATED_ANNOTATION: created_at}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": naming.KEY_SECRET_TYPE,
        "data": {
            naming.KEY_SECRET_PRIVATE_KEY: base64.b64encode(private_pem).decode(),
            naming.KEY_SECRET_KEY_ID: base64.b64encode(key_id.encode()).decode(),
            naming.KEY_SECRET_ALGORITHM: base64.b64encode(algorithm.encode()).decode(),
            naming.KEY_SECRET_RETIRING: base64.b64encode(keyring.encode_keys(retiring).encode()).decode(),
        },
    }


def _rule(rule: PolicyRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiGroups": list(rule.api_groups),
        "resources": list(rule.resources),
        "verbs": list(rule.verbs),
    }
    if rule.resource_names:
        out["resourceNames"] = list(rule.resource_names)
    return out


def role(agent: AgentIdentity, access: Access) -> Manifest:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": _metadata(agent, naming.role(agent.name), "role"),
        "rules": [_rule(rule) for rule in access.rules],
    }


def subjects(agent: AgentIdentity) -> list[dict[str, Any]]:
    """Who holds the agent's access: its ServiceAccount, and agent JWTs of this incarnation (the UID group)."""
    return [
        {"kind": "ServiceAccount", "name": naming.service_account(agent.name), "namespace": agent.namespace},
        {"kind": "Group", "apiGroup": RBAC_GROUP, "name": naming.uid_group(agent.metadata.uid)},
    ]


def role_binding(agent: AgentIdentity) -> Manifest:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": _metadata(agent, naming.role_binding(agent.name), "binding"),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": naming.role(agent.name)},
        "subjects": subjects(agent),
    }


def cluster_role_binding(agent: AgentIdentity, cluster_role: str) -> Manifest:
    metadata = _metadata(agent, naming.cluster_role_binding(agent.name, cluster_role), "binding")
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": subjects(agent),
    }


def access_objects(agent: AgentIdentity, access: Access) -> list[Manifest]:
    """Role + RoleBinding for the rules (if any), one RoleBinding per granted ClusterRole."""
    objects: list[Manifest] = []
    if access.rules:
        objects += [role(agent, access), role_binding(agent)]
    objects += [cluster_role_binding(agent, name) for name in access.cluster_roles]
    return objects
