"""The agents' watch keeps the index and queues passes, level-triggered (agentid.reconcile.agentwatch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from agentid.domain import projections
from agentid.reconcile.agentwatch import AgentWatch
from tests.support.agents import agent_manifest


def _watch(*, patterns: tuple[str, ...] = (), ready: asyncio.Event | None = None) -> tuple[AgentWatch, list[str]]:
    passes: list[str] = []

    async def reconcile(body: Mapping[str, Any]) -> None:
        passes.append(f"{body['metadata']['name']}@{body['metadata']['resourceVersion']}")

    async def wait_ready() -> None:
        if ready is not None:
            await ready.wait()

    watch = AgentWatch(
        client=None,  # type: ignore[arg-type]  # listing and events are fed directly
        reconcile=reconcile,
        ready=wait_ready,
        namespaces=patterns,
        all_namespaces=not patterns,
        workers=2,
    )
    return watch, passes


def _agent(name: str, namespace: str = "finance", *, version: str = "1", uid: str | None = None) -> dict[str, Any]:
    body = agent_manifest(name, namespace)
    body["metadata"].update({"uid": uid or f"uid-{name}", "resourceVersion": version})
    return projections.compact_agent(body)


def _queued(watch: AgentWatch) -> list[tuple[str, str]]:
    return sorted(watch._queued)


def test_a_relisting_queues_only_what_changed_and_drops_what_is_gone() -> None:
    watch, _ = _watch()
    watch._replace(None, [_agent("triage"), _agent("billing")])
    assert _queued(watch) == [("finance", "billing"), ("finance", "triage")]

    watch._queued.clear()
    watch._replace(None, [_agent("triage", version="7")])
    assert _queued(watch) == [("finance", "triage")]
    assert sorted(watch.index) == [("finance", "triage")]
    assert watch.index[("finance", "triage")][0]["metadata"]["resourceVersion"] == "7"


def test_a_deletion_removes_the_agent_only_if_it_is_the_same_object() -> None:
    watch, _ = _watch()
    watch._changed("ADDED", _agent("triage", uid="new"))
    watch._changed("DELETED", _agent("triage", uid="old"))  # a late event of an earlier agent of that name
    assert ("finance", "triage") in watch.index
    watch._changed("DELETED", _agent("triage", uid="new"))
    assert ("finance", "triage") not in watch.index


def test_glob_patterns_keep_other_namespaces_out() -> None:
    watch, _ = _watch(patterns=("fin*",))
    watch._replace(None, [_agent("triage"), _agent("triage", "sales")])
    watch._changed("ADDED", _agent("billing", "sales"))
    assert sorted(watch.index) == [("finance", "triage")]
    assert _queued(watch) == [("finance", "triage")]


async def test_passes_wait_until_ready_and_reconcile_the_newest_body_once() -> None:
    ready = asyncio.Event()
    watch, passes = _watch(ready=ready)
    workers = asyncio.gather(*(watch._work() for _ in range(2)))
    watch._changed("ADDED", _agent("triage", version="1"))
    watch._changed("MODIFIED", _agent("triage", version="2"))  # queued twice, reconciled once
    for _ in range(5):
        await asyncio.sleep(0)
    assert passes == []  # the view is not complete yet

    ready.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert passes == ["triage@2"]
    workers.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await workers
