"""The agent key lifecycle as pure decisions: create, keep, rotate, replace; which keys stay published.

Called by the reconciler. The key Secret is the only source of key material: its annotations carry the active
key's ID and creation time, and it keeps the public halves of replaced keys still inside their retirement window,
so a restarted operator converges to exactly one private key per agent whatever step it was killed at. Status
and the ServiceAccount's public-keys annotation are reports of it, never read back (security.md: status is a
report, never an input — a key planted there is published nowhere and verifies nothing).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentid.api.v1alpha1 import Credentials, KeyAlgorithm, KeyState, KeyStatus
from agentid.domain import keys as key_material

MAX_REVOKED_KEY_IDS = 64


@dataclass(frozen=True)
class ObservedKey:
    """The active key as read from the agent's Secret: public information only."""

    key_id: str
    algorithm: KeyAlgorithm
    created_at: dt.datetime
    jwk: Mapping[str, str]
    retiring: tuple[KeyStatus, ...] = ()  # replaced keys, as the Secret records them


class KeyAction(StrEnum):
    KEEP = "Keep"
    CREATE = "Create"  # the agent never had a key
    ROTATE = "Rotate"  # rotationPeriod elapsed
    CHANGE_ALGORITHM = "ChangeAlgorithm"  # spec asks for another algorithm
    REPLACE_LOST = "ReplaceLost"  # the Secret was deleted or its key is unreadable


def key_action(
    credentials: Credentials, observed: ObservedKey | None, *, had_keys: bool, now: dt.datetime
) -> KeyAction:
    if observed is None:
        return KeyAction.REPLACE_LOST if had_keys else KeyAction.CREATE
    if observed.algorithm is not credentials.key_algorithm:
        return KeyAction.CHANGE_ALGORITHM
    if now >= next_rotation(observed, credentials):
        return KeyAction.ROTATE
    return KeyAction.KEEP


def next_rotation(observed: ObservedKey, credentials: Credentials) -> dt.datetime:
    return observed.created_at + credentials.rotation


def retirement_window(credentials: Credentials, allowance: dt.timedelta) -> dt.timedelta:
    """How long a replaced key stays published: every token it signed must have expired by then."""
    return credentials.ttl + allowance


def _active_status(active: ObservedKey) -> KeyStatus:
    return KeyStatus(
        key_id=active.key_id,
        algorithm=active.algorithm,
        created_at=active.created_at,
        state=KeyState.ACTIVE,
        jwk=dict(active.jwk),
    )


def still_published(keys: Sequence[KeyStatus], now: dt.datetime) -> list[KeyStatus]:
    """The keys not past their retirement (the active key never retires)."""
    return [
        key for key in keys if key.state is KeyState.ACTIVE or (key.retires_at is not None and key.retires_at > now)
    ]


def key_statuses(active: ObservedKey, *, now: dt.datetime) -> list[KeyStatus]:
    """The published keys: the active key first, then the replaced keys the Secret keeps, still in their window."""
    retiring = [key for key in active.retiring if key.key_id != active.key_id]
    return still_published([_active_status(active), *retiring], now)


def retiring_after(replaced: ObservedKey | None, *, now: dt.datetime, window: dt.timedelta) -> tuple[KeyStatus, ...]:
    """What the next key's Secret records as retiring: the key it replaces, for ``window`` (every token that key
    signed must have expired by then), and the earlier ones still in their window. A lost key is not kept."""
    if replaced is None:
        return ()
    outgoing = _active_status(replaced).model_copy(update={"state": KeyState.RETIRING, "retires_at": now + window})
    return tuple(still_published([outgoing, *replaced.retiring], now))


def encode_keys(keys: Sequence[KeyStatus]) -> str:
    """Public key records as JSON (the key Secret's history, the ServiceAccount's mirror)."""
    return json.dumps(
        [key.model_dump(mode="json", by_alias=True, exclude_none=True) for key in keys], separators=(",", ":")
    )


def decode_keys(text: str) -> tuple[KeyStatus, ...]:
    """The inverse of ``encode_keys``; raises ValueError on anything else. Each record must be a public JWK whose
    RFC 7638 thumbprint is its key ID, so nothing can ride along under another key's name."""
    records = json.loads(text)
    if not isinstance(records, list):
        raise ValueError("not a list of keys")
    decoded = tuple(KeyStatus.model_validate(record) for record in records)
    for key in decoded:
        if key_material.public_only(key.jwk) != dict(key.jwk) or key_material.thumbprint(key.jwk) != key.key_id:
            raise ValueError(f"key {key.key_id[:12]} is not a public key under its own thumbprint")
    return decoded


def revoked_key_ids(previous: Sequence[str], keys: Sequence[KeyStatus], extra: Sequence[str] = ()) -> list[str]:
    """Record every key ID that was ever published for a revoked agent (bounded, oldest dropped first)."""
    merged = list(dict.fromkeys([*previous, *(key.key_id for key in keys), *extra]))
    return merged[-MAX_REVOKED_KEY_IDS:]


def earliest_retirement(keys: Sequence[KeyStatus]) -> dt.datetime | None:
    times = [key.retires_at for key in keys if key.state is KeyState.RETIRING and key.retires_at]
    return min(times) if times else None
