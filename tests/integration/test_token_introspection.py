"""RFC 7662 introspection reflects live agent state: suspension and revocation make tokens inactive at once."""

from __future__ import annotations

from typing import Any

import jwt
import kubernetes
import pytest

from agentid.api import v1alpha1
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import (
    MCP,
    ProvisionedAgent,
    TokenServiceHandle,
    provisioned,
)

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {"supervision": {"mode": "Autonomous"}, "credentials": {"audiences": [MCP]}}


def inactive(service: TokenServiceHandle, token: str) -> bool:
    result = service.introspect(token)
    return result == {"active": False}


def test_an_active_token_is_described_with_its_claims_and_live_supervision(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    issued = jwt.decode(token, options={"verify_signature": False})
    result = token_service.introspect(token)
    assert result["active"] is True
    for name in ("sub", "aud", "iss", "exp", "iat", "jti"):
        assert result[name] == issued[name]
    assert result["agent"]["supervision"] == "Autonomous"

    agent.patch_spec({"supervision": {"mode": "Supervised"}})
    eventually(
        lambda: token_service.introspect(token)["agent"]["supervision"] == "Supervised",
        what="introspection reports the live (stricter) supervision",
    )


def test_a_token_becomes_inactive_right_after_suspension_and_active_again_after_resumption(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    assert token_service.introspect(token)["active"] is True

    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident"}})
    eventually(lambda: inactive(token_service, token), what="inactive after suspension")

    # Resuming is instant for the spec; by hand there is no operator to lag behind, so the token is active again.
    agent.patch_spec({"supervision": {"mode": "Autonomous"}})
    eventually(lambda: token_service.introspect(token)["active"] is True, what="active after resumption")


def test_a_token_becomes_inactive_right_after_revocation(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    agent.patch_spec({"revoked": True, "revocationReason": "key leaked"})
    eventually(lambda: inactive(token_service, token), what="inactive after revocation")


def test_a_token_becomes_inactive_when_its_agent_is_deleted(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    kubernetes.client.CustomObjectsApi(cluster.admin()).delete_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, token_namespace, v1alpha1.PLURAL, "triage"
    )
    eventually(lambda: inactive(token_service, token), what="inactive after deletion")


def _delegation(
    cluster: ClusterHandle, token_service: TokenServiceHandle, namespace: str
) -> tuple[ProvisionedAgent, ProvisionedAgent, str, str]:
    """triage hands a token over to orchestrator: (subject, actor, the handed-over token, the delegated one)."""
    subject = provisioned(
        cluster,
        token_service,
        namespace,
        "triage",
        **SPEC,
        delegation={"allowedActors": [{"name": "orchestrator"}]},
    )
    actor = provisioned(cluster, token_service, namespace, "orchestrator", **SPEC)
    handed_over = token_service.token(subject.service_account_token(token_service.issuer), audience=MCP)
    delegated = token_service.delegated(handed_over, actor.service_account_token(token_service.issuer))
    return subject, actor, handed_over, delegated


def test_a_delegated_token_becomes_inactive_when_its_actor_is_suspended(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    _, actor, handed_over, delegated = _delegation(cluster, token_service, token_namespace)
    assert token_service.introspect(delegated)["active"] is True
    actor.patch_spec({"supervision": {"mode": "Suspended"}})
    eventually(lambda: inactive(token_service, delegated), what="delegated token inactive")
    assert token_service.introspect(handed_over)["active"] is True  # the subject's own token is unaffected


def test_a_delegated_token_becomes_inactive_when_the_actor_is_no_longer_allowed(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    subject, _, _, delegated = _delegation(cluster, token_service, token_namespace)
    subject.patch_spec({"delegation": {"allowedActors": []}})
    eventually(lambda: inactive(token_service, delegated), what="delegated token inactive")


def test_the_token_review_cache_is_dropped_when_the_agent_changes(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    reviewer = token_service.service.reviewer
    token_service.token(subject)
    after_first = reviewer.reviews
    token_service.token(subject)
    assert reviewer.reviews == after_first  # served from the cache (≤ 10 s)

    agent.patch_spec({"attributes": {"changed": "yes"}})
    eventually(
        lambda: token_service.service.agents.get(token_namespace, "triage").spec.attributes == {"changed": "yes"},  # type: ignore[union-attr]
        what="the service saw the change",
    )
    token_service.token(subject)
    assert reviewer.reviews == after_first + 1  # the change dropped the cached review: asked the apiserver again
