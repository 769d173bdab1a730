"""Changing the shard count (a rolling update from --shards 1 to 3, or back) never lets both generations lead: the
base Lease governs the election for every N (``agentid.domain.shards.waits_for``). A replica of a new N takes and
writes nothing while a replica of the old N holds it, and campaigns as soon as that one is gone; the last replica
of a sharded generation to go releases it, one of several leaves it to the others; and a sharded replica starts
no shard unless it renewed the base Lease after taking it (a replica of another N may win it in between)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from agentid.domain import shards
from agentid.domain.shards import ElectionSettings
from agentid.kube.client import KubeClient, load_configuration
from agentid.kube.lease import ShardElector
from tests.support import audit_log
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import FAST_LEASES, OperatorProcess, elected_operator
from tests.support.polling import eventually, eventually_async
from tests.support.replicas import delete_agents, lease_holder, writer_instances

pytestmark = pytest.mark.cluster
BASE = shards.DEFAULT_LEASE


def _lease(cluster: ClusterHandle, namespace: str, name: str) -> kubernetes.client.V1Lease | None:
    try:
        return kubernetes.client.CoordinationV1Api(cluster.admin()).read_namespaced_lease(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _shard_count(cluster: ClusterHandle, namespace: str, name: str) -> str:
    lease = _lease(cluster, namespace, name)
    return str(((lease.metadata.annotations or {}) if lease else {}).get(shards.SHARDS_ANNOTATION, ""))


def _requests_by(cluster: ClusterHandle, instance: str, since: dt.datetime) -> list[tuple[str, str, str]]:
    """(verb, resource, name) of every mutating request ``instance`` made, refused ones included (a lost race for a
    Lease would show as a 409): a replica that waits must not even try. Reviews are questions, not writes."""
    assert cluster.local is not None
    assert cluster.local.audit_log is not None
    return [
        (entry["verb"], str(entry.get("objectRef", {}).get("resource")), str(entry.get("objectRef", {}).get("name")))
        for entry in audit_log.entries(cluster.local.audit_log, since=since)
        if f"({instance})" in str(entry.get("userAgent", ""))
        and entry.get("verb") in audit_log.MUTATING
        and not str(entry.get("objectRef", {}).get("resource", "")).endswith("reviews")
    ]


@pytest.fixture
def agent_namespace(cluster: ClusterHandle, crds: None) -> Iterator[str]:
    """``o-...``: the session operator leaves it alone."""
    name = f"o-reshard-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespace({"metadata": {"name": name, "labels": {"agentid.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)


def test_replicas_of_a_new_shard_count_wait_for_the_old_leader_then_take_every_shard(
    cluster: ClusterHandle, own_operator_namespace: str, agent_namespace: str, tmp_path: Path
) -> None:
    """--shards 1 -> 3, as a rolling update would run them: the old leader first, then a replica of N = 3 beside it."""
    if cluster.local is None or cluster.local.audit_log is None:
        pytest.skip("needs the embedded control plane's audit log (who wrote what)")
    leases = own_operator_namespace
    processes: dict[str, OperatorProcess] = {}

    def start(role: str, count: int) -> str:
        instance = f"{role}-{uuid.uuid4().hex[:4]}"
        processes[instance] = elected_operator(
            cluster.kubeconfig,
            namespaces=[agent_namespace],
            lease_namespace=leases,
            instance=instance,
            log_dir=tmp_path,
            shards=count,
        )
        return instance

    try:
        old = start("shards-1", 1)
        eventually(lambda: lease_holder(cluster, leases) == old, timeout=60, what="the N=1 replica leads")
        assert _shard_count(cluster, leases, BASE) == "1"
        since = dt.datetime.now(dt.UTC)
        new = start("shards-3", 3)
        waiting = "waits for the replicas of shards=1 to go"
        eventually(lambda: waiting in processes[new].output(), timeout=60, what="the N=3 replica waits")
        # An agent created now is the old leader's alone; the newcomer has not written a thing, not even a Lease.
        first = create_agent(cluster, agent_namespace, "before")
        first.wait_ready(timeout=60)
        assert writer_instances(cluster, agent_namespace, since) == {old}
        assert _requests_by(cluster, new, since) == []
        assert all(_lease(cluster, leases, name) is None for name in shards.lease_names(BASE, 3))
        assert processes[new].output().count(waiting) == 1  # said once, not every round

        stopped = time.monotonic()
        processes[old].stop()  # SIGTERM: the old leader releases its Lease on the way out
        names = shards.lease_names(BASE, 3)
        eventually(
            lambda: all(lease_holder(cluster, leases, name) == new for name in (*names, BASE)),
            timeout=60,
            what="the N=3 replica holds every shard and the base Lease",
        )
        print(f"N=1 -> N=3 hand-over: every shard held {time.monotonic() - stopped:.2f}s after SIGTERM")
        assert _shard_count(cluster, leases, BASE) == "3"
        after = dt.datetime.now(dt.UTC)
        second = create_agent(cluster, agent_namespace, "after")
        second.wait_ready(timeout=60)
        assert writer_instances(cluster, agent_namespace, after) == {new}
        delete_agents(cluster, agent_namespace)
    finally:
        for process in processes.values():
            process.kill()
    logs = "".join(process.output() for process in processes.values())
    assert "Traceback" not in logs


# -- in-process electors: the sharded generation going, one replica at a time --------------------------------------


class Log:
    """(instance, 'acquired'|'lost', shard) in order, and what each elector said it waits for."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.waits: dict[str, list[int]] = {}

    def elector(self, client: KubeClient, settings: ElectionSettings, instance: str) -> ShardElector:
        def note(what: str) -> Callable[[int], None]:
            return lambda shard: self.events.append((instance, what, shard))

        return ShardElector(
            client,
            settings,
            instance=instance,
            on_acquired=note("acquired"),
            on_lost=note("lost"),
            on_wait=self.waits.setdefault(instance, []).append,
        )

    def leading(self, instance: str) -> set[int]:
        held: set[int] = set()
        for who, what, shard in self.events:
            if who == instance:
                (held.add if what == "acquired" else held.discard)(shard)
        return held


