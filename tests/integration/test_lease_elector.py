"""The Lease elector (agentid.kube.lease) against the real API server, in-process: candidates racing for a Lease
never both win (optimistic concurrency on resourceVersion), a released Lease is taken at once, and a holder that
cannot renew stops leading before anyone else may start."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable

import pytest

from agentid.domain.shards import ElectionSettings, ElectionTimings
from agentid.kube.client import KubeClient, load_configuration
from agentid.kube.lease import ShardElector
from agentid.kube.resources import LEASES
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually_async

pytestmark = pytest.mark.cluster
TIMINGS = ElectionTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


class Log:
    """(loop time, instance, 'acquired'|'lost', shard) in the order they happened."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, int]] = []

    def callbacks(self, instance: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
        def note(what: str) -> Callable[[int], None]:
            return lambda shard: self.events.append((asyncio.get_running_loop().time(), instance, what, shard))

        return note("acquired"), note("lost")


@pytest.fixture
async def client(cluster: ClusterHandle) -> AsyncIterator[KubeClient]:
    kube = KubeClient(await load_configuration(str(cluster.kubeconfig)), field_manager="lease-test")
    yield kube
    await kube.close()


def _elector(client: KubeClient, settings: ElectionSettings, instance: str, log: Log) -> ShardElector:
    acquired, lost = log.callbacks(instance)
    return ShardElector(client, settings, instance=instance, on_acquired=acquired, on_lost=lost)


async def test_racing_candidates_never_both_win_and_a_released_lease_is_taken_at_once(
    client: KubeClient, own_operator_namespace: str
) -> None:
    settings = ElectionSettings(namespace=own_operator_namespace, name="race", timings=TIMINGS)
    log = Log()
    candidates = [_elector(client, settings, f"candidate-{i}", log) for i in range(5)]
    for _ in range(4):  # every round, all at once: one create (or update) succeeds, the others get 409
        await asyncio.gather(*(candidate.round() for candidate in candidates))
        assert sum(candidate.holds(0) for candidate in candidates) == 1
    (leader,) = [candidate for candidate in candidates if candidate.holds(0)]
    assert [event[1:] for event in log.events] == [(leader.instance, "acquired", 0)]

    await leader.release()  # the holder is emptied: nobody waits for the Lease to expire
    others = [candidate for candidate in candidates if candidate is not leader]
    await asyncio.gather(*(candidate.round() for candidate in others))
    assert sum(candidate.holds(0) for candidate in others) == 1
    assert [event[2] for event in log.events] == ["acquired", "lost", "acquired"]


async def test_a_holder_that_cannot_renew_stops_leading_before_another_takes_over(
    client: KubeClient, own_operator_namespace: str
) -> None:
    settings = ElectionSettings(namespace=own_operator_namespace, name="partition", timings=TIMINGS)
    log = Log()
    holder = _elector(client, settings, "holder", log)
    await holder.round()
    assert holder.holds(0)
    # The holder is cut off from the API server (every request refused at the TCP level) while it keeps running.
    unreachable = copy.deepcopy(client.configuration)
    unreachable.host = "https://127.0.0.1:9"
    cut_off = KubeClient(unreachable, field_manager="lease-test")
    holder.client = cut_off
    follower = _elector(client, settings, "follower", log)
    tasks = [asyncio.create_task(holder.run()), asyncio.create_task(follower.run())]
    try:

        async def taken_over() -> bool:
            return follower.holds(0)

        await eventually_async(taken_over, timeout=30, what="the follower takes the Lease")
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await cut_off.close()
    order = [(instance, what) for _, instance, what, _ in log.events]
    assert order == [("holder", "acquired"), ("holder", "lost"), ("follower", "acquired")]
    lost_at = log.events[1][0]
    taken_at = log.events[2][0]
    assert lost_at < taken_at  # never two leaders: the holder gave up before the follower started
    assert not holder.holds(0)


# A follower that polls only every 30 s (Lease 60 s): whatever it does within a few seconds was not a poll.
SLOW = ElectionTimings(lease_duration=60.0, renew_deadline=40.0, retry_period=30.0)


class CountingElector(ShardElector):
    """Counts its rounds, so a test can tell the round that took a Lease from the first one."""

    rounds = 0

    async def round(self) -> None:
        await super().round()
        self.rounds += 1


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _follower_after_its_first_round(
    client: KubeClient, settings: ElectionSettings, log: Log
) -> tuple[CountingElector, asyncio.Task[None]]:
    acquired, lost = log.callbacks("follower")
    follower = CountingElector(client, settings, instance="follower", on_acquired=acquired, on_lost=lost)
    task = asyncio.create_task(follower.run())

    async def ready() -> bool:
        return follower.rounds == 1 and follower.synced.is_set()

    await eventually_async(ready, timeout=10, what="the follower looked once and watches its Lease")
    assert not follower.holds(0)
    return follower, task


async def test_a_released_lease_is_taken_on_the_watch_event_not_at_the_next_poll(
    client: KubeClient, own_operator_namespace: str
) -> None:
    log = Log()
    settings = ElectionSettings(namespace=own_operator_namespace, name="released", timings=SLOW)
    leader = _elector(client, settings, "leader", log)
    leading = asyncio.create_task(leader.run())
    follower_task: asyncio.Task[None] | None = None
    try:
        await eventually_async(lambda: _holds(leader), timeout=10, what="the leader takes the Lease")
        follower, follower_task = await _follower_after_its_first_round(client, settings, log)
        await _stop(leading)
        await leader.release()
        # The follower's next poll is 30 s or more away and the leader's 60 s Lease would not expire before it:
        # taking the Lease within 10 s was the watch's doing.
        await eventually_async(lambda: _holds(follower), timeout=10, what="the follower takes the released Lease")
        assert follower.rounds == 2  # its first look, then the one the release woke
    finally:
        await _stop(leading)
        if follower_task is not None:
            await _stop(follower_task)
    assert [event[1:3] for event in log.events] == [
        ("leader", "acquired"),
        ("leader", "lost"),
        ("follower", "acquired"),
    ]


async def test_after_a_crash_the_follower_takes_over_when_the_lease_expires_not_at_a_later_poll(
    client: KubeClient, own_operator_namespace: str
) -> None:
    log = Log()
    holder = _elector(
        client, ElectionSettings(namespace=own_operator_namespace, name="crashed", timings=TIMINGS), "holder", log
    )
    holding = asyncio.create_task(holder.run())
    follower_task: asyncio.Task[None] | None = None
    try:
        await eventually_async(lambda: _holds(holder), timeout=10, what="the holder takes the Lease")
        settings = ElectionSettings(namespace=own_operator_namespace, name="crashed", timings=SLOW)
        follower, follower_task = await _follower_after_its_first_round(client, settings, log)
        await _renewed_since(client, settings)  # after the follower's look: only the watch can have seen it
        await _stop(holding)  # a crash: no release, the 3 s Lease must expire
        # The follower's next poll is 30 s or more away: it looked again exactly when the Lease expired.
        await eventually_async(lambda: _holds(follower), timeout=15, what="the follower takes the expired Lease")
        # One look after the first: the watch kept its observation of the holder's renewals current, so the Lease
        # was free at the first expiry it woke for.
        assert follower.rounds == 2
    finally:
        await _stop(holding)
        if follower_task is not None:
            await _stop(follower_task)
    assert [event[1:3] for event in log.events] == [("holder", "acquired"), ("follower", "acquired")]


async def _holds(elector: ShardElector) -> bool:
    return elector.holds(0)


async def _renewed_since(client: KubeClient, settings: ElectionSettings) -> None:
    """Wait for the holder to renew its Lease once more (a changed renewTime)."""
    lease = await client.get(LEASES, settings.name, settings.namespace)
    assert lease is not None
    before = lease["spec"]["renewTime"]

    async def renewed() -> bool:
        lease = await client.get(LEASES, settings.name, settings.namespace)
        return lease is not None and lease["spec"]["renewTime"] != before

    await eventually_async(renewed, timeout=10, what="the holder renews its Lease")


async def test_an_elector_that_may_not_watch_its_lease_still_elects_by_polling(
    client: KubeClient, cluster: ClusterHandle, own_operator_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch only speeds elections up: refused (403), it retries with backoff while polling elects."""
    user, name = "lease-elector-without-watch", "no-watch"
    rights = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}, namespace: {own_operator_namespace}}}
rules:
  - {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create]}}
  - {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, update], resourceNames: [{name}]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}, namespace: {own_operator_namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]
"""
    cluster.kubectl("apply", "-f", "-", input_text=rights)
    restricted = KubeClient(copy.deepcopy(client.configuration), field_manager="lease-test")
    restricted.api.set_default_header("Impersonate-User", user)
    settings = ElectionSettings(namespace=own_operator_namespace, name=name, timings=TIMINGS)
    log = Log()
    first, second = (_elector(restricted, settings, instance, log) for instance in ("first", "second"))
    tasks = [asyncio.create_task(first.run())]
    try:
        await eventually_async(lambda: _holds(first), timeout=10, what="the first elector takes the Lease")
        tasks.append(asyncio.create_task(second.run()))
        await _stop(tasks[0])
        await first.release()
        await eventually_async(lambda: _holds(second), timeout=10, what="the second takes the released Lease")
    finally:
        for task in tasks:
            await _stop(task)
        await restricted.close()
    assert not first.synced.is_set()  # neither ever listed its Lease
    assert not second.synced.is_set()
    assert "watch of leases broke (Forbidden)" in caplog.text
    assert [event[1:3] for event in log.events] == [("first", "acquired"), ("first", "lost"), ("second", "acquired")]
