"""Three operator processes share the agents by namespace hash (``--shards 3``, one Lease per shard): every agent is
reconciled by exactly one process (the holder of its namespace's shard, per the apiserver's audit log); a process
killed with SIGKILL has its shard taken over once the Lease expires, and a replacement gets a shard back."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from agentid.domain import shards
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorProcess, elected_operator
from tests.support.polling import eventually
from tests.support.replicas import delete_agents, writer_instances

pytestmark = pytest.mark.cluster
SHARDS = 3
PER_SHARD = 2  # namespaces per shard


def holders(cluster: ClusterHandle, namespace: str) -> dict[int, str]:
    """shard -> holder ('' when free or not created yet)."""
    api = kubernetes.client.CoordinationV1Api(cluster.admin())
    leases = {lease.metadata.name: lease for lease in api.list_namespaced_lease(namespace).items}
    names = shards.lease_names(shards.DEFAULT_LEASE, SHARDS)
    return {i: str(leases[name].spec.holder_identity or "") if name in leases else "" for i, name in enumerate(names)}


@pytest.fixture
def agent_namespaces(cluster: ClusterHandle, crds: None) -> Iterator[dict[int, list[str]]]:
    """shard -> namespaces (``o-...``: the session operator leaves them alone), PER_SHARD of each shard."""
    stem = f"o-shard-{uuid.uuid4().hex[:6]}"
    chosen: dict[int, list[str]] = {shard: [] for shard in range(SHARDS)}
    for i in itertools.count():
        name = f"{stem}-{i}"
        if len(chosen[shards.shard_of(name, SHARDS)]) < PER_SHARD:
            chosen[shards.shard_of(name, SHARDS)].append(name)
        if all(len(names) == PER_SHARD for names in chosen.values()):
            break
    core = kubernetes.client.CoreV1Api(cluster.admin())
    for name in itertools.chain.from_iterable(chosen.values()):
        core.create_namespace({"metadata": {"name": name, "labels": {"agentid.dev/test": "true"}}})
    yield chosen
    for name in itertools.chain.from_iterable(chosen.values()):
        core.delete_namespace(name)


def test_three_processes_each_reconcile_their_shards_and_a_killed_one_is_taken_over(
    cluster: ClusterHandle,
    own_operator_namespace: str,
    agent_namespaces: dict[int, list[str]],
    tmp_path: Path,
) -> None:
    if cluster.local is None or cluster.local.audit_log is None:
        pytest.skip("needs the embedded control plane's audit log (who wrote what)")
    leases = own_operator_namespace
    pattern = agent_namespaces[0][0].rsplit("-", 1)[0] + "-*"
    everywhere = list(itertools.chain.from_iterable(agent_namespaces.values()))
    processes: dict[str, OperatorProcess] = {}

    def start(instance: str) -> None:
        processes[instance] = elected_operator(
            cluster.kubeconfig,
            namespaces=[pattern],
            lease_namespace=leases,
            instance=instance,
            log_dir=tmp_path,
            shards=SHARDS,
        )

    def balanced() -> dict[int, str]:
        held = holders(cluster, leases)
        alive = {name for name, process in processes.items() if process.process.poll() is None}
        return held if set(held.values()) == alive and len(alive) == SHARDS else {}

    since = dt.datetime.now(dt.UTC)
    try:
        started = time.monotonic()
        for i in range(SHARDS):
            start(f"replica-{i}-{uuid.uuid4().hex[:4]}")
        # Whoever starts first takes every shard; the others' membership makes it hand shards back.
        owner = eventually(balanced, timeout=90, what="one shard per process")
        print(f"balanced {time.monotonic() - started:.2f}s after starting {SHARDS} processes")
        agents = [create_agent(cluster, ns, f"agent-{j}") for ns in everywhere for j in range(2)]
        for agent in agents:
            agent.wait_ready(timeout=90)

        for shard, namespaces in agent_namespaces.items():
            for ns in namespaces:
                writers = writer_instances(cluster, ns, since)
                assert writers == {owner[shard]}, f"{ns} (shard {shard}) written by {writers}, held by {owner[shard]}"

        # SIGKILL the holder of shard 1: no release, its Lease expires, a survivor takes it.
        victim = owner[1]
        killed = time.monotonic()
        processes[victim].kill()
        survivors = set(processes) - {victim}
        eventually(lambda: holders(cluster, leases)[1] in survivors, timeout=60, what="shard 1 taken over")
        takeover = time.monotonic() - killed
        heir = holders(cluster, leases)[1]
        after = dt.datetime.now(dt.UTC)
        late = create_agent(cluster, agent_namespaces[1][0], "late")
        late.wait_ready(timeout=60)
        assert writer_instances(cluster, late.namespace, after) == {heir}
        print(f"shard take-over after SIGKILL: {takeover:.2f}s")  # the Lease duration (3s here) plus a retry

        # A replacement process joins: the survivor holding two shards gives one back.
        joined = time.monotonic()
        start(f"replacement-{uuid.uuid4().hex[:4]}")
        eventually(balanced, timeout=60, what="one shard per process again")
        print(f"rebalanced {time.monotonic() - joined:.2f}s after a replacement process started")
        for ns in everywhere:
            delete_agents(cluster, ns)
    finally:
        for process in processes.values():
            process.kill()
    logs = "".join(process.output() for process in processes.values())
    assert "Traceback" not in logs
