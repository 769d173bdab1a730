"""Attributed audit at the tool: one structured JSON record per allow/deny decision.

Called by the adapters. A record names the agent (ID, namespace/name), its owner, its supervision mode, the
delegation chain (current actor first), the tool, the decision and why, and the token's ``jti`` — which the token
service's own audit also records at issuance, so a chain of agents acting for each other can be traced end to
end. Never the token. Records go to the ``agentid.verify.audit`` logger (one JSON object per line) unless the
tool passes its own sink.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from agentid.verify.policy import Decision
from agentid.verify.principal import AgentPrincipal

logger = logging.getLogger("agentid.verify.audit")
Sink = Callable[[dict[str, Any]], None]


def log_sink(record: dict[str, Any]) -> None:
    logger.info(json.dumps(record, separators=(",", ":"), sort_keys=True))


def decision_record(
    principal: AgentPrincipal | None, tool: str | None, decision: Decision, *, resource: str
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": "tool.decision",
        "resource": resource,
        "tool": tool,
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason,
        "rule": decision.rule,
    }
    if principal is not None:
        record.update(
            agent_id=principal.agent_id,
            agent=f"{principal.namespace}/{principal.name}",
            owner=str(principal.owner),
            supervision=principal.supervision.value,
            act_chain=[actor.agent_id for actor in principal.act_chain],
            jti=principal.token_id,
        )
    return record
