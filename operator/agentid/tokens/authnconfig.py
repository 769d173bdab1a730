"""kube-apiserver's structured AuthenticationConfiguration for agent tokens (``--authentication-config``).

Called by ``agentid serve --print-authentication-config`` (for cluster admins), the local control plane's test
setup and the demo. What the apiserver makes of an agent token mirrors ``domain.naming``: username
``agent:<namespace>:<name>``, groups ``agentid:agents`` and ``agentid:uid:<agent uid>`` (RBAC binds the UID
group, so a recreated agent of the same name inherits nothing), the agent UID as the user's UID, and ``extra``
with owner, supervision, agent ID and current actor, so the apiserver's audit log names the agent and its owner.
``apiserver.config.k8s.io/v1`` is served by kube-apiserver ≥ 1.34 (checked against the pinned v1.37).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentid.api.v1alpha1 import GROUP
from agentid.domain import naming
from agentid.tokens import defaults

API_VERSION = "apiserver.config.k8s.io/v1"
EXTRA_OWNER = f"{GROUP}/owner"
EXTRA_SUPERVISION = f"{GROUP}/supervision"
EXTRA_AGENT_ID = f"{GROUP}/agent-id"
EXTRA_ACTOR = f"{GROUP}/actor"
DEFAULT_KUBE_AUDIENCE = defaults.DEFAULT_KUBE_AUDIENCE


def jwt_authenticator(issuer: str, *, audiences: Sequence[str], ca_pem: str | None = None) -> dict[str, Any]:
    """One ``jwt`` entry: trust the issuer for ``audiences`` and map agent claims to a Kubernetes user."""
    prefix = naming.AGENT_USERNAME_PREFIX
    issuer_block: dict[str, Any] = {"url": issuer, "audiences": list(audiences), "audienceMatchPolicy": "MatchAny"}
    if ca_pem:
        issuer_block["certificateAuthority"] = ca_pem
    return {
        "issuer": issuer_block,
        "claimValidationRules": [
            {
                "expression": "has(claims.agent) && has(claims.agent.namespace) && has(claims.agent.name) "
                "&& has(claims.agent.uid) && claims.agent.uid != ''",
                "message": "agent tokens carry an agent claim with namespace, name and uid",
            },
            {
                "expression": "!has(claims.agent.supervision) || claims.agent.supervision != 'Suspended'",
                "message": "tokens of suspended agents are not accepted",
            },
        ],
        "claimMappings": {
            "username": {"expression": f"'{prefix}' + claims.agent.namespace + ':' + claims.agent.name"},
            "groups": {
                "expression": f"['{naming.AGENTS_GROUP}', '{naming.AGENT_UID_GROUP_PREFIX}' + claims.agent.uid]"
            },
            "uid": {"expression": "claims.agent.uid"},
            "extra": [
                {"key": EXTRA_OWNER, "valueExpression": "claims.agent.owner.kind + ':' + claims.agent.owner.name"},
                {"key": EXTRA_SUPERVISION, "valueExpression": "claims.agent.supervision"},
                {"key": EXTRA_AGENT_ID, "valueExpression": "claims.sub"},
                {"key": EXTRA_ACTOR, "valueExpression": "has(claims.act) ? claims.act.sub : ''"},
            ],
        },
        "userValidationRules": [
            {
                "expression": "!user.username.startsWith('system:')",
                "message": "agent tokens never map to system: users",
            },
            {
                "expression": "user.groups.all(group, !group.startsWith('system:'))",
                "message": "agent tokens never map to system: groups",
            },
        ],
    }


def authentication_configuration(
    issuer: str,
    *,
    audiences: Sequence[str] = (DEFAULT_KUBE_AUDIENCE,),
    ca_pem: str | None = None,
    others: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The whole file. ``others`` keeps JWT authenticators the cluster already has (the file holds them all)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AuthenticationConfiguration",
        "jwt": [*others, jwt_authenticator(issuer, audiences=audiences, ca_pem=ca_pem)],
    }
