"""The agent key lifecycle as pure decisions: create, keep, rotate, replace; which keys stay published.

Called by the reconciler. The key Secret is the source of truth for the active key (its annotations carry the
key ID and creation time), and status mirrors the public halves, so a restarted operator converges to exactly
one private key per agent whatever step it was killed at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agentid.api.v1alpha1 import Credentials, KeyAlgorithm, KeyState, KeyStatus

MAX_REVOKED_KEY_IDS = 64


@dataclass(frozen=True)
class ObservedKey:
    """The active key as read from the agent's Secret: public information only."""

    key_id: str
    algorithm: KeyAlgorithm
    created_at: dt.datetime
    jwk: Mapping[str, str]


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


def key_statuses(
    previous: Sequence[KeyStatus], active: ObservedKey, *, now: dt.datetime, window: dt.timedelta
) -> list[KeyStatus]:
    """The published keys after this pass: the active key first, then keys still inside their window."""
    keys = [
        KeyStatus(
            key_id=active.key_id,
            algorithm=active.algorithm,
            created_at=active.created_at,
            state=KeyState.ACTIVE,
            jwk=dict(active.jwk),
        )
    ]
    for key in previous:
        if key.key_id == active.key_id:
            continue
        retires_at = key.retires_at if key.state is KeyState.RETIRING and key.retires_at else now + window
        if retires_at > now:
            keys.append(key.model_copy(update={"state": KeyState.RETIRING, "retires_at": retires_at}))
    return keys


def revoked_key_ids(previous: Sequence[str], keys: Sequence[KeyStatus], extra: Sequence[str] = ()) -> list[str]:
    """Record every key ID that was ever published for a revoked agent (bounded, oldest dropped first)."""
    merged = list(dict.fromkeys([*previous, *(key.key_id for key in keys), *extra]))
    return merged[-MAX_REVOKED_KEY_IDS:]


def earliest_retirement(keys: Sequence[KeyStatus]) -> dt.datetime | None:
    times = [key.retires_at for key in keys if key.state is KeyState.RETIRING and key.retires_at]
    return min(times) if times else None
