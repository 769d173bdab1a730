"""The issuer key schedule: publish before signing, keep publishing until the last token expired, never reuse."""

from __future__ import annotations

import datetime as dt

import pytest

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import issuer_keys, keys
from agentid.domain.issuer_keys import IssuerKey, RotationPolicy

T0 = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
POLICY = RotationPolicy(
    period=dt.timedelta(days=30), lead=dt.timedelta(minutes=10), max_token_lifetime=dt.timedelta(hours=1)
)


def kids(ring: list[IssuerKey]) -> list[str]:
    return [key.key_id for key in ring]


def test_a_new_keyring_gets_one_key_that_signs_at_once() -> None:
    ring = issuer_keys.plan([], T0, POLICY, keys.generate)
    assert len(ring) == 1
    assert issuer_keys.signing_key(ring, T0) is ring[0]
    assert ring[0].key.algorithm is KeyAlgorithm.ES256


def test_nothing_changes_before_the_rotation_is_due() -> None:
    ring = issuer_keys.plan([], T0, POLICY, keys.generate)
    later = T0 + POLICY.period - POLICY.lead - dt.timedelta(seconds=1)
    assert issuer_keys.plan(ring, later, POLICY, keys.generate) == ring


def test_rotation_publishes_the_successor_before_it_signs_and_keeps_the_old_key_until_its_tokens_expired() -> None:
    ring = issuer_keys.plan([], T0, POLICY, keys.generate)
    old = ring[0]
    due = T0 + POLICY.period - POLICY.lead
    rotated = issuer_keys.plan(ring, due, POLICY, keys.generate)
    successor = rotated[-1]
    assert kids(rotated) == [old.key_id, successor.key_id]

    # Published at once, signing only after the lead time: verifiers have it before any token uses it.
    assert successor.key_id in kids(issuer_keys.published(rotated, due, POLICY))
    assert issuer_keys.signing_key(rotated, due).key_id == old.key_id
    switch = due + POLICY.lead
    assert issuer_keys.signing_key(rotated, switch - dt.timedelta(seconds=1)).key_id == old.key_id
    assert issuer_keys.signing_key(rotated, switch).key_id == successor.key_id

    # The old key's last token (signed just before the switch) lives max_token_lifetime (+ skew): still published.
    last_token_expiry = switch + POLICY.max_token_lifetime
    assert old.key_id in kids(issuer_keys.published(rotated, last_token_expiry, POLICY))
    gone = last_token_expiry + POLICY.retention
    assert kids(issuer_keys.published(rotated, gone, POLICY)) == [successor.key_id]
    assert kids(issuer_keys.plan(rotated, gone, POLICY, keys.generate)) == [successor.key_id]


def test_a_requested_rotation_schedules_one_successor_only() -> None:
    ring = issuer_keys.plan([], T0, POLICY, keys.generate)
    once = issuer_keys.plan(ring, T0, POLICY, keys.generate, rotate=True)
    twice = issuer_keys.plan(once, T0 + dt.timedelta(seconds=1), POLICY, keys.generate, rotate=True)
    assert len(once) == 2
    assert kids(twice) == kids(once)


def test_the_keyring_round_trips_through_its_storage_format() -> None:
    ring = issuer_keys.plan(issuer_keys.plan([], T0, POLICY, keys.generate), T0, POLICY, keys.generate, rotate=True)
    loaded = issuer_keys.load(issuer_keys.dump(ring))
    assert [(key.key_id, key.signs_from, key.signs_until) for key in loaded] == [
        (key.key_id, key.signs_from, key.signs_until) for key in ring
    ]


def test_a_tampered_keyring_is_refused_without_echoing_key_material() -> None:
    ring = issuer_keys.plan([], T0, POLICY, keys.generate)
    data = issuer_keys.dump(ring).replace(ring[0].key_id.encode(), b"A" * 43)
    with pytest.raises(issuer_keys.KeyringError) as raised:
        issuer_keys.load(data)
    assert "PRIVATE" not in str(raised.value)
    with pytest.raises(issuer_keys.KeyringError):
        issuer_keys.load(b"not json")


def test_repr_of_a_key_shows_no_private_material() -> None:
    key = issuer_keys.plan([], T0, POLICY, keys.generate)[0]
    assert "PRIVATE" not in repr(key)
    assert key.key_id in repr(key)
