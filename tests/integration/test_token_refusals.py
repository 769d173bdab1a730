"""Every refusal of the exchange, each with its RFC 6749 error, on the real apiserver."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt
import kubernetes
import pytest
import requests

from agentid.api import v1alpha1
from agentid.domain import claims
from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import MCP, ProvisionedAgent, TokenServiceHandle, provisioned

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {"supervision": {"mode": "Autonomous"}, "credentials": {"audiences": [MCP]}}


def error_of(response: requests.Response) -> tuple[int, str]:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) <= {"error", "error_description", "reason"}
    return response.status_code, body["error"]


def eventually_refused(service: TokenServiceHandle, subject: str, **params: Any) -> requests.Response:
    """Poll the exchange until it is refused (a refused ``Response`` is falsy, so it travels in a list)."""

    def refused() -> list[requests.Response]:
        response = service.exchange(subject, **params)
        return [response] if response.status_code != 200 else []

    return eventually(refused, what="exchange refused")[0]


def test_a_suspended_agent_is_refused_the_moment_its_spec_says_so(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    assert token_service.exchange(subject).status_code == 200
    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident 42"}})
    refused = eventually_refused(token_service, subject)
    assert error_of(refused) == (400, "invalid_grant")
    assert "suspended" in refused.json()["error_description"]


def test_a_revoked_agent_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    agent.patch_spec({"revoked": True, "revocationReason": "leaked"})
    refused = eventually_refused(token_service, subject)
    assert error_of(refused) == (400, "invalid_grant")
    assert "revoked" in refused.json()["error_description"]


def test_an_expired_agent_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    agent.patch_spec({"expiresAt": past})
    refused = eventually_refused(token_service, subject)
    assert error_of(refused) == (400, "invalid_grant")
    assert "expired" in refused.json()["error_description"]


def test_a_service_account_no_agent_is_bound_to_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespaced_service_account(token_namespace, {"metadata": {"name": "plain-workload"}})
    request = {"spec": {"audiences": [token_service.issuer], "expirationSeconds": 600}}
    token = core.create_namespaced_service_account_token("plain-workload", token_namespace, request).status.token
    assert error_of(token_service.exchange(token)) == (400, "invalid_request")


def test_a_service_account_token_for_another_audience_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    for_the_apiserver = agent.service_account_token(cluster.server)
    assert error_of(token_service.exchange(for_the_apiserver)) == (400, "invalid_request")


def test_a_deleted_and_recreated_agent_does_not_honour_the_old_incarnations_tokens(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    old = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    old_subject = old.service_account_token(token_service.issuer)
    old_agent_token = token_service.token(old_subject)
    old_uid = old.uid

    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    custom.delete_namespaced_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, token_namespace, v1alpha1.PLURAL, "triage")
    # The operator's finalizer removes bindings, key and ServiceAccount before the object goes.
    eventually(lambda: token_service.service.agents.get(token_namespace, "triage") is None, what="agent gone")
    new = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    assert new.uid != old_uid

    # The old ServiceAccount token names a UID no agent is bound to (or no longer authenticates at all).
    assert error_of(token_service.exchange(old_subject)) == (400, "invalid_request")
    # The old agent token names the old agent UID: not exchangeable, not active.
    exchanged = token_service.exchange(old_agent_token, subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN)
    assert error_of(exchanged) == (400, "invalid_request")
    assert token_service.introspect(old_agent_token) == {"active": False}
    # The new incarnation works with its own ServiceAccount token.
    assert token_service.exchange(new.service_account_token(token_service.issuer)).status_code == 200


def test_a_status_naming_another_service_account_uid_is_not_matched_by_name(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    """The binding is by UID: a ServiceAccount of the agent's SA name that is not the agent's stays a stranger."""
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespaced_service_account(token_namespace, {"metadata": {"name": "triage-agent"}})
    agent = Agent(cluster, token_namespace, "triage")
    create_agent(cluster, token_namespace, "triage", **SPEC)
    # The operator does not adopt it: the agent says why, and nothing is bound to that ServiceAccount.
    eventually(lambda: agent.condition("Ready").get("reason") == "ServiceAccountConflict", what="conflict")
    assert agent.status()["grantedRules"] == 0
    assert "serviceAccountUID" not in agent.status()
    impostor = ProvisionedAgent(agent).service_account_token(token_service.issuer)
    assert error_of(token_service.exchange(impostor)) == (400, "invalid_request")
    # Once the stranger is gone, the agent gets a ServiceAccount of its own (a new UID) and its access.
    core.delete_namespaced_service_account("triage-agent", token_namespace)
    status = agent.wait_ready()
    assert status["grantedRules"] == 1
    assert (
        status["serviceAccountUID"]
        == core.read_namespaced_service_account("triage-agent", token_namespace).metadata.uid
    )


def test_an_audience_the_agent_does_not_declare_is_refused_with_invalid_target(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    assert error_of(token_service.exchange(subject, audience="https://evil.example")) == (400, "invalid_target")
    assert error_of(token_service.exchange(subject, resource="https://evil.example")) == (400, "invalid_target")


def test_a_lifetime_over_the_token_ttl_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(
        cluster, token_service, token_namespace, "triage", **{**SPEC, "credentials": {"tokenTTL": "5m"}}
    )
    subject = agent.service_account_token(token_service.issuer)
    assert error_of(token_service.exchange(subject, audience=token_service.issuer, expires_in="301")) == (
        400,
        "invalid_request",
    )


def test_malformed_requests_are_refused_with_invalid_request_or_unsupported_grant_type(
    token_service: TokenServiceHandle,
) -> None:
    assert error_of(token_service.post("/token", {"grant_type": "password"})) == (400, "unsupported_grant_type")
    assert error_of(token_service.post("/token", {"grant_type": claims.GRANT_TOKEN_EXCHANGE})) == (
        400,
        "invalid_request",
    )
    assert error_of(token_service.post("/token", {})) == (400, "invalid_request")
    unsupported_type = token_service.exchange("a.b.c", subject_token_type="urn:ietf:params:oauth:token-type:saml2")
    assert error_of(unsupported_type) == (400, "invalid_request")


# -- delegation ---------------------------------------------------------------------------------------------------


def delegation_setup(
    cluster: ClusterHandle, service: TokenServiceHandle, namespace: str, *, max_depth: int = 1
) -> dict[str, Any]:
    allowed = [{"name": "orchestrator"}, {"name": "planner"}]
    subject = provisioned(
        cluster, service, namespace, "triage", **SPEC, delegation={"allowedActors": allowed, "maxDepth": max_depth}
    )
    agents = {"triage": subject}
    for name in ("orchestrator", "planner", "stranger"):
        agents[name] = provisioned(cluster, service, namespace, name, **SPEC)
    return agents


def test_an_allowed_actor_gets_a_token_for_the_subject_with_an_act_claim(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    actor_token = agents["orchestrator"].service_account_token(token_service.issuer)
    delegated = token_service.delegated(handed_over, actor_token)
    payload = jwt.decode(delegated, options={"verify_signature": False})
    assert payload["sub"] == agents["triage"].agent_id
    assert payload["aud"] == MCP
    assert payload["act"]["sub"] == agents["orchestrator"].agent_id
    assert "act" not in payload["act"]
    assert token_service.introspect(delegated)["act"]["sub"] == agents["orchestrator"].agent_id


def test_an_actor_not_in_allowed_actors_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    response = token_service.delegate(handed_over, agents["stranger"].service_account_token(token_service.issuer))
    assert error_of(response) == (400, "invalid_grant")
    assert "allowedActors" in response.json()["error_description"]


def test_a_chain_deeper_than_max_depth_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace, max_depth=1)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    once = token_service.delegated(handed_over, agents["planner"].service_account_token(token_service.issuer))
    twice = token_service.delegate(once, agents["orchestrator"].service_account_token(token_service.issuer))
    assert error_of(twice) == (400, "invalid_grant")
    assert "deep" in twice.json()["error_description"]


def test_a_chain_within_max_depth_nests_act_claims_current_actor_outermost(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace, max_depth=2)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    once = token_service.delegated(handed_over, agents["planner"].service_account_token(token_service.issuer))
    twice = token_service.delegated(once, agents["orchestrator"].service_account_token(token_service.issuer))
    act = jwt.decode(twice, options={"verify_signature": False})["act"]
    assert act["sub"] == agents["orchestrator"].agent_id
    assert act["act"]["sub"] == agents["planner"].agent_id


def test_a_delegated_token_never_widens_the_audience(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    widened = token_service.exchange(
        handed_over,
        subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN,
        audience=token_service.issuer,
        actor_token=agents["orchestrator"].service_account_token(token_service.issuer),
        actor_token_type=claims.TOKEN_TYPE_JWT,
    )
    assert error_of(widened) == (400, "invalid_target")


def test_a_suspended_actor_cannot_act(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agents = delegation_setup(cluster, token_service, token_namespace)
    handed_over = token_service.token(agents["triage"].service_account_token(token_service.issuer), audience=MCP)
    actor_token = agents["orchestrator"].service_account_token(token_service.issuer)
    agents["orchestrator"].patch_spec({"supervision": {"mode": "Suspended"}})

    refused = eventually_refused(
        token_service,
        handed_over,
        subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN,
        actor_token=actor_token,
        actor_token_type=claims.TOKEN_TYPE_JWT,
    )
    assert error_of(refused) == (400, "invalid_grant")
