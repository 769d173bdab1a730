"""The token service's protocol as the agent side speaks it: request forms and the cache of issued tokens.

Pure (no I/O): shared by the sync and async clients and the token sidecar so they cannot drift apart.
RFC 8693 token exchange (own credential; delegation with ``actor_token``) and the RFC 7523 JWT-bearer grant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentid.client import errors

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a URN
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN

Form = list[tuple[str, str]]


@dataclass(frozen=True)
class Proof:
    """How the agent proves itself: a token (its type for RFC 8693) or an RFC 7523 assertion."""

    token: str
    token_type: str = TOKEN_TYPE_JWT
    assertion: bool = False

    def __repr__(self) -> str:  # never print the token
        return f"Proof(token_type={self.token_type!r}, assertion={self.assertion})"


def own_token_form(proof: Proof, audiences: Sequence[str], lifetime: int | None = None) -> Form:
    """A token for the agent itself: exchange its ServiceAccount/agent token, or present its assertion."""
    if proof.assertion:
        form: Form = [("grant_type", GRANT_JWT_BEARER), ("assertion", proof.token)]
    else:
        form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", proof.token),
            ("subject_token_type", proof.token_type),
        ]
    return _finish(form, audiences, lifetime)


def introspection_request(proof: Proof, token: str) -> tuple[Form, dict[str, str]]:
    """RFC 7662 §2.1: the caller authenticates — with its ServiceAccount token as a bearer credential, or with an
    assertion signed by its own key as an RFC 7523 client assertion. Returns the form and the extra headers."""
    if proof.assertion:
        return [
            ("token", token),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", proof.token),
        ], {}
    return [("token", token)], {"Authorization": f"Bearer {proof.token}"}


def delegation_form(
    subject_token: str,
    actor: Proof,
    audiences: Sequence[str],
    *,
    subject_token_type: str = TOKEN_TYPE_ACCESS_TOKEN,
    lifetime: int | None = None,
) -> Form:
    """A token for the subject with this agent as the current actor (``act``), RFC 8693 §2.1."""
    form: Form = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
        ("actor_token", actor.token),
        ("actor_token_type", actor.token_type if not actor.assertion else TOKEN_TYPE_JWT),
    ]
    return _finish(form, audiences, lifetime)


def _finish(form: Form, audiences: Sequence[str], lifetime: int | None) -> Form:
    form += [("audience", audience) for audience in audiences]
    if lifetime is not None:
        form.append(("expires_in", str(lifetime)))
    return form


@dataclass(frozen=True)
class Issued:
    token: str
    issued_at: float
    expires_at: float

    @classmethod
    def of(cls, body: Mapping[str, Any], now: float) -> Issued:
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(expires_in, int) or expires_in <= 0:
            raise errors.TokenServiceUnavailable("the token service answered without access_token/expires_in")
        return cls(token=token, issued_at=now, expires_at=now + expires_in)

    def refresh_at(self, fraction: float, margin: float) -> float:
        """When to replace it: after ``fraction`` of its life, and at least ``margin`` seconds before expiry
        (but never before half its life: a short-lived token must not be refreshed in a hot loop)."""
        lifetime = self.expires_at - self.issued_at
        return self.expires_at - max(min(margin, lifetime / 2), (1 - fraction) * lifetime)

    def __repr__(self) -> str:  # never print the token
        return f"Issued(issued_at={self.issued_at}, expires_at={self.expires_at})"


class TokenCache:
    """Issued tokens by key (an audience, or an audience and a subject token's hash), until they are due.

    An invalidated or due token is no longer handed out but is remembered until it expires: presented back to the
    token service it tells why the agent's own credential stopped working (see ``explanation_form``)."""

    def __init__(self, *, fraction: float = 0.8, margin: float = 30.0, max_entries: int = 256) -> None:
        self.fraction = fraction
        self.margin = margin
        self.max_entries = max_entries
        self._tokens: dict[str, Issued] = {}
        self._stale: set[str] = set()

    def get(self, key: str, now: float) -> str | None:
        issued = self._tokens.get(key)
        if issued is None or key in self._stale or now >= issued.refresh_at(self.fraction, self.margin):
            return None
        return issued.token

    def latest(self, key: str, now: float) -> Issued | None:
        """The last token issued for ``key`` while it has not expired, even if invalidated or due."""
        issued = self._tokens.get(key)
        return issued if issued is not None and now < issued.expires_at else None

    def put(self, key: str, issued: Issued) -> None:
        if len(self._tokens) >= self.max_entries and key not in self._tokens:
            oldest = next(iter(self._tokens))
            self._tokens.pop(oldest)
            self._stale.discard(oldest)
        self._tokens[key] = issued
        self._stale.discard(key)

    def invalidate(self, key: str | None = None) -> None:
        self._stale |= set(self._tokens) if key is None else {key}


def explanation_form(latest: Issued, audience: str) -> Form:
    """After the agent's own credential was refused as invalid (a revoked agent's ServiceAccount is deleted, its
    key too), its last agent token — verified by the token service itself, by the agent's UID — gets the precise
    reason: revoked, expired, suspended."""
    return own_token_form(Proof(latest.token, TOKEN_TYPE_ACCESS_TOKEN), [audience])


def cache_key(audiences: Sequence[str], subject_token: str | None = None) -> str:
    key = "\n".join(audiences)
    if subject_token is not None:
        key += "\n" + hashlib.sha256(subject_token.encode()).hexdigest()
    return key
