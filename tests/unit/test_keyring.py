"""Key lifecycle decisions: when to create, rotate, replace; how long replaced keys stay published."""

from __future__ import annotations

import datetime as dt

from agentid.api.v1alpha1 import Credentials, KeyAlgorithm, KeyState, KeyStatus
from agentid.domain.keyring import KeyAction, ObservedKey, key_action, key_statuses, revoked_key_ids
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
    after = key_statuses([_status("old", KeyState.ACTIVE)], observed("new"), now=NOW, window=window)
    assert [(key.key_id, key.state) for key in after] == [("new", KeyState.ACTIVE), ("old", KeyState.RETIRING)]
    assert after[1].retires_at == NOW + window
    # A later pass keeps the retirement time it already had, then drops the key once it has passed.
    later = key_statuses(after, observed("new"), now=NOW + dt.timedelta(minutes=5), window=window)
    assert later[1].retires_at == NOW + window
    gone = key_statuses(after, observed("new"), now=NOW + window, window=window)
    assert [key.key_id for key in gone] == ["new"]


def test_revoked_key_ids_accumulate_without_duplicates_and_stay_bounded() -> None:
    keys = [_status("a", KeyState.ACTIVE), _status("b", KeyState.RETIRING, NOW)]
    assert revoked_key_ids(["z", "a"], keys, ["c"]) == ["z", "a", "b", "c"]
    assert len(revoked_key_ids([f"k{i}" for i in range(100)], keys)) == 64
