"""Pure test objects for unit tests: parsed AgentIdentities built from the same manifest factory."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentid.api.v1alpha1 import AgentIdentity
from tests.support.agents import agent_manifest

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def agent(
    name: str = "triage",
    namespace: str = "finance",
    *,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    **spec: Any,
) -> AgentIdentity:
    manifest = agent_manifest(name, namespace, **spec)
    manifest["metadata"].update({"uid": f"uid-{name}", "generation": generation, "resourceVersion": "1"})
    if status is not None:
        manifest["status"] = status
    return AgentIdentity.from_body(manifest)
