"""The one door into a pass (agentid.reconcile.controller): every trigger becomes agent keys on the work queue;
passes wait for the complete view, run once per burst with the newest body, and any failure is retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain import projections
from agentid.kube import errors
from agentid.reconcile import controller as controller_module
from agentid.reconcile.controller import Controller
from agentid.reconcile.view import AgentKey, ClusterView, Indexes
from agentid.reconcile.workqueue import WorkQueue
from tests.support.agents import agent_manifest
from tests.support.polling import eventually_async


def _agent(name: str, namespace: str = "finance", *, version: str = "1", **spec: Any) -> dict[str, Any]:
    body = agent_manifest(name, namespace, **spec)
    body["metadata"].update({"uid": f"uid-{name}", "resourceVersion": version})
    return projections.compact_agent(body)


class Recorder:
    """The reconcile function: records passes, fails as told, returns the next delay."""

    def __init__(self) -> None:
        self.passes: list[str] = []
        self.failures: dict[str, BaseException] = {}
        self.delay: float | None = 3600.0

    async def __call__(self, body: Mapping[str, Any]) -> float | None:
        name = body["metadata"]["name"]
        self.passes.append(f"{name}@{body['metadata']['resourceVersion']}")
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure
        return self.delay


def _controller(
    agents: dict[AgentKey, dict[str, Any]], *, ready: asyncio.Event | None = None, **stores: Any
) -> tuple[Controller, Recorder, ClusterView]:
    view = ClusterView(Indexes(agents=dict(agents), **stores))
    recorder = Recorder()

    async def wait_ready() -> None:
        if ready is not None:
            await ready.wait()

    queue: WorkQueue[AgentKey] = WorkQueue(base_delay=0.01, max_delay=0.05)
    controller = Controller(view, reconcile=recorder, queue=queue, workers=2)
    controller.ready = wait_ready  # type: ignore[attr-defined]  # handed to run() by _running
    return controller, recorder, view


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _running(controller: Controller) -> asyncio.Task[None]:
    task = asyncio.create_task(controller.run(controller.ready))  # type: ignore[attr-defined]
    await _settle()
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_passes_wait_for_the_view_then_run_once_per_burst_with_the_newest_body() -> None:
    ready = asyncio.Event()
    agents = {("finance", "triage"): _agent("triage", version="1")}
    controller, recorder, view = _controller(agents, ready=ready)
    task = await _running(controller)
    controller.agent(("finance", "triage"))
    view.indexes.agents = {("finance", "triage"): _agent("triage", version="2")}
    controller.agent(("finance", "triage"))
    await _settle()
    assert recorder.passes == []  # the view is not complete yet

    ready.set()
    await _settle()
    assert recorder.passes == ["triage@2"]
    assert controller.queue.scheduled(("finance", "triage"))  # the next pass (resync) is on the queue's timer
    await _stop(task)


async def test_any_failure_is_retried_with_backoff_and_a_success_resets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    failures = _Recorded()
    controller_logger = logging.getLogger(controller_module.__name__)
    controller_logger.addHandler(failures)
    monkeypatch.setattr(controller_logger, "propagate", False)  # provoked on purpose: not an operator failure
    try:
        agents = {("finance", "triage"): _agent("triage")}
        controller, recorder, _ = _controller(agents)
        recorder.failures["triage"] = RuntimeError("a bug")
        task = await _running(controller)
        controller.agent(("finance", "triage"))

        async def retried() -> bool:
            return recorder.passes[:2] == ["triage@1", "triage@1"]  # the bug did not drop the agent

        await eventually_async(retried, timeout=5, interval=0.01, what="the failed pass is retried")
        assert any("reconcile of finance/triage failed" in line for line in failures.lines)

        recorder.failures["triage"] = errors.ApiError(500, "InternalError", "boom")
        controller.agent(("finance", "triage"))

        async def four() -> bool:
            return len(recorder.passes) == 4

        await eventually_async(four, timeout=5, interval=0.01, what="retried after the API error, then succeeded")
        assert controller.queue.failures(("finance", "triage")) == 0  # the success reset the backoff
        await _stop(task)
    finally:
        controller_logger.removeHandler(failures)


class _Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_a_deleted_agent_drops_its_timers() -> None:
    controller, recorder, _ = _controller({})
    task = await _running(controller)
    controller.queue.add_after(("finance", "gone"), 3600)
    controller.agent(("finance", "gone"))
    await _settle()
    assert recorder.passes == []
    assert not controller.queue.scheduled(("finance", "gone"))
    await _stop(task)


def _policy(name: str, labels: dict[str, str], **spec: Any) -> AgentPolicy:
    return AgentPolicy.from_body(
        {"metadata": {"name": name}, "spec": {"namespaceSelector": {"matchLabels": labels}, **spec}}
    )


async def test_references_map_to_exactly_the_affected_agents() -> None:
    agents = {
        ("finance", "triage"): _agent("triage", clusterRoleRefs=["view"]),
        ("finance", "billing"): _agent("billing"),
        ("sales", "triage"): _agent("triage", "sales"),
    }
    namespaces = {"finance": {"team": "finance"}, "sales": {"team": "sales"}}
    controller, _, _ = _controller(agents, namespaces=namespaces)
    queue = controller.queue

    def taken() -> list[AgentKey]:
        keys = []
        while len(queue):
            keys.append(queue._order.popleft())
            queue._dirty.discard(keys[-1])
        return sorted(keys)

    controller.cluster_role("view")
    assert taken() == [("finance", "triage")]
    controller.namespace("sales")
    assert taken() == [("sales", "triage")]
    old = _policy("p", {"team": "finance"})
    controller.policy(None, old)
    assert taken() == [("finance", "billing"), ("finance", "triage")]
    moved = _policy("p", {"team": "sales"})
    controller.policy(old, moved)  # its old namespace is released, its new one governed
    assert taken() == [("finance", "billing"), ("finance", "triage"), ("sales", "triage")]
    controller.policy(moved, moved.model_copy(update={"generation": 3}))  # status/metadata only: nothing to do
    assert taken() == []
    controller.policy(moved, None)
    assert taken() == [("sales", "triage")]


async def test_with_leader_election_only_agents_of_held_shards_are_reconciled() -> None:
    from agentid.domain.shards import shard_of  # noqa: PLC0415 - local to the one test about shards

    namespaces = [f"team-{i}" for i in range(12)]
    agents = {(ns, "bot"): _agent("bot", ns) for ns in namespaces}
    controller, recorder, _ = _controller(agents)
    controller.shards, controller.held = 3, set()
    task = await _running(controller)
    for key in agents:
        controller.agent(key)
    await _settle()
    assert recorder.passes == []  # a follower starts no pass at all

    controller.shard_acquired(1)  # every agent of the shard is queued from the view
    await _settle()
    in_one = sorted(ns for ns in namespaces if shard_of(ns, 3) == 1)
    assert in_one
    assert len(recorder.passes) == len(in_one)

    controller.shard_lost(1)
    recorder.passes.clear()
    for key in agents:
        controller.agent(key)
    controller.queue.add(("team-0", "bot"))  # a timer set while the shard was held fires: no pass either
    await _settle()
    assert recorder.passes == []
    assert not controller.holds(1)
    await _stop(task)


async def test_a_new_shard_holder_passes_agents_whose_status_is_behind_first() -> None:
    reported = {("team", f"done-{i}"): _agent(f"done-{i}", "team") for i in range(5)}
    for body in reported.values():
        body["metadata"]["generation"] = 2
        body["status"] = {"observedGeneration": 2}
    behind = {("team", "changed"): _agent("changed", "team"), ("team", "new"): _agent("new", "team")}
    behind[("team", "changed")]["metadata"]["generation"] = 3
    behind[("team", "new")]["metadata"]["generation"] = 1  # never reconciled: no status yet
    behind[("team", "changed")]["status"] = {"observedGeneration": 2}
    controller, recorder, _ = _controller({**reported, **behind})
    controller.shards, controller.held = 1, set()
    controller._workers = 1  # one pass at a time: the order passes start in is the queue's
    task = await _running(controller)
    controller.shard_acquired(0)

    async def all_passed() -> bool:
        return len(recorder.passes) == 7

    await eventually_async(all_passed)
    assert {entry.split("@")[0] for entry in recorder.passes[:2]} == {"changed", "new"}
    await _stop(task)
