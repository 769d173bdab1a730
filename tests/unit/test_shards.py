"""Sharding and Lease arithmetic (agentid.domain.shards): stable shards by namespace, Lease names, fair shares,
expiry on the local clock, and election settings that refuse timings which could let two replicas lead."""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from agentid.domain import shards
from agentid.domain.shards import ElectionError, ElectionSettings, ElectionTimings, LeaseRecord


def test_a_namespace_has_one_stable_shard_and_namespaces_spread_over_all_shards() -> None:
    assert shards.shard_of("team-a", 1) == 0
    # sha256, not Python's salted hash(): the same in every process and every release
    assert [shards.shard_of(f"team-{i}", 3) for i in range(6)] == [shards.shard_of(f"team-{i}", 3) for i in range(6)]
    assert shards.shard_of("finance", 7) == int.from_bytes(__import__("hashlib").sha256(b"finance").digest()[:8]) % 7
    spread = collections.Counter(shards.shard_of(f"ns-{i}", 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 850  # roughly even: 1000 each


def test_one_shard_is_plain_leader_election_with_one_lease() -> None:
    assert shards.lease_names("agentid-operator", 1) == ("agentid-operator",)
    assert shards.lease_names("agentid-operator", 3) == (
        "agentid-operator-shard-0",
        "agentid-operator-shard-1",
        "agentid-operator-shard-2",
    )


def test_member_lease_names_are_valid_and_distinct_for_any_instance_name() -> None:
    first = shards.member_lease_name("agentid-operator", "Operator.Host_1")
    second = shards.member_lease_name("agentid-operator", "operator-host-1")
    assert first != second
    assert first.startswith("agentid-operator-member-operator-host-1-")
    assert len(shards.member_lease_name("x", "a" * 300)) == len("x-member-") + 40 + 1 + 8


def test_free_shards_go_to_the_least_loaded_and_two_above_it_gives_one_back() -> None:
    # one replica holds all 3 shards when a second returns: it gives one back, the newcomer takes it
    assert shards.should_give_back(3, {"a": 3, "b": 0})
    assert shards.may_take(0, {"a": 3, "b": 0})
    assert not shards.may_take(3, {"a": 3, "b": 0})
    # 2-1 and 2-1-1 are balanced enough: nobody hands over (no flapping)
    assert not shards.should_give_back(2, {"a": 2, "b": 1})
    assert not shards.should_give_back(2, {"a": 2, "b": 1, "c": 1})
    # a third replica arrives: the one with 2 gives one back
    assert shards.should_give_back(2, {"a": 2, "b": 1, "c": 0})
    # alone: take everything
    assert shards.may_take(2, {"a": 2})


def test_a_lease_is_free_when_released_or_silent_for_its_duration_on_the_local_clock() -> None:
    held = LeaseRecord.from_spec({"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "t"})
    assert not held.free(observed_at=100.0, now=114.9)
    assert held.free(observed_at=100.0, now=115.0)
    assert LeaseRecord.from_spec({"holderIdentity": "", "leaseDurationSeconds": 1}).free(observed_at=100, now=100)
    assert LeaseRecord.from_spec(None).free(observed_at=100, now=100)


def test_the_next_look_is_the_earliest_of_retry_renew_deadline_and_a_foreign_expiry() -> None:
    held = LeaseRecord(holder="other", lease_duration=15.0, renew_time="t1")
    assert held.expiry(100.0) == 115.0
    # A follower that saw the holder renew at 100 tries the moment the Lease expires, not at its next tick.
    assert shards.next_look(looked=101.0, retry_at=122.0, give_up_at=None, expiries=[held.expiry(100.0)]) == 115.0
    assert shards.next_look(looked=101.0, retry_at=103.0, give_up_at=None, expiries=[115.0]) == 103.0
    # A holder looks before its renew deadline passes.
    assert shards.next_look(looked=101.0, retry_at=103.0, give_up_at=102.5, expiries=[115.0]) == 102.5
    # An expiry already past at the last look was judged then: it must not make the loop spin.
    assert shards.next_look(looked=116.0, retry_at=118.0, give_up_at=None, expiries=[115.0]) == 118.0
    # One that passed during the round (after the look) is due at once.
    assert shards.next_look(looked=114.0, retry_at=118.0, give_up_at=None, expiries=[115.0, 130.0]) == 115.0
    assert shards.next_look(looked=0.0, retry_at=2.0, give_up_at=None, expiries=[]) == 2.0


def test_the_lease_spec_a_holder_writes_and_a_release() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    spec = shards.lease_spec("pod-a", 2.5, now, acquired=now, transitions=4)
    assert spec == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 3,
        "acquireTime": "2026-01-02T03:04:05.600000Z",
        "renewTime": "2026-01-02T03:04:05.600000Z",
        "leaseTransitions": 4,
    }
    assert shards.lease_spec("", 1, now, acquired=now, transitions=4)["holderIdentity"] == ""


def test_election_settings_default_to_client_go_and_refuse_timings_that_let_two_lead() -> None:
    settings = ElectionSettings(namespace="agentid-system")
    timings = settings.timings
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15.0, 10.0, 2.0)
    assert settings.lease_names() == ("agentid-operator",)
    with pytest.raises(ElectionError, match="must be longer than the renew deadline"):
        ElectionTimings(lease_duration=10, renew_deadline=10)
    with pytest.raises(ElectionError, match=r"1.2 x the retry period"):
        ElectionTimings(renew_deadline=2, retry_period=2)
    with pytest.raises(ElectionError, match="at least 1"):
        ElectionSettings(namespace="n", shards=0)
    with pytest.raises(ElectionError, match="not a valid Kubernetes name"):
        ElectionSettings(namespace="n", name="Agentid_Operator")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shards=3"], "--shards needs --leader-election (each shard is a Lease)"),
        (["--leader-election", "--renew-deadline=20"], "must be longer than the renew deadline (20s)"),
        (["--leader-election", "--shards=0"], "shards must be at least 1, not 0"),
        (["--leader-election", "--leader-election-name=Op"], "lease name 'Op' is not a valid Kubernetes name"),
    ],
)
def test_agentid_run_refuses_election_settings_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentid.cli import main  # noqa: PLC0415 - the CLI, as a user runs it

    assert main.main(["run", "--kubeconfig=/nonexistent", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error
    assert error.count("\n") == 1


def test_a_replica_waits_while_the_base_lease_is_held_by_replicas_of_another_shard_count() -> None:
    def base(holder: str, count: str | None) -> LeaseRecord:
        annotations = {shards.SHARDS_ANNOTATION: count} if count is not None else None
        return LeaseRecord.from_spec({"holderIdentity": holder, "leaseDurationSeconds": 15}, annotations)

    # The old leader (N = 1) holds it: a replica of N = 3 waits for it; one of N = 1 is simply a follower.
    assert shards.waits_for(base("old-0", "1"), observed_at=100.0, now=110.0, shards=3) == 1
    assert shards.waits_for(base("old-0", "1"), observed_at=100.0, now=110.0, shards=1) is None
    # Written before the guard (no annotation): that was the one leader Lease of N = 1.
    assert base("old-0", None).shards == 1
    assert shards.waits_for(base("old-0", None), observed_at=100.0, now=110.0, shards=3) == 1
    # Symmetric: replicas of N = 3 hold it, a replica of N = 1 (or 4) waits for them.
    assert shards.waits_for(base("new-1", "3"), observed_at=100.0, now=110.0, shards=1) == 3
    assert shards.waits_for(base("new-1", "3"), observed_at=100.0, now=110.0, shards=4) == 3
    assert shards.waits_for(base("new-1", "3"), observed_at=100.0, now=110.0, shards=3) is None
    # Released, expired on this clock, or never written: the other generation is gone.
    assert shards.waits_for(base("", "1"), observed_at=100.0, now=100.0, shards=3) is None
    assert shards.waits_for(base("old-0", "1"), observed_at=100.0, now=115.0, shards=3) is None
    assert shards.waits_for(None, observed_at=0.0, now=0.0, shards=3) is None
    # An unreadable annotation is the leader Lease of old, never a reason to lead beside it.
    assert base("x", "three").shards == 1
    assert base("x", "0").shards == 1
