"""The agents' watch keeps the index and queues passes, level-triggered (agentid.reconcile.agentwatch)."""

from __future__ import annotations

from typing import Any

from agentid.domain import projections
from agentid.reconcile.agentwatch import AgentWatch
from tests.support.agents import agent_manifest


def _watch(*, patterns: tuple[str, ...] = ()) -> tuple[AgentWatch, list[tuple[str, str]]]:
    changed: list[tuple[str, str]] = []
    watch = AgentWatch(
        client=None,  # type: ignore[arg-type]  # listing and events are fed directly
        on_change=changed.append,
        namespaces=patterns,
        all_namespaces=not patterns,
    )
    return watch, changed


def _agent(name: str, namespace: str = "finance", *, version: str = "1", uid: str | None = None) -> dict[str, Any]:
    body = agent_manifest(name, namespace)
    body["metadata"].update({"uid": uid or f"uid-{name}", "resourceVersion": version})
    return projections.compact_agent(body)


def test_a_relisting_reports_only_what_changed_and_drops_what_is_gone() -> None:
    watch, changed = _watch()
    watch._replace(None, [_agent("triage"), _agent("billing")])
    assert sorted(changed) == [("finance", "billing"), ("finance", "triage")]

    changed.clear()
    watch._replace(None, [_agent("triage", version="7")])
    assert changed == [("finance", "triage")]
    assert sorted(watch.index) == [("finance", "triage")]
    assert watch.index[("finance", "triage")]["metadata"]["resourceVersion"] == "7"


def test_a_deletion_removes_the_agent_only_if_it_is_the_same_object() -> None:
    watch, _ = _watch()
    watch._changed("ADDED", _agent("triage", uid="new"))
    watch._changed("DELETED", _agent("triage", uid="old"))  # a late event of an earlier agent of that name
    assert ("finance", "triage") in watch.index
    watch._changed("DELETED", _agent("triage", uid="new"))
    assert ("finance", "triage") not in watch.index


def test_glob_patterns_keep_other_namespaces_out() -> None:
    watch, changed = _watch(patterns=("fin*",))
    watch._replace(None, [_agent("triage"), _agent("triage", "sales")])
    watch._changed("ADDED", _agent("billing", "sales"))
    assert sorted(watch.index) == [("finance", "triage")]
    assert changed == [("finance", "triage")]
