"""The token issuer's keyring and its rotation schedule: which key signs now, which keys are published, when to
add the next key and when to drop an old one.

Called by ``tokens.keyring`` (which keeps the ring in a Secret) and its unit tests. Pure: time and key generation
are arguments. The two rotation rules of docs/security.md live here: a new key is published ``lead`` before it signs,
and an old key stays published until every token it signed has expired (its last signing instant plus the
longest token lifetime plus clock skew).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.domain.claims import CLOCK_SKEW, MAX_TOKEN_LIFETIME

FORMAT_VERSION = 1


class KeyringError(ValueError):
    """The stored keyring cannot be read; the message never contains key material."""


@dataclass(frozen=True)
class RotationPolicy:
    algorithm: KeyAlgorithm = KeyAlgorithm.ES256
    period: dt.timedelta = dt.timedelta(days=30)  # how long one key signs
    lead: dt.timedelta = dt.timedelta(minutes=10)  # published this long before it signs (verifiers refresh JWKS)
    max_token_lifetime: dt.timedelta = MAX_TOKEN_LIFETIME

    @property
    def retention(self) -> dt.timedelta:
        """How long a key stays published after it last signed."""
        return self.max_token_lifetime + CLOCK_SKEW


@dataclass(frozen=True)
class IssuerKey:
    key: keys.SigningKey
    created_at: dt.datetime
    signs_from: dt.datetime
    signs_until: dt.datetime | None = None  # set when a successor is scheduled: the successor's signs_from

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def published_until(self, policy: RotationPolicy) -> dt.datetime | None:
        return None if self.signs_until is None else self.signs_until + policy.retention

    def __repr__(self) -> str:
        return f"IssuerKey({self.key_id}, signs_from={self.signs_from.isoformat()})"


def signing_key(ring: Sequence[IssuerKey], now: dt.datetime) -> IssuerKey:
    """The key that signs at ``now``: the newest whose signing period has begun."""
    started = [key for key in ring if key.signs_from <= now]
    if not started:
        raise KeyringError("the keyring has no key that may sign yet")
    return max(started, key=lambda key: key.signs_from)


def published(ring: Sequence[IssuerKey], now: dt.datetime, policy: RotationPolicy) -> list[IssuerKey]:
    """Keys in the JWKS at ``now``: scheduled ones (not signing yet) and those whose tokens may still be alive."""
    return [key for key in ring if (until := key.published_until(policy)) is None or until > now]


def plan(
    ring: Sequence[IssuerKey],
    now: dt.datetime,
    policy: RotationPolicy,
    generate: Callable[[KeyAlgorithm], keys.SigningKey],
    *,
    rotate: bool = False,
) -> list[IssuerKey]:
    """The keyring as it should be at ``now``. Returns ``ring`` unchanged (same items) when nothing is due.

    - empty ring: one key that signs at once (no verifier can have cached a JWKS of an issuer without keys);
    - the signing key's period ends within ``lead`` (or ``rotate`` asks for it now): schedule a successor that
      signs ``lead`` from now; the current key signs until then;
    - keys whose last token has expired are dropped.
    """
    if not ring:
        return [IssuerKey(generate(policy.algorithm), created_at=now, signs_from=now)]
    kept = published(ring, now, policy)
    scheduled = [key for key in kept if key.signs_from > now]
    try:
        current = signing_key(kept, now)
    except KeyringError:
        return kept  # only scheduled keys left (clock went backwards?): leave them alone
    due = rotate or current.signs_from + policy.period - policy.lead <= now
    if due and not scheduled:
        successor = IssuerKey(generate(policy.algorithm), created_at=now, signs_from=now + policy.lead)
        kept = [replace(key, signs_until=successor.signs_from) if key is current else key for key in kept]
        kept.append(successor)
    return kept


# -- storage format (the data of the issuer's Secret) -----------------------------------------------------------


def dump(ring: Sequence[IssuerKey]) -> bytes:
    """Serialise the keyring (private keys included) for the issuer's Secret and nothing else."""
    records = [
        {
            "keyID": key.key_id,
            "algorithm": key.key.algorithm.value,
            "createdAt": key.created_at.isoformat(),
            "signsFrom": key.signs_from.isoformat(),
            "signsUntil": key.signs_until.isoformat() if key.signs_until else None,
            "privateKeyPEM": key.key.private_pem().decode(),
        }
        for key in ring
    ]
    return json.dumps({"version": FORMAT_VERSION, "keys": records}, indent=1).encode()


def load(data: bytes) -> list[IssuerKey]:
    """Parse what ``dump`` wrote; a record whose key does not match its key ID is refused."""
    try:
        document: Mapping[str, Any] = json.loads(data)
        ring = [_load_record(record) for record in document["keys"]]
    except (ValueError, KeyError, TypeError) as error:
        raise KeyringError(f"the issuer keyring is unreadable ({type(error).__name__})") from None
    return ring


def _load_record(record: Mapping[str, Any]) -> IssuerKey:
    key = keys.load_pem(str(record["privateKeyPEM"]).encode(), KeyAlgorithm(record["algorithm"]))
    if key.key_id != record["keyID"]:
        raise KeyringError("a stored issuer key does not match its key ID")
    until = record.get("signsUntil")
    return IssuerKey(
        key,
        created_at=dt.datetime.fromisoformat(record["createdAt"]),
        signs_from=dt.datetime.fromisoformat(record["signsFrom"]),
        signs_until=dt.datetime.fromisoformat(until) if until else None,
    )
