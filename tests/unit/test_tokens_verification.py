"""Hostile JWTs are refused before and during signature verification, always with the same opaque refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import get_default_algorithms

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.domain.claims import Reason, Refused
from agentid.tokens import authnconfig, verification

ISSUER = "https://tokens.example"
KEY = keys.generate(KeyAlgorithm.ES256)
OTHER = keys.generate(KeyAlgorithm.ES256)
MAX = 16 * 1024


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "spiffe://x/ns/a/agent/b",
        "aud": "https://mcp.example",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "j",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def sign(payload: dict[str, Any], *, key: keys.SigningKey = KEY, **headers: Any) -> str:
    header = {"kid": KEY.key_id, **headers}
    return jwt.encode(payload, key.private_key, algorithm="ES256", headers=header)


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(payload).encode()), part(signature)])


def check(token: str, *, audience: list[str] | None = None) -> dict[str, Any]:
    return verification.verify(
        token, KEY, issuer=ISSUER, audience=audience, required=verification.AGENT_TOKEN_CLAIMS, max_bytes=MAX
    ).claims


def test_a_well_formed_token_verifies() -> None:
    assert check(sign(claims()), audience=["https://mcp.example"])["jti"] == "j"


def hs256_with_public_key() -> str:
    """The classic confusion: an HMAC keyed with the verifier's public key (as PEM), alg switched to HS256."""
    public_pem = KEY.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": KEY.key_id}, claims()).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


HOSTILE = {
    "alg none": lambda: unsigned({"alg": "none", "kid": KEY.key_id}, claims()),
    "HS256 signed with the public key": hs256_with_public_key,
    "signed by another key under our kid": lambda: sign(claims(), key=OTHER),
    "malformed kid": lambda: sign(claims(), kid="../../etc/passwd"),
    "kid of another key": lambda: sign(claims(), kid=OTHER.key_id),
    "jku header": lambda: sign(claims(), jku="https://evil.example/jwks"),
    "x5u header": lambda: sign(claims(), x5u="https://evil.example/cert"),
    "crit header": lambda: sign(claims(), crit=["exp"]),
    "embedded jwk header": lambda: sign(claims(), jwk=dict(KEY.jwk)),
    "expired beyond the skew": lambda: sign(claims(exp=int(time.time()) - 61)),
    "not yet valid beyond the skew": lambda: sign(claims(nbf=int(time.time()) + 120)),
    "wrong issuer": lambda: sign(claims(iss="https://evil.example")),
    "no exp": lambda: sign(claims(exp=None)),
    "no jti": lambda: sign(claims(jti=None)),
    "garbage": lambda: "not-a-jwt",
    "garbage in three parts": lambda: "a.b.c",
    "oversized": lambda: sign(claims(pad="x" * MAX)),
    "typ not JWT": lambda: sign(claims(), typ="JWE"),
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_tokens_are_refused_with_one_opaque_reason(make: Any) -> None:
    with pytest.raises(Refused) as raised:
        check(make())
    assert raised.value.reason is Reason.INVALID_TOKEN
    assert raised.value.description == "the presented token is not valid"


def test_tokens_within_the_clock_skew_are_accepted() -> None:
    now = int(time.time())
    check(sign(claims(exp=now - 30, nbf=now + 30, iat=now)))


def test_a_wrong_audience_is_refused_when_one_is_required() -> None:
    with pytest.raises(Refused):
        check(sign(claims()), audience=["https://other.example"])


def test_replayed_assertions_are_refused() -> None:
    guard = verification.ReplayGuard(clock=lambda: 1000.0)
    assert guard.first_use("agent", "j1", 1300.0)
    assert not guard.first_use("agent", "j1", 1300.0)
    assert guard.first_use("other-agent", "j1", 1300.0)


def test_the_authentication_configuration_maps_agent_claims_to_a_kubernetes_user() -> None:
    config = authnconfig.authentication_configuration("https://tokens.example", audiences=["kube"], ca_pem="PEM")
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
    (jwt_entry,) = config["jwt"]
    assert jwt_entry["issuer"] == {
        "url": "https://tokens.example",
        "audiences": ["kube"],
        "audienceMatchPolicy": "MatchAny",
        "certificateAuthority": "PEM",
    }
    mappings = jwt_entry["claimMappings"]
    assert mappings["username"]["expression"] == "'agent:' + claims.agent.namespace + ':' + claims.agent.name"
    assert mappings["groups"]["expression"] == "['agentid:agents', 'agentid:uid:' + claims.agent.uid]"
    assert {extra["key"] for extra in mappings["extra"]} >= {"agentid.dev/owner", "agentid.dev/supervision"}


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.ED25519, KeyAlgorithm.RS256])
def test_issued_tokens_are_what_pyjwt_would_sign_byte_for_byte(algorithm: KeyAlgorithm) -> None:
    key = keys.generate(algorithm)  # deterministic signatures: the whole token must be the same
    payload = {**claims(), "agent": {"namespace": "a", "name": "b", "attributes": {"é": "ü"}}, "aud": ["x", "y"]}
    expected = jwt.encode(
        payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id, "typ": "at+jwt"}
    )
    assert keys.sign_jwt(key, payload, typ="at+jwt") == expected


def test_issued_es256_tokens_verify_and_carry_pyjwts_header() -> None:
    token = keys.sign_jwt(KEY, claims(), typ="JWT")
    assert token.split(".")[0] == sign(claims(), typ="JWT").split(".")[0]
    assert check(token, audience=["https://mcp.example"])["jti"] == "j"


def test_es256_signatures_are_raw_r_and_s_of_32_bytes_each_as_pyjwt_verifies_them() -> None:
    verifier = get_default_algorithms()["ES256"]
    public = KEY.private_key.public_key()
    for jti in range(300):  # about two in three hundred have an R or S below 2**248: padded, never shortened
        token = keys.sign_jwt(KEY, {**claims(), "jti": str(jti)}, typ="JWT")
        signing_input, _, signature = token.rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        assert len(raw) == 64
        assert verifier.verify(signing_input.encode(), public, raw)


UNREADABLE = {
    "header not JSON": lambda: "bm90LWpzb24." + sign(claims()).split(".", 1)[1],
    "header a JSON list": lambda: unsigned([], claims()),  # type: ignore[arg-type]
    "payload a JSON string": lambda: unsigned({"alg": "ES256"}, "claims"),  # type: ignore[arg-type]
    "payload not UTF-8": lambda: sign(claims()).split(".")[0] + ".__8." + sign(claims()).split(".")[2],
    "payload of impossible length": lambda: sign(claims()).split(".")[0] + ".abcde." + sign(claims()).split(".")[2],
    "signature of impossible length": lambda: sign(claims()).rsplit(".", 1)[0] + ".abcde",
    "two parts": lambda: sign(claims()).rsplit(".", 1)[0],
}


@pytest.mark.parametrize("make", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_tokens_are_refused_before_routing_as_pyjwt_refuses_them(make: Any) -> None:
    token = make()
    with pytest.raises(jwt.DecodeError):
        jwt.decode(token, options={"verify_signature": False})
    with pytest.raises(Refused) as raised:
        verification.unverified_claims(token, MAX)
    assert raised.value.reason is Reason.INVALID_TOKEN


def test_the_unverified_payload_is_the_one_pyjwt_reads() -> None:
    token = sign(claims(iss="https://sa.example"))
    expected = jwt.decode(token, options={"verify_signature": False})
    assert verification.unverified_claims(token, MAX) == expected
    assert verification.header_of(token, MAX) == jwt.get_unverified_header(token)
