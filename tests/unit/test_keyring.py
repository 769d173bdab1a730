"""Key lifecycle decisions: when to create, rotate, replace; how long replaced keys stay published."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from agentid.api.v1alpha1 import Credentials, KeyAlgorithm, KeyState, KeyStatus
from agentid.domain import keys
from agentid.domain.keyring import (
    KeyAction,
    ObservedKey,
    decode_keys,
    encode_keys,
    key_action,
    key_statuses,
    retiring_after,
    revoked_key_ids,
)
from tests.support.factories import NOW

HOUR = dt.timedelta(hours=1)


def observed(
    kid: str = "k1", *, age: dt.timedelta = HOUR, algorithm: KeyAlgorithm = KeyAlgorithm.ED25519
) -> ObservedKey:
    return ObservedKey(kid, algorithm, NOW - age, {"kid": kid})


def test_the_first_key_is_created_and_a_lost_one_is_replaced() -> None:
    credentials = Credentials()
    assert key_action(credentials, None, had_keys=False, now=NOW) is KeyAction.CREATE
    assert key_action(credentials, None, had_keys=True, now=NOW) is KeyAction.REPLACE_LOST


def test_keys_rotate_when_their_period_has_elapsed_and_when_the_algorithm_changes() -> None:
    credentials = Credentials(rotation_period="2h")
    assert key_action(credentials, observed(age=HOUR), had_keys=True, now=NOW) is KeyAction.KEEP
    assert key_action(credentials, observed(age=2 * HOUR), had_keys=True, now=NOW) is KeyAction.ROTATE
    es256 = Credentials(key_algorithm=KeyAlgorithm.ES256)
    assert key_action(es256, observed(), had_keys=True, now=NOW) is KeyAction.CHANGE_ALGORITHM


def _status(kid: str, state: KeyState, retires_at: dt.datetime | None = None) -> KeyStatus:
    return KeyStatus(
        key_id=kid,
        algorithm=KeyAlgorithm.ED25519,
        created_at=NOW - HOUR,
        state=state,
        retires_at=retires_at,
        jwk={"kid": kid},
    )


def test_a_replaced_key_retires_for_the_window_then_disappears() -> None:
    window = dt.timedelta(minutes=21)
    new = dataclasses.replace(observed("new"), retiring=retiring_after(observed("old"), now=NOW, window=window))
    after = key_statuses(new, now=NOW)
    assert [(key.key_id, key.state) for key in after] == [("new", KeyState.ACTIVE), ("old", KeyState.RETIRING)]
    assert after[1].retires_at == NOW + window
    # Later passes read the same retirement time from the Secret, then drop the key once it has passed.
    later = key_statuses(new, now=NOW + dt.timedelta(minutes=5))
    assert later[1].retires_at == NOW + window
    assert [key.key_id for key in key_statuses(new, now=NOW + window)] == ["new"]
    # A third key keeps the second retiring, and the first only for what is left of its own window.
    third = retiring_after(new, now=NOW + dt.timedelta(minutes=5), window=window)
    assert [(key.key_id, key.retires_at) for key in third] == [
        ("new", NOW + dt.timedelta(minutes=26)),
        ("old", NOW + window),
    ]


def test_a_lost_key_is_not_kept_published() -> None:
    assert retiring_after(None, now=NOW, window=HOUR) == ()


def test_key_records_round_trip_and_refuse_private_or_misnamed_keys() -> None:
    signing = keys.generate(KeyAlgorithm.ED25519)
    public = keys.public_only(signing.jwk)
    record = _status(signing.key_id, KeyState.RETIRING, NOW).model_copy(update={"jwk": public})
    assert decode_keys(encode_keys([record])) == (record,)
    with pytest.raises(ValueError, match="not a public key under its own thumbprint"):
        decode_keys(encode_keys([record.model_copy(update={"jwk": {**public, "d": "c2VjcmV0"}})]))
    other = keys.public_only(keys.generate(KeyAlgorithm.ED25519).jwk)
    with pytest.raises(ValueError, match="not a public key under its own thumbprint"):
        decode_keys(encode_keys([record.model_copy(update={"jwk": other})]))


def test_revoked_key_ids_accumulate_without_duplicates_and_stay_bounded() -> None:
    keys = [_status("a", KeyState.ACTIVE), _status("b", KeyState.RETIRING, NOW)]
    assert revoked_key_ids(["z", "a"], keys, ["c"]) == ["z", "a", "b", "c"]
    assert len(revoked_key_ids([f"k{i}" for i in range(100)], keys)) == 64
