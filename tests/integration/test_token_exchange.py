"""RFC 8693 exchange on the real apiserver: discovery, JWKS, the agent token's claims, independent verifiers."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from agentid.domain import claims
from agentid.domain.keys import PRIVATE_JWK_MEMBERS
from tests.support.clusters import ClusterHandle
from tests.support.tokens import (
    MCP,
    TokenServiceHandle,
    provisioned,
)

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {
    "supervision": {"mode": "Autonomous"},
    "attributes": {"costCenter": "4711"},
    "credentials": {"tokenTTL": "10m", "audiences": [MCP]},
}


def verify_with_pyjwt(service: TokenServiceHandle, token: str, audience: str = MCP) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    jwks = service.get("/jwks.json").json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    return jwt.decode(token, key, algorithms=[key.algorithm_name], audience=audience, issuer=service.issuer)


def test_discovery_documents_name_the_issuer_and_its_endpoints_exactly(token_service: TokenServiceHandle) -> None:
    issuer = token_service.issuer
    openid = token_service.get("/.well-known/openid-configuration").json()
    oauth = token_service.get("/.well-known/oauth-authorization-server").json()
    for document in (openid, oauth):
        assert document["issuer"] == issuer
        assert document["jwks_uri"] == f"{issuer}/jwks.json"
        assert document["token_endpoint"] == f"{issuer}/token"
        assert document["introspection_endpoint"] == f"{issuer}/introspect"
        assert claims.GRANT_TOKEN_EXCHANGE in document["grant_types_supported"]
    assert openid["id_token_signing_alg_values_supported"] == ["ES256"]


def test_the_jwks_publishes_issuer_keys_without_private_members(token_service: TokenServiceHandle) -> None:
    response = token_service.get("/jwks.json")
    assert response.status_code == 200
    published = response.json()["keys"]
    assert published
    for key in published:
        assert not PRIVATE_JWK_MEMBERS & set(key)
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"


def test_a_service_account_token_is_exchanged_for_an_agent_token_with_the_specified_claims(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "invoice-triage", **SPEC)
    response = token_service.exchange(agent.service_account_token(token_service.issuer), audience=MCP)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["issued_token_type"] == claims.TOKEN_TYPE_ACCESS_TOKEN
    assert 0 < body["expires_in"] <= 600

    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT"
    assert header["alg"] == "ES256"
    payload = verify_with_pyjwt(token_service, token)
    assert payload["iss"] == token_service.issuer
    assert payload["sub"] == agent.agent_id == f"spiffe://cluster.local/ns/{token_namespace}/agent/invoice-triage"
    assert payload["aud"] == MCP
    assert payload["exp"] - payload["iat"] <= 600
    assert payload["nbf"] <= payload["iat"] < payload["exp"]
    assert isinstance(payload["jti"], str)
    assert payload["agent"] == {
        "namespace": token_namespace,
        "name": "invoice-triage",
        "uid": agent.uid,
        "owner": {"kind": "User", "name": "alice@example.com"},
        "supervision": "Autonomous",
        "attributes": {"costCenter": "4711"},
    }
    assert "act" not in payload


def test_every_exchange_issues_a_new_token_id(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    subject = agent.service_account_token(token_service.issuer)
    first, second = (jwt.decode(token_service.token(subject), options={"verify_signature": False}) for _ in range(2))
    assert first["jti"] != second["jti"]


def test_agent_tokens_verify_with_joserfc_and_jwcrypto_from_the_published_discovery_and_jwks(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    discovery = token_service.get("/.well-known/openid-configuration").json()
    jwks = token_service.session.get(discovery["jwks_uri"], verify=token_service.endpoint.ca, timeout=30).json()

    # joserfc
    decoded = joserfc_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": discovery["issuer"]},
        aud={"essential": True, "value": MCP},
        sub={"essential": True, "value": agent.agent_id},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(decoded.claims)
    assert decoded.claims["agent"]["name"] == "triage"

    # jwcrypto
    verified = jwcrypto_jwt.JWT(
        jwt=token,
        key=jwcrypto_jwk.JWKSet.from_json(json.dumps(jwks)),
        algs=["ES256"],
        check_claims={"iss": discovery["issuer"], "aud": MCP, "exp": None, "sub": agent.agent_id},
    )
    assert json.loads(verified.claims)["agent"]["uid"] == agent.uid


def test_a_shorter_lifetime_may_be_requested(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    response = token_service.exchange(agent.service_account_token(token_service.issuer), expires_in="60")
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 60
    payload = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 60


def test_the_agents_own_public_keys_are_published_for_its_assertions(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    response = token_service.get(f"/agents/{token_namespace}/triage/jwks.json")
    assert response.status_code == 200
    (published,) = response.json()["keys"]
    assert published["kid"] == agent.signing_key().key_id
    assert not PRIVATE_JWK_MEMBERS & set(published)
    assert token_service.get(f"/agents/{token_namespace}/nobody/jwks.json").status_code == 404


def test_an_assertion_signed_with_the_agents_own_key_is_exchanged_once(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    assertion = agent.assertion(f"{token_service.issuer}/token")
    form = {"grant_type": claims.GRANT_JWT_BEARER, "assertion": assertion, "audience": MCP}
    response = token_service.post("/token", form)
    assert response.status_code == 200, response.text
    assert verify_with_pyjwt(token_service, response.json()["access_token"])["sub"] == agent.agent_id

    replayed = token_service.post("/token", form)
    # RFC 7523 §3.1: a bad (here: replayed) grant assertion is invalid_grant, HTTP 400 (RFC 6749 §5.2).
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")

    # The same proof works as an RFC 8693 subject token.
    exchanged = token_service.exchange(agent.assertion(token_service.issuer), audience=MCP)
    assert exchanged.status_code == 200, exchanged.text


def test_an_agent_token_can_be_exchanged_for_a_narrower_one(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    spec = {**SPEC, "credentials": {"audiences": [MCP, "https://crm.example"]}}
    agent = provisioned(cluster, token_service, token_namespace, "triage", **spec)
    both = token_service.token(agent.service_account_token(token_service.issuer))
    narrowed = token_service.token(both, subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN, audience=MCP)
    assert verify_with_pyjwt(token_service, narrowed)["aud"] == MCP
