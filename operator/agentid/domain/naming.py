"""Names, labels and identities derived from an agent: one place, so the reconciler, the token service, the
webhook and the CLI always agree on what ``invoice-triage`` is called in every system.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentid.api import v1alpha1

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "agentid-operator"
AGENT_LABEL = f"{v1alpha1.GROUP}/agent"
COMPONENT_LABEL = f"{v1alpha1.GROUP}/component"
MANAGED_SELECTOR = {MANAGED_BY_LABEL: MANAGED_BY}

OWNER_ANNOTATION = f"{v1alpha1.GROUP}/owner"
PURPOSE_ANNOTATION = f"{v1alpha1.GROUP}/purpose"
AGENT_ID_ANNOTATION = f"{v1alpha1.GROUP}/agent-id"
KEY_ID_ANNOTATION = f"{v1alpha1.GROUP}/key-id"
KEY_CREATED_ANNOTATION = f"{v1alpha1.GROUP}/key-created-at"

KEY_SECRET_TYPE = f"{v1alpha1.GROUP}/agent-key"
# Data keys of the agent's key Secret (names of fields, not secrets).
KEY_SECRET_PRIVATE_KEY = "private-key.pem"  # noqa: S105
KEY_SECRET_KEY_ID = "key-id"  # noqa: S105
KEY_SECRET_ALGORITHM = "algorithm"  # noqa: S105
KEY_SECRET_RETIRING = "retiring-keys.json"  # noqa: S105 - public halves of replaced keys still published
# On the agent's ServiceAccount: its published public keys, mirrored from the key Secret for the token service
# (which may read ServiceAccounts but not Secrets). Never read back by the operator.
PUBLIC_KEYS_ANNOTATION = f"{v1alpha1.GROUP}/public-keys"

FIELD_MANAGER = "agentid-operator"
FINALIZER = f"{v1alpha1.GROUP}/cleanup"

# What kube-apiserver makes of an agent token (see tokens.authnconfig): RBAC binds the UID group, so a deleted
# and recreated agent with the same name never inherits the old incarnation's tokens.
AGENT_USERNAME_PREFIX = "agent:"
AGENTS_GROUP = "agentid:agents"
AGENT_UID_GROUP_PREFIX = "agentid:uid:"


def service_account(agent_name: str) -> str:
    return f"{agent_name}-agent"


def key_secret(agent_name: str) -> str:
    return f"{agent_name}-agent-key"


def role(agent_name: str) -> str:
    return f"{agent_name}-agent"


def role_binding(agent_name: str) -> str:
    return f"{agent_name}-agent"


def cluster_role_binding(agent_name: str, cluster_role: str) -> str:
    """A RoleBinding (namespaced) to a ClusterRole. RBAC names are path segments (':' is allowed and Kubernetes' own
    ``system:`` roles use it) while agent names are DNS subdomains (no ':'): splitting at the first ':' gives back
    the agent and the ClusterRole, so no two agents' binding names can ever be equal, and none equals a Role
    binding (``<agent>-agent``, no ':')."""
    return f"{agent_name}-agent:{cluster_role}"


def derived(agent_name: str, cluster_roles: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(kind, name) of every object agentid may create for an agent: what a stranger must not be holding."""
    return [
        ("ServiceAccount", service_account(agent_name)),
        ("Secret", key_secret(agent_name)),
        ("Role", role(agent_name)),
        ("RoleBinding", role_binding(agent_name)),
        *(("RoleBinding", cluster_role_binding(agent_name, name)) for name in cluster_roles),
    ]


def agent_id(trust_domain: str, namespace: str, name: str) -> str:
    """The agent's SPIFFE-style ID: the ``sub`` of its tokens and its identity in audit records."""
    return f"spiffe://{trust_domain}/ns/{namespace}/agent/{name}"


def kube_username(namespace: str, name: str) -> str:
    return f"{AGENT_USERNAME_PREFIX}{namespace}:{name}"


def uid_group(uid: str) -> str:
    return f"{AGENT_UID_GROUP_PREFIX}{uid}"


def service_account_username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account(name)}"


def labels(agent_name: str, component: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, AGENT_LABEL: agent_name, COMPONENT_LABEL: component}
