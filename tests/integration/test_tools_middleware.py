"""The Starlette/ASGI middleware of agentid.verify in front of a plain HTTP API, against the real token service:
hostile tokens get 401 with the RFC 9728 challenge, rules give 403 insufficient_scope, every decision is audited,
and a JWKS rotation mid-run is picked up by a single refetch."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.domain.issuer_keys import RotationPolicy
from agentid.verify import JWKSCache, JWTVerifier, Policy, Rule, Supervision, Verifier
from agentid.verify.asgi import AgentAuthMiddleware, principal_of
from tests.support.clusters import ClusterHandle
from tests.support.mcp_tools import AsgiThread
from tests.support.polling import eventually
from tests.support.tokens import (
    TokenServiceHandle,
    fresh_endpoint,
    provisioned,
    start_token_service,
    tool_service_account_token,
)

pytestmark = pytest.mark.cluster

POLICY = Policy(
    [
        Rule(name="reads", tools=("GET /*",)),
        Rule(name="payments", tools=("POST /payments",), modes=(Supervision.AUTONOMOUS,)),
    ]
)


async def invoices(request: Request) -> JSONResponse:
    principal = principal_of(request)
    return JSONResponse({"agent": principal.agent_id, "supervision": principal.supervision.value})


class Api:
    """A plain HTTP API behind the middleware, trusting one issuer."""

    def __init__(self, issuer: str, ca: str, *, min_refetch_interval: float = 10.0) -> None:
        self.audit: list[dict[str, Any]] = []
        self.http = httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca), trust_env=False)
        self.keys = JWKSCache(issuer, http=self.http, min_refetch_interval=min_refetch_interval)
        self._thread = AsgiThread(None)
        self.resource = f"{self._thread.url}/api"
        verifier = Verifier(jwt=JWTVerifier(issuer=issuer, audience=self.resource, keys=self.keys))
        routes = [Route("/api/invoices", invoices), Route("/api/payments", invoices, methods=["POST"])]
        app = AgentAuthMiddleware(
            Starlette(routes=routes),
            verifier=verifier,
            resource=self.resource,
            policy=POLICY,
            tool_of=lambda scope: f"{scope['method']} {scope['path'].removeprefix('/api')}",
            audit_sink=self.audit.append,
        )
        self._thread = AsgiThread(app, self._thread.port)
        self._thread.start()

    def get(self, token: str | None, path: str = "/invoices") -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.resource + path, headers=headers, timeout=10)

    def post(self, token: str, path: str = "/payments") -> requests.Response:
        return requests.post(self.resource + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def stop(self) -> None:
        self._thread.stop()


@pytest.fixture(scope="module")
def api(token_service: TokenServiceHandle) -> Iterator[Api]:
    served = Api(token_service.issuer, token_service.endpoint.ca)
    yield served
    served.stop()


def agent_token(
    cluster: ClusterHandle, service: TokenServiceHandle, namespace: str, resource: str, mode: str = "Autonomous"
) -> tuple[Any, str]:
    agent = provisioned(
        cluster,
        service,
        namespace,
        "triage",
        supervision={"mode": mode},
        credentials={"audiences": [resource, "https://elsewhere.example"]},
    )
    return agent, service.token(agent.service_account_token(service.issuer), resource=resource)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_genuine_agent_token_is_admitted_with_its_principal_and_audited(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, api: Api
) -> None:
    agent, token = agent_token(cluster, token_service, token_namespace, api.resource)
    response = api.get(token)
    assert response.status_code == 200, response.text
    assert response.json() == {"agent": agent.agent_id, "supervision": "Autonomous"}
    assert api.post(token).status_code == 200
    record = api.audit[-1]
    assert (record["decision"], record["tool"], record["rule"]) == ("allow", "POST /payments", "payments")
    assert record["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]
    assert token not in str(api.audit)


def test_no_token_gets_the_rfc9728_challenge_and_the_metadata_is_served(
    token_service: TokenServiceHandle, api: Api
) -> None:
    response = api.get(None)
    assert response.status_code == 401
    metadata_url = api.resource.replace("/api", "/.well-known/oauth-protected-resource/api")
    assert response.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata_url}"'
    document = requests.get(metadata_url, timeout=10).json()
    assert document == {
        "resource": api.resource,
        "authorization_servers": [token_service.issuer],
        "bearer_methods_supported": ["header"],
    }


def test_a_supervised_agent_gets_403_insufficient_scope_for_a_write(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, api: Api
) -> None:
    _, token = agent_token(cluster, token_service, token_namespace, api.resource, mode="Supervised")
    assert api.get(token).status_code == 200
    response = api.post(token)
    assert response.status_code == 403
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert "resource_metadata=" in challenge
    assert response.json()["error"] == "insufficient_scope"
    assert api.audit[-1]["decision"] == "deny"
    assert api.audit[-1]["supervision"] == "Supervised"


def test_hostile_tokens_are_refused_with_invalid_token(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, api: Api
) -> None:
    agent, genuine = agent_token(cluster, token_service, token_namespace, api.resource)
    header, payload = jwt.get_unverified_header(genuine), jwt.decode(genuine, options={"verify_signature": False})
    issuer_key = token_service.service.keyring.signing_key()
    foreign = keys.generate(KeyAlgorithm.ES256)
    own = agent.signing_key()
    now = int(time.time())
    head, _, signature = genuine.split(".")
    tampered_payload = {**payload, "agent": {**payload["agent"], "supervision": "Autonomous", "name": "root"}}
    hostile = {
        "alg none": jwt.encode(payload, None, algorithm="none", headers={"kid": header["kid"]}),
        "foreign key under the issuer's kid": jwt.encode(
            payload, foreign.private_key, algorithm="ES256", headers={"kid": header["kid"]}
        ),
        "signed with the agent's own key": jwt.encode(
            payload, own.private_key, algorithm=own.jws_algorithm, headers={"kid": own.key_id}
        ),
        "tampered": f"{head}.{b64(json.dumps(tampered_payload).encode())}.{signature}",
        "expired": jwt.encode(
            {**payload, "exp": now - 120, "iat": now - 700, "nbf": now - 700, "jti": str(uuid.uuid4())},
            issuer_key.private_key,
            algorithm=issuer_key.jws_algorithm,
            headers={"kid": issuer_key.key_id},
        ),
        "wrong audience": token_service.token(
            agent.service_account_token(token_service.issuer), resource="https://elsewhere.example"
        ),
        "garbage": "not.a.token",
    }
    for name, token in hostile.items():
        response = api.get(token)
        assert response.status_code == 401, name
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], name
        assert "resource_metadata=" in response.headers["WWW-Authenticate"], name
        assert response.json()["error_description"] == "the access token is not valid", name  # no detail leaks
        assert api.audit[-1]["decision"] == "deny", name
    reasons = [record["reason"] for record in api.audit[-len(hostile) :]]
    assert "invalid token: expired" in reasons
    assert "invalid token: wrong audience" in reasons
    assert "invalid token: bad signature" in reasons
    assert not any(token in str(api.audit) for token in hostile.values())


def test_a_jwks_rotation_mid_run_is_picked_up_with_one_refetch(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    endpoint = fresh_endpoint()
    secret = f"issuer-tools-{uuid.uuid4().hex[:6]}"
    policy = RotationPolicy(lead=dt.timedelta(seconds=1))
    thread = start_token_service(cluster, endpoint, secret_name=secret, rotation=policy)
    rotating = TokenServiceHandle(endpoint, thread, caller_token=tool_service_account_token(cluster, endpoint.issuer))
    api = Api(rotating.issuer, endpoint.ca, min_refetch_interval=1.0)
    try:
        agent, _ = agent_token(cluster, token_service, token_namespace, api.resource)
        eventually(lambda: rotating.service.agents.get(token_namespace, "triage") is not None, what="rotating sees")
        subject = agent.service_account_token(rotating.issuer)
        old = rotating.token(subject, resource=api.resource)
        assert api.get(old).status_code == 200
        assert api.keys.fetches == 1

        old_kid = jwt.get_unverified_header(old)["kid"]
        rotating.thread.run(rotating.service.keyring.refresh(rotate=True))
        new = eventually(
            lambda: (
                (token := rotating.token(subject, resource=api.resource))
                and jwt.get_unverified_header(token)["kid"] != old_kid
                and token
            ),
            what="a token signed by the new key",
        )
        # The verifier did not know the new kid: it refetches (once the rate limit allows) and admits the token.
        eventually(lambda: api.get(new).status_code == 200, what="the new key is fetched")
        assert api.get(old).status_code == 200  # the old key stays published for its tokens
        assert api.keys.fetches == 2
    finally:
        api.stop()
        rotating.session.close()
        thread.stop()
