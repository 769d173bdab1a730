"""Local verification of agent tokens against the issuer's published keys.

Called by the HTTP adapters for every request. Before a signature is tried: size, shape, forbidden headers
(``jku``, ``x5u``, ``x5c``, ``jwk``, ``crit``: the token never chooses its own key), a ``kid`` the issuer publishes,
a header ``alg`` in the allowlist *and* equal to the published key's algorithm. pyjwt then gets exactly that one
algorithm, so ``alg: none`` and HS256-keyed-with-a-public-key cannot verify. Registered claims: exact issuer,
this resource as the audience (only audience unless ``single_audience`` is off), ``exp``/``nbf``/``iat`` with an
explicit skew, ``jti`` and ``sub`` present, and the ``agent`` claim well formed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any

import jwt

from agentid.verify.errors import InvalidToken
from agentid.verify.jwks import JWKSCache
from agentid.verify.principal import AgentPrincipal, MalformedClaims

DEFAULT_ALGORITHMS = frozenset({"ES256", "EdDSA", "RS256", "PS256", "ES384"})
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit"})
ACCEPTED_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MAX_TOKEN_BYTES = 16 * 1024


class JWTVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: JWKSCache,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        skew_seconds: int = 30,
        single_audience: bool = True,
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        if "none" in {algorithm.lower() for algorithm in algorithms} or any(
            algorithm.startswith("HS") for algorithm in algorithms
        ):
            raise ValueError("only asymmetric algorithms may be allowed")
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.algorithms = frozenset(algorithms)
        self.skew_seconds = skew_seconds
        self.single_audience = single_audience
        self.max_token_bytes = max_token_bytes

    async def verify(self, token: str) -> AgentPrincipal:
        """The principal the token speaks for; raises ``InvalidToken`` (or ``IssuerUnavailable``)."""
        header = self.header(token)
        key = await self.keys.key(header["kid"])
        if key is None:
            raise InvalidToken("unknown kid")
        return self.verify_with(token, header, key)

    def header(self, token: str) -> dict[str, Any]:
        if not 0 < len(token) <= self.max_token_bytes or JWT_SHAPE.fullmatch(token) is None:
            raise InvalidToken("not a compact JWS of acceptable size")
        header = _header(token.partition(".")[0])
        if FORBIDDEN_HEADERS & set(header):
            raise InvalidToken("forbidden header")
        kid, alg, typ = header.get("kid"), header.get("alg"), header.get("typ")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise InvalidToken("no usable kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
            raise InvalidToken("unexpected typ")
        return header

    def verify_with(self, token: str, header: dict[str, Any], key: jwt.PyJWK) -> AgentPrincipal:
        """The CPU part of ``verify`` (no I/O): signature, claims, principal."""
        if header["alg"] != key.algorithm_name:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.skew_seconds,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": self.single_audience},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong issuer") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("not yet valid") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken("malformed token") from None
        try:
            return AgentPrincipal.from_claims(claims)
        except MalformedClaims as error:
            raise InvalidToken(f"not an agent token: {error}") from None


def _header(segment: str) -> dict[str, Any]:
    """The JOSE header, read directly (the shape check vouched for the alphabet; pyjwt re-checks everything when
    it verifies): reading it through pyjwt would decode and scan the whole token twice per request."""
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise InvalidToken("unreadable header") from None
    if not isinstance(header, dict):
        raise InvalidToken("unreadable header")
    return header
