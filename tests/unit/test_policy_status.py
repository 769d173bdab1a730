"""AgentPolicy status carries a Ready condition: Enforced when its agents are within bounds, AgentsOutOfBounds
(still in force) naming those that exceed it; the transition time moves only when the status flips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain import policy, reasons
from agentid.reconcile.policies import policy_status
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def governed(name: str, **spec: Any) -> dict[str, Any]:
    body = agent_manifest(name, "team-a", **spec)
    body["metadata"]["uid"] = f"uid-{name}"
    return body


def no_roles(names: list[str]) -> policy.ClusterRoles:
    return {}


def labels(namespace: str) -> Mapping[str, str]:
    return {"team": "a"}


def test_ready_is_enforced_when_every_agent_is_within_bounds_and_keeps_its_transition_time() -> None:
    strict = AgentPolicy.from_body({"metadata": {"name": "p", "generation": 3}, "spec": {}})
    status = policy_status(strict, [governed("bot")], labels, no_roles, NOW)
    ready = next(c for c in status.conditions if c.type == reasons.READY)
    assert (ready.status, ready.reason, ready.observed_generation) == ("True", reasons.POLICY_ENFORCED, 3)
    assert ready.message == "in force for 1 agent(s), all within bounds"

    again = AgentPolicy.from_body(
        {"metadata": {"name": "p", "generation": 3}, "spec": {}, "status": status.model_dump(by_alias=True)}
    )
    later = policy_status(again, [governed("bot")], labels, no_roles, NOW + dt.timedelta(hours=1))
    assert later == again.status, "nothing changed: no status write"


def test_ready_names_the_agents_out_of_bounds() -> None:
    read_only = AgentPolicy.from_body({"metadata": {"name": "p"}, "spec": {"allowedVerbs": ["get", "list"]}})
    status = policy_status(read_only, [governed("bot"), governed("reader", permissions=[])], labels, no_roles, NOW)
    ready = next(c for c in status.conditions if c.type == reasons.READY)
    assert (ready.status, ready.reason) == ("True", reasons.AGENTS_OUT_OF_BOUNDS)
    assert ready.message.endswith("team-a/bot")
    assert status.out_of_bounds_agents == ["team-a/bot"]
