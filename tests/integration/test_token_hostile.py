"""Hostile input at /token and /introspect: always refused, never a 5xx, never a token in the logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from tests.support.clusters import ClusterHandle
from tests.support.tokens import (
    MCP,
    TokenServiceHandle,
    provisioned,
)

pytestmark = pytest.mark.cluster


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


@pytest.fixture
def genuine(cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str) -> dict[str, Any]:
    """A genuine agent token and what an attacker could learn from it (claims, kid, public key)."""
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        supervision={"mode": "Autonomous"},
        credentials={"audiences": [MCP]},
    )
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=MCP)
    return {
        "token": token,
        "claims": jwt.decode(token, options={"verify_signature": False}),
        "header": jwt.get_unverified_header(token),
    }


def hostile_tokens(service: TokenServiceHandle, genuine: dict[str, Any]) -> dict[str, str]:
    payload, header = genuine["claims"], genuine["header"]
    kid = header["kid"]
    public_pem = keys.public_key_from_jwk(
        next(k for k in service.get("/jwks.json").json()["keys"] if k["kid"] == kid)
    ).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    attacker = keys.generate(KeyAlgorithm.ES256)
    now = int(time.time())

    def signed_by_attacker(**changes: Any) -> str:
        return jwt.encode({**payload, **changes}, attacker.private_key, algorithm="ES256", headers={"kid": kid})

    def hs256_with_public_key() -> str:
        signing_input = forge({"alg": "HS256", "typ": "JWT", "kid": kid}, payload).rsplit(".", 1)[0]
        return signing_input + "." + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())

    genuine_parts = genuine["token"].split(".")
    return {
        "alg none": forge({"alg": "none", "typ": "JWT", "kid": kid}, payload),
        "alg none without signature dot": ".".join(forge({"alg": "none", "kid": kid}, payload).split(".")[:2]),
        "HS256 signed with the published public key": hs256_with_public_key(),
        "signed by an attacker under our kid": signed_by_attacker(),
        "unknown kid": jwt.encode(payload, attacker.private_key, algorithm="ES256", headers={"kid": attacker.key_id}),
        "malformed kid": jwt.encode(payload, attacker.private_key, algorithm="ES256", headers={"kid": "' OR 1=1"}),
        "jku pointing elsewhere": jwt.encode(
            payload,
            attacker.private_key,
            algorithm="ES256",
            headers={"kid": attacker.key_id, "jku": "https://evil.example/jwks.json"},
        ),
        "x5u pointing elsewhere": jwt.encode(
            payload, attacker.private_key, algorithm="ES256", headers={"kid": kid, "x5u": "https://evil.example/c"}
        ),
        "crit header": jwt.encode(
            payload, attacker.private_key, algorithm="ES256", headers={"kid": kid, "crit": ["x"]}
        ),
        "genuine header and payload, tampered claims": ".".join(
            [genuine_parts[0], b64(json.dumps({**payload, "sub": "spiffe://evil"}).encode()), genuine_parts[2]]
        ),
        "expired (re-signed by attacker)": signed_by_attacker(exp=now - 3600),
        "wrong issuer": signed_by_attacker(iss="https://evil.example"),
        "wrong audience": signed_by_attacker(aud="https://evil.example"),
        "garbage": "garbage",
        "garbage with dots": "%%%.$$$.###",
        "base64 of nothing": "..",
        "json that is not an object": forge({"alg": "ES256", "kid": kid}, payload).split(".")[0]
        + "."
        + b64(b"[1,2]")
        + ".",
        "invalid utf-8 in the payload": genuine_parts[0] + "." + b64(b"\xff\xfe{") + "." + genuine_parts[2],
        "oversized": genuine["token"] + "A" * (64 * 1024),
        "deeply nested act (beyond the JSON parser's recursion limit)": (
            forge({"alg": "ES256", "kid": kid}, {}).split(".")[0] + "." + b64(nested_json(1500)) + "."
        ),
        "deeply nested header": b64(nested_json(1500)) + "." + b64(b"{}") + ".",
    }


def nested_json(depth: int) -> bytes:
    """``{"act":{"act":...}}`` written as text (json.dumps itself cannot nest that deep)."""
    return b'{"act":' * depth + b"{}" + b"}" * depth


@pytest.fixture
def token_log(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    with caplog.at_level(logging.DEBUG):
        yield lambda: caplog.text


def test_hostile_subject_tokens_are_refused_without_a_5xx_or_a_logged_token(
    token_service: TokenServiceHandle, genuine: dict[str, Any], token_log: Callable[[], str]
) -> None:
    hostile = hostile_tokens(token_service, genuine)
    for name, token in hostile.items():
        response = token_service.exchange(token, audience=MCP)
        # RFC 8693 §2.2.2: an invalid subject_token is invalid_request; RFC 6749 §5.2: HTTP 400.
        assert response.status_code in (400, 413), f"{name}: {response.status_code} {response.text}"
        assert response.json()["error"] == "invalid_request", name
        assert "WWW-Authenticate" not in response.headers, name
    for token in [*hostile.values(), genuine["token"]]:
        signature = token.rsplit(".", 1)[-1]
        assert (signature or token) not in token_log(), "a token reached the logs"


def test_hostile_tokens_are_inactive_at_introspection_without_a_5xx(
    token_service: TokenServiceHandle, genuine: dict[str, Any]
) -> None:
    assert token_service.introspect(genuine["token"])["active"] is True
    for name, token in hostile_tokens(token_service, genuine).items():
        caller = {"Authorization": f"Bearer {token_service.caller_token}"}
        response = token_service.post("/introspect", {"token": token}, headers=caller)
        assert response.status_code in (200, 413), f"{name}: {response.status_code} {response.text}"
        if response.status_code == 200:
            assert response.json() == {"active": False}, name


def test_hostile_actor_tokens_are_refused(token_service: TokenServiceHandle, genuine: dict[str, Any]) -> None:
    for name, token in hostile_tokens(token_service, genuine).items():
        response = token_service.delegate(genuine["token"], token)
        assert response.status_code in (400, 413), f"{name}: {response.status_code}"
        assert response.json()["error"] == "invalid_request", name


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"grant_type=" + b"x" * (128 * 1024), {"Content-Type": "application/x-www-form-urlencoded"}),
        (b'{"grant_type": "x"}', {"Content-Type": "application/json"}),
        (b"grant_type=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"&".join(b"a%d=1" % i for i in range(500)), {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"grant_type=a&grant_type=b", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"%%%%", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"", {}),
    ],
    ids=[
        "body over the size limit",
        "json instead of a form",
        "invalid utf-8",
        "too many fields",
        "a parameter given twice",
        "broken percent-encoding",
        "empty body without content type",
    ],
)
@pytest.mark.parametrize("path", ["/token", "/introspect"])
def test_malformed_bodies_get_a_4xx_in_the_oauth_error_shape(
    token_service: TokenServiceHandle, path: str, body: bytes, headers: dict[str, str]
) -> None:
    response = token_service.post(path, body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"] in ("invalid_request", "unsupported_grant_type", "invalid_client")


def test_unknown_paths_and_methods_are_4xx(token_service: TokenServiceHandle) -> None:
    assert token_service.get("/token").status_code == 405
    assert token_service.get("/nope").status_code == 404
    assert token_service.get("/agents/../../etc/jwks.json").status_code == 404