@pytest.fixture
async def clients(cluster: ClusterHandle) -> AsyncIterator[Callable[[str], KubeClient]]:
    """A client per elector, named by its instance in the User-Agent (the audit log tells them apart)."""
    configuration = await load_configuration(str(cluster.kubeconfig))
    made: list[KubeClient] = []

    def client(instance: str) -> KubeClient:
        made.append(KubeClient(copy.deepcopy(configuration), field_manager="reshard-test", instance=instance))
        return made[-1]

    yield client
    for kube in made:
        await kube.close()


async def _stop(elector: ShardElector, task: asyncio.Task[None]) -> None:
    """A graceful shutdown: the loop ends, then the release (as the operator's cleanup does)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await elector.release()


async def test_a_single_leader_waits_until_the_last_sharded_replica_is_gone(
    cluster: ClusterHandle, own_operator_namespace: str, clients: Callable[[str], KubeClient]
) -> None:
    """--shards 3 -> 1: two replicas of N = 3 share the shards; a replica of N = 1 waits while either leads. The
    first to go leaves the base Lease to the other (it still holds shards); the last releases it."""
    if cluster.local is None or cluster.local.audit_log is None:
        pytest.skip("needs the embedded control plane's audit log (who wrote what)")
    name = f"reshard-{uuid.uuid4().hex[:6]}"
    sharded = ElectionSettings(namespace=own_operator_namespace, name=name, shards=3, timings=FAST_LEASES)
    single = ElectionSettings(namespace=own_operator_namespace, name=name, shards=1, timings=FAST_LEASES)
    log = Log()
    suffix = uuid.uuid4().hex[:4]
    a, b, c = f"sharded-a-{suffix}", f"sharded-b-{suffix}", f"single-{suffix}"
    electors = {a: log.elector(clients(a), sharded, a), b: log.elector(clients(b), sharded, b)}
    tasks = {instance: asyncio.create_task(elector.run()) for instance, elector in electors.items()}
    try:

        async def shared() -> bool:  # every shard led by one of them, both leading
            led = [log.leading(a), log.leading(b)]
            return all(led) and led[0] | led[1] == {0, 1, 2} and not led[0] & led[1]

        await eventually_async(shared, timeout=60, what="the two sharded replicas share the shards")
        since = dt.datetime.now(dt.UTC)
        electors[c] = log.elector(clients(c), single, c)
        tasks[c] = asyncio.create_task(electors[c].run())

        async def waits() -> bool:
            return log.waits.get(c) == [3]

        await eventually_async(waits, timeout=30, what="the N=1 replica waits for the N=3 replicas")
        await _stop(electors[a], tasks.pop(a))

        async def b_leads_all() -> bool:
            return log.leading(b) == {0, 1, 2}

        await eventually_async(b_leads_all, timeout=30, what="the other sharded replica takes the released shards")
        assert log.waits[c] == [3]  # still waiting: a replica of N = 3 still leads
        assert not electors[c].holds(0)
        assert _requests_by(cluster, c, since) == []  # not a write, not an attempt

        await _stop(electors[b], tasks.pop(b))  # the last of its generation: the base Lease is released

        async def c_leads() -> bool:
            return electors[c].holds(0)

        await eventually_async(c_leads, timeout=30, what="the N=1 replica leads")
        assert log.waits[c] == [3, 0]
        assert _shard_count(cluster, own_operator_namespace, name) == "1"
    finally:
        for instance, task in tasks.items():
            await _stop(electors[instance], task)
    # Never two generations at once: the N=1 replica started after both N=3 replicas had stopped every shard.
    started = log.events.index((c, "acquired", 0))
    assert all(who == c for who, _, _ in log.events[started:])
    assert log.leading(a) == set()
    assert log.leading(b) == set()


class RacedElector(ShardElector):
    """Takes its shard Leases, then lets a rival run one round before it renews the base Lease: the moment a
    replica of another shard count can win the base Lease that this one read as free."""

    rival: ShardElector | None = None

    async def _campaign(self, leases: dict[str, Any], now: float) -> None:
        await super()._campaign(leases, now)
        assert self.rival is not None
        await self.rival.round()


async def test_shards_taken_while_another_generation_wins_the_base_lease_are_never_started(
    cluster: ClusterHandle, own_operator_namespace: str, clients: Callable[[str], KubeClient]
) -> None:
    """A sharded replica reconciles a shard only after it renewed the base Lease (its ticket): when a replica of
    N = 1 takes the base Lease between its read and that write, the shards it just wrote are dropped unstarted."""
    name = f"reshard-{uuid.uuid4().hex[:6]}"
    log = Log()
    suffix = uuid.uuid4().hex[:4]
    sharded_name, single_name = f"sharded-{suffix}", f"single-{suffix}"
    single = log.elector(
        clients(single_name),
        ElectionSettings(namespace=own_operator_namespace, name=name, timings=FAST_LEASES),
        single_name,
    )
    sharded = RacedElector(
        clients(sharded_name),
        ElectionSettings(namespace=own_operator_namespace, name=name, shards=3, timings=FAST_LEASES),
        instance=sharded_name,
        on_acquired=lambda shard: log.events.append((sharded_name, "acquired", shard)),
        on_lost=lambda shard: log.events.append((sharded_name, "lost", shard)),
        on_wait=log.waits.setdefault(sharded_name, []).append,
    )
    sharded.rival = single
    await sharded.round()
    assert single.holds(0)  # the rival won the base Lease
    assert [event for event in log.events if event[0] == sharded_name] == []  # no shard was ever started
    assert not any(sharded.holds(shard) for shard in range(3))
    sharded.rival = single  # its next look: it waits for the N = 1 leader (and so never gets to the rival)
    await sharded.round()
    assert log.waits[sharded_name] == [1]
    assert log.events == [(single_name, "acquired", 0)]
    await single.release()
