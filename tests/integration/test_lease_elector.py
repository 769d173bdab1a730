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
