"""The Argo CD health check (Lua) in a real Lua 5.1 interpreter, against AgentIdentities the operator produced.

Argo CD runs health scripts with the base library only (no ``string``, ``table``, ``os`` ... unless
``useOpenLibs``), the object in the global ``obj``. The interpreter here is set up the same way, and the objects
are the JSON the API server returns, after the session operator reconciled them into each state.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lupa import lua51

from agentid import gitops
from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
NON_BASE_LIBRARIES = ("string", "table", "math", "os", "io", "debug", "package", "coroutine", "require", "dofile",
                      "loadfile")  # fmt: skip


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate the shipped script the way Argo CD does: a fresh state, base library only, ``obj`` global."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    for name in NON_BASE_LIBRARIES:
        runtime.execute(f"{name} = nil")
    runtime.globals().obj = runtime.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = runtime.execute(gitops.argocd_health_lua())
    return {str(key): str(value) for key, value in dict(result).items()}


def in_state(agent: Agent, phase: str) -> dict[str, Any]:
    agent.wait_phase(phase, timeout=60)
    return agent.body()


def test_ready_agents_are_healthy(cluster: ClusterHandle, agent_namespace: str) -> None:
    autonomous = create_agent(cluster, agent_namespace, "autonomous")
    supervised = create_agent(cluster, agent_namespace, "supervised", supervision={"mode": "Supervised"})
    for agent, phase in ((autonomous, "Active"), (supervised, "Supervised")):
        agent.wait_ready()
        health = argocd_health(agent.body())
        assert health["status"] == "Healthy", health
        assert health["message"].startswith(phase)


def test_a_suspended_agent_is_suspended(cluster: ClusterHandle, agent_namespace: str) -> None:
    agent = create_agent(cluster, agent_namespace, "paused", supervision={"mode": "Suspended", "reason": "INC-9"})
    health = argocd_health(in_state(agent, "Suspended"))
    assert health["status"] == "Suspended"


def test_revoked_and_expired_agents_are_degraded(cluster: ClusterHandle, agent_namespace: str) -> None:
    revoked = create_agent(cluster, agent_namespace, "revoked")
    revoked.wait_ready()
    revoked.patch_spec({"revoked": True, "revocationReason": "key leaked"})
    health = argocd_health(in_state(revoked, "Revoked"))
    assert health == {"status": "Degraded", "message": "Revoked: key leaked"}

    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expiring = create_agent(cluster, agent_namespace, "expiring", expiresAt=soon)
    health = argocd_health(in_state(expiring, "Expired"))
    assert health["status"] == "Degraded"
    assert health["message"].startswith("Expired")


def test_a_failed_agent_is_degraded(cluster: ClusterHandle, agent_namespace: str) -> None:
    """A ClusterRole reference that does not exist: the operator reports Ready=False, phase Failed."""
    agent = create_agent(cluster, agent_namespace, "unusable", clusterRoleRefs=["no-such-cluster-role"])
    body = in_state(agent, "Failed")
    health = argocd_health(body)
    assert health["status"] == "Degraded"
    assert "no-such-cluster-role" in health["message"]


def test_an_agent_the_operator_has_not_seen_is_progressing(cluster: ClusterHandle, namespace: str) -> None:
    """``namespace`` is not watched by the session operator: the object stays as the API server stored it."""
    agent = create_agent(cluster, namespace, "unseen")
    assert "status" not in agent.body()
    assert argocd_health(agent.body())["status"] == "Progressing"


CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "spec-changed-not-yet-observed": lambda body: body["metadata"].update(
        generation=body["metadata"]["generation"] + 1
    ),
    "ready-condition-of-an-older-generation": lambda body: [
        c.update(observedGeneration=c["observedGeneration"] - 1) for c in body["status"]["conditions"]
    ],
    "being-deleted": lambda body: body["metadata"].update(deletionTimestamp="2026-11-29T12:00:00Z"),
    "pending": lambda body: body["status"].update(phase="Pending"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_stale_ready_is_not_healthy(cluster: ClusterHandle, agent_namespace: str, change: str) -> None:
    agent = create_agent(cluster, agent_namespace, "stale")
    agent.wait_ready()
    body = copy.deepcopy(agent.body())
    assert argocd_health(body)["status"] == "Healthy"
    CHANGES[change](body)
    assert argocd_health(body)["status"] == "Progressing"


def test_the_script_is_lua_5_1_base_only_and_the_gitops_guide_ships_it_verbatim() -> None:
    script = gitops.argocd_health_lua()
    for library in ("string.", "table.", "math.", "os.", "io."):
        assert library not in script
    guide = (REPO / "docs" / "gitops.md").read_text()
    indented = "\n".join(f"      {line}" if line else "" for line in script.splitlines())
    assert indented in guide, "docs/gitops.md must embed operator/agentid/gitops/argocd_health.lua unchanged"
    assert gitops.ARGOCD_HEALTH_KEY in guide
