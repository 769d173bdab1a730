"""Standards conformance of the token service as tools and their clients meet it (issue 15), each item checked
with an independent client where one exists: RFC 7662 §2.1 caller authentication and expiry without skew,
RFC 6749/8693/7523 refusal codes, RFC 8707 one audience per resource, RFC 9068 access tokens per audience,
client credentials with ``private_key_jwt``, and discovery documents read by the MCP SDK and idpyoidc."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from idpyoidc.message.oidc import ProviderConfigurationResponse
from mcp.shared.auth import OAuthMetadata

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import claims
from agentid.domain.issuer_keys import RotationPolicy
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import (
    MCP,
    ProvisionedAgent,
    TokenServiceHandle,
    fresh_endpoint,
    provisioned,
    start_token_service,
    tool_service_account_token,
)

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {"supervision": {"mode": "Autonomous"}, "credentials": {"audiences": [MCP]}}
CLIENT_ASSERTION = {"client_assertion_type": claims.CLIENT_ASSERTION_TYPE}


def client_assertion(agent: ProvisionedAgent, audience: str) -> dict[str, str]:
    return {**CLIENT_ASSERTION, "client_assertion": agent.assertion(audience)}


# -- introspection ------------------------------------------------------------------------------------------------


def test_introspection_refuses_unauthenticated_callers_with_invalid_client_and_a_challenge(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    for_the_apiserver = tool_service_account_token(cluster, cluster.server)
    attempts: dict[str, dict[str, str]] = {
        "no authentication": {},
        "garbage bearer": {"Authorization": "Bearer not-a-token"},
        "basic scheme": {"Authorization": "Basic dG9vbDpwYXNzd29yZA=="},
        "ServiceAccount token for another audience": {"Authorization": f"Bearer {for_the_apiserver}"},
        "an agent token as the caller": {"Authorization": f"Bearer {token}"},
    }
    for name, headers in attempts.items():
        response = token_service.post("/introspect", {"token": token}, headers=headers)
        assert response.status_code == 401, name
        assert response.json()["error"] == "invalid_client", name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert "active" not in response.json(), name
    assert token_service.introspect(token)["active"] is True  # the tool's own ServiceAccount token works


def test_an_agent_may_introspect_with_a_client_assertion_once(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    proof = client_assertion(agent, f"{token_service.issuer}/introspect")
    response = token_service.post("/introspect", {"token": token, **proof})
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True
    replayed = token_service.post("/introspect", {"token": token, **proof})
    assert (replayed.status_code, replayed.json()["error"]) == (401, "invalid_client")
    both = token_service.post(
        "/introspect",
        {"token": token, **client_assertion(agent, token_service.issuer)},
        headers={"Authorization": f"Bearer {token_service.caller_token}"},
    )
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")  # RFC 6749 §2.3: one method


def test_a_token_is_inactive_as_soon_as_its_exp_has_passed(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    """RFC 7662: the issuer knows its own clock; no skew allowance on its own ``exp``."""
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP, expires_in="2")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert token_service.introspect(token)["active"] is True
    eventually(lambda: time.time() >= exp, what="the token's exp passes")
    assert token_service.introspect(token) == {"active": False}
    # Exchanging it is refused too (as a subject token, invalid_request).
    refused = token_service.exchange(token, subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")


# -- token endpoint -----------------------------------------------------------------------------------------------


def test_refusal_codes_follow_rfc_6749_8693_and_7523(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    bad_subject = token_service.exchange("e30.e30.", audience=MCP)
    assert (bad_subject.status_code, bad_subject.json()["error"]) == (400, "invalid_request")
    bad_grant = token_service.post("/token", {"grant_type": claims.GRANT_JWT_BEARER, "assertion": "e30.e30."})
    assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "invalid_grant")
    bad_client = token_service.post(
        "/token", {"grant_type": claims.GRANT_CLIENT_CREDENTIALS, **CLIENT_ASSERTION, "client_assertion": "e30.e30."}
    )
    assert (bad_client.status_code, bad_client.json()["error"]) == (401, "invalid_client")
    assert bad_client.headers["WWW-Authenticate"].startswith("Bearer")
    for response in (bad_subject, bad_grant):
        assert "WWW-Authenticate" not in response.headers
    wrong_client_id = token_service.post(
        "/token",
        {
            "grant_type": claims.GRANT_CLIENT_CREDENTIALS,
            "client_id": "spiffe://cluster.local/ns/x/agent/y",
            **client_assertion(agent, token_service.issuer),
        },
    )
    assert (wrong_client_id.status_code, wrong_client_id.json()["error"]) == (401, "invalid_client")


def test_client_credentials_with_the_agents_key_and_a_resource_yield_a_token_for_exactly_that_resource(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    form = {
        "grant_type": claims.GRANT_CLIENT_CREDENTIALS,
        "client_id": agent.agent_id,
        "resource": MCP,
        **client_assertion(agent, token_service.issuer),
    }
    response = token_service.post("/token", form)
    assert response.status_code == 200, response.text
    issued = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert (issued["sub"], issued["aud"]) == (agent.agent_id, MCP)


def test_a_resource_yields_exactly_one_audience(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        supervision={"mode": "Autonomous"},
        credentials={"audiences": [MCP, "https://crm.example"]},
    )
    subject = agent.service_account_token(token_service.issuer)
    issued = jwt.decode(token_service.token(subject, resource=MCP), options={"verify_signature": False})
    assert issued["aud"] == MCP
    for extra in ({"resource": [MCP, "https://crm.example"]}, {"resource": MCP, "audience": "https://crm.example"}):
        refused = token_service.exchange(subject, **extra)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target"), extra


@pytest.fixture
def profiled_service(cluster: ClusterHandle, token_service: TokenServiceHandle) -> Iterator[TokenServiceHandle]:
    """A token service minting RFC 9068 access tokens for MCP only (its own keyring Secret)."""
    endpoint = fresh_endpoint()
    thread = start_token_service(
        cluster, endpoint, secret_name=f"issuer-at-{uuid.uuid4().hex[:6]}", access_token_audiences=(MCP,)
    )
    yield TokenServiceHandle(endpoint, thread)
    thread.stop()


def test_rfc9068_access_tokens_are_minted_per_audience_and_never_mixed(
    cluster: ClusterHandle,
    token_namespace: str,
    token_service: TokenServiceHandle,
    profiled_service: TokenServiceHandle,
) -> None:
    service = profiled_service
    kube = "https://kubernetes.default.svc"
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        supervision={"mode": "Autonomous"},
        credentials={"audiences": [MCP, kube]},
    )
    eventually(lambda: service.service.agents.get(token_namespace, "triage") is not None, what="service sees agent")
    subject = agent.service_account_token(service.issuer)
    for_the_tool = service.token(subject, resource=MCP)
    assert jwt.get_unverified_header(for_the_tool)["typ"] == "at+jwt"
    payload = jwt.decode(for_the_tool, options={"verify_signature": False})
    assert payload["client_id"] == agent.agent_id
    assert payload["aud"] == MCP
    for_the_apiserver = service.token(subject, audience=kube)
    assert jwt.get_unverified_header(for_the_apiserver)["typ"] == "JWT"
    assert "client_id" not in jwt.decode(for_the_apiserver, options={"verify_signature": False})
    mixed = service.exchange(subject, audience=[MCP, kube])
    assert (mixed.status_code, mixed.json()["error"]) == (400, "invalid_target")
    # An at+jwt token is itself exchangeable (narrowing keeps the profile of its one audience).
    narrowed = service.token(for_the_tool, subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN)
    assert jwt.get_unverified_header(narrowed)["typ"] == "at+jwt"


# -- discovery ----------------------------------------------------------------------------------------------------


def test_discovery_documents_as_the_mcp_sdk_and_idpyoidc_read_them(token_service: TokenServiceHandle) -> None:
    oauth = token_service.get("/.well-known/oauth-authorization-server").json()
    openid = token_service.get("/.well-known/openid-configuration").json()
    for document in (oauth, openid):
        parsed = OAuthMetadata.model_validate(document)  # the MCP client discards metadata its model rejects
        assert str(parsed.token_endpoint) == f"{token_service.issuer}/token"
        assert str(parsed.introspection_endpoint) == f"{token_service.issuer}/introspect"
        assert claims.GRANT_CLIENT_CREDENTIALS in document["grant_types_supported"]
        assert document["token_endpoint_auth_methods_supported"] == ["none", "private_key_jwt"]
    # Strict OIDC: the only objection is RS256, which ES256 keys cannot truthfully claim (see metadata.py).
    with pytest.raises(ValueError, match="RS256 missing"):
        ProviderConfigurationResponse(**openid).verify()
    # The authorization endpoint exists and refuses, per RFC 6749 §4.1.2.1, without redirecting anywhere.
    authorize = token_service.get("/authorize?response_type=code&client_id=x&redirect_uri=https://evil.example/cb")
    assert authorize.status_code == 400
    assert authorize.json()["error"] == "unsupported_response_type"
    assert "Location" not in authorize.headers


def test_an_issuer_with_rs256_keys_satisfies_idpyoidc(
    cluster: ClusterHandle, token_service: TokenServiceHandle
) -> None:
    endpoint = fresh_endpoint()
    thread = start_token_service(
        cluster,
        endpoint,
        secret_name=f"issuer-rs-{uuid.uuid4().hex[:6]}",
        rotation=RotationPolicy(algorithm=KeyAlgorithm.RS256, lead=dt.timedelta(seconds=1)),
    )
    try:
        service = TokenServiceHandle(endpoint, thread)
        assert ProviderConfigurationResponse(**service.get("/.well-known/openid-configuration").json()).verify()
    finally:
        thread.stop()
