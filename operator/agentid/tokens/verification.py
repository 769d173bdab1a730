"""Verification of the JWTs the token service accepts: its own agent tokens and agents' RFC 7523 assertions.

Called by the exchange and introspection handlers and by ``agentid verify``. Every check of docs/security.md happens
here, before a signature is even tried: size, encoding, forbidden headers (``jku``, ``x5u``, ``x5c``, ``jwk``,
``crit``), ``kid`` shape and presence in the key set, and a header ``alg`` equal to the key's algorithm. pyjwt
then gets exactly one algorithm, taken from the key, so ``none`` and HS256-with-a-public-key cannot verify.
Failures raise one ``claims.invalid_token()`` refusal: the presenter learns nothing about why.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from agentid.domain import claims, keys
from agentid.domain.claims import CLOCK_SKEW

FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit"})
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # an RFC 7638 SHA-256 thumbprint, base64url without padding
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
LEEWAY = int(CLOCK_SKEW.total_seconds())
TYP_JWT = "JWT"
TYP_ACCESS_TOKEN = "at+jwt"  # noqa: S105 - RFC 9068 §2.1 media type
ACCEPTED_TYPES = frozenset({TYP_JWT.lower(), TYP_ACCESS_TOKEN, "application/at+jwt"})
AGENT_TOKEN_CLAIMS = ("exp", "iat", "nbf", "iss", "sub", "jti", "aud")
ASSERTION_CLAIMS = ("exp", "iat", "iss", "sub", "jti", "aud")


@dataclass(frozen=True)
class Verified:
    key_id: str
    claims: dict[str, Any]


def looks_like_jwt(token: str, max_bytes: int) -> bool:
    """Cheap shape check before anything is parsed or sent to the apiserver."""
    return 0 < len(token) <= max_bytes and JWT_SHAPE.fullmatch(token) is not None


def header_of(token: str, max_bytes: int) -> dict[str, Any]:
    """The JOSE header, refused if oversized, malformed, or asking for anything but a known key by ID."""
    if not looks_like_jwt(token, max_bytes):
        raise claims.invalid_token()
    header = _json_segment(token.partition(".")[0])
    if FORBIDDEN_HEADERS & set(header):
        raise claims.invalid_token()
    kid, alg, typ = header.get("kid"), header.get("alg"), header.get("typ")
    if not isinstance(kid, str) or not KID_PATTERN.fullmatch(kid) or not isinstance(alg, str):
        raise claims.invalid_token()
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise claims.invalid_token()
    return header


def unverified_claims(token: str, max_bytes: int) -> dict[str, Any]:
    """The payload, unverified: only to route a token to the right verifier, never to decide anything."""
    if not looks_like_jwt(token, max_bytes):
        raise claims.invalid_token()
    header, payload, signature = token.split(".")
    _json_segment(header)
    try:
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        raise claims.invalid_token() from None
    return _json_segment(payload)


def _json_segment(segment: str) -> dict[str, Any]:
    """One base64url JSON object of a compact JWS, read directly. ``looks_like_jwt`` has vouched for the alphabet;
    pyjwt would decode and scan the whole token, per character in Python, to read one part (a tenth of an exchange's
    CPU, profiled), and it checks everything again when it verifies a signature."""
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):  # bad padding, UTF-8 or JSON; deeply nested JSON too
        raise claims.invalid_token() from None
    if not isinstance(value, dict):
        raise claims.invalid_token()
    return value


def verify(
    token: str,
    key: keys.SigningKey | None,
    *,
    public_jwk: Mapping[str, Any] | None = None,
    issuer: str | None,
    audience: Sequence[str] | None,
    required: Sequence[str],
    max_bytes: int,
) -> Verified:
    """Verify signature and registered claims with the one key the header names (looked up by the caller).

    The algorithm comes from the key itself (its type and curve), never from the token header or the JWK's
    ``alg`` member alone; the header must name exactly that algorithm.
    """
    header = header_of(token, max_bytes)
    if key is not None:
        public: keys.PublicKey = key.private_key.public_key()
        algorithm, key_id = key.jws_algorithm, key.key_id
    elif public_jwk is not None:
        try:
            public = keys.public_key_from_jwk(public_jwk)
        except keys.KeyMaterialError:
            raise claims.invalid_token() from None
        key_algorithm = keys.algorithm_of(public)
        if key_algorithm is None:
            raise claims.invalid_token()
        algorithm, key_id = keys.JWS_ALGORITHM[key_algorithm], str(public_jwk.get("kid") or "")
        if public_jwk.get("alg") not in (None, algorithm):
            raise claims.invalid_token()  # a JWK whose declared alg contradicts its key type
    else:
        raise claims.invalid_token()
    if header["alg"] != algorithm or header["kid"] != key_id or algorithm not in keys.JWS_ALGORITHM.values():
        raise claims.invalid_token()
    try:
        payload = jwt.decode(
            token,
            public,
            algorithms=[algorithm],
            issuer=issuer,
            audience=list(audience) if audience is not None else None,
            leeway=LEEWAY,
            options={"require": list(required), "verify_aud": audience is not None, "strict_aud": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):  # deeply nested JSON too
        raise claims.invalid_token() from None
    if not isinstance(payload.get("sub"), str) or not isinstance(payload.get("jti"), str):
        raise claims.invalid_token()
    return Verified(key_id=key_id, claims=payload)


def agent_reference(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, name, uid) of the ``agent`` claim of one of our tokens."""
    agent = payload.get("agent")
    if not isinstance(agent, Mapping):
        raise claims.invalid_token()
    fields = (agent.get("namespace"), agent.get("name"), agent.get("uid"))
    if not all(isinstance(value, str) and value for value in fields):
        raise claims.invalid_token()
    return (str(fields[0]), str(fields[1]), str(fields[2]))


class ReplayGuard:
    """Remembers the ``jti`` of accepted RFC 7523 assertions until they expire: an assertion is single-use."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    def first_use(self, issuer: str, jti: str, exp: float) -> bool:
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) < now - LEEWAY:
            self._seen.popitem(last=False)
        key = f"{issuer}\x00{jti}"
        if key in self._seen:
            return False
        self._seen[key] = exp
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True
