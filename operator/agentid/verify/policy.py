"""Which agent may use which tool: per-tool rules over the verified principal.

Called by the adapters for each request (the ASGI middleware with ``METHOD /path`` as the tool name, the MCP
guard with the MCP tool name). Rules are checked in order; the first rule whose ``tools`` match *and* whose
conditions the principal meets allows the call. No matching rule means deny. A Suspended agent is denied
everything whatever the rules say (tokens of suspended agents are not issued, but a token minted just before a
suspension may still be unexpired). Conditions are all optional:
- ``agents``: agent IDs or ``namespace/name`` (shell-style patterns);
- ``owners``: ``Kind:name`` patterns (``User:alice@example.com``, ``Group:finance``);
- ``attributes``: every key must be present with that value;
- ``modes``: supervision modes allowed (e.g. Supervised agents get read-only tools);
- ``max_delegation_depth``: how many agents may stand between the subject and this call (0: no delegation).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentid.verify.principal import AgentPrincipal, Supervision

ALL_MODES = (Supervision.AUTONOMOUS, Supervision.SUPERVISED)


@dataclass(frozen=True)
class Rule:
    tools: tuple[str, ...]
    name: str = ""
    agents: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    modes: tuple[Supervision, ...] = ALL_MODES
    max_delegation_depth: int | None = None

    def covers(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)

    def refusal(self, principal: AgentPrincipal) -> str | None:
        """Why this rule does not allow the principal, or None when it does."""
        if self.agents and not any(
            fnmatch.fnmatchcase(candidate, pattern)
            for pattern in self.agents
            for candidate in (principal.agent_id, f"{principal.namespace}/{principal.name}")
        ):
            return "the agent is not one this tool is granted to"
        if self.owners and not any(fnmatch.fnmatchcase(str(principal.owner), pattern) for pattern in self.owners):
            return "the agent's owner is not one this tool is granted to"
        for key, value in self.attributes.items():
            if principal.attributes.get(key) != value:
                return f"the agent lacks attribute {key}={value}"
        if principal.supervision not in self.modes:
            return f"{principal.supervision.value} agents may not use this tool"
        if self.max_delegation_depth is not None and principal.delegation_depth > self.max_delegation_depth:
            return f"delegation depth {principal.delegation_depth} exceeds {self.max_delegation_depth}"
        return None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str | None = None


@dataclass(frozen=True)
class Policy:
    rules: Sequence[Rule]

    def decide(self, principal: AgentPrincipal, tool: str) -> Decision:
        if principal.supervision is Supervision.SUSPENDED:
            return Decision(False, "the agent is suspended")
        refusals = []
        for index, rule in enumerate(self.rules):
            if not rule.covers(tool):
                continue
            refusal = rule.refusal(principal)
            if refusal is None:
                return Decision(True, "allowed", rule.name or f"rule {index}")
            refusals.append(refusal)
        return Decision(False, refusals[0] if refusals else "no rule grants this tool")

    def allowed_tools(self, principal: AgentPrincipal, tools: Sequence[str]) -> list[str]:
        return [tool for tool in tools if self.decide(principal, tool).allowed]


def require_supervision(principal: AgentPrincipal, *modes: Supervision) -> Decision:
    """A one-line check for code that guards itself: is the agent in one of these modes?"""
    if principal.supervision in modes:
        return Decision(True, "allowed")
    return Decision(False, f"{principal.supervision.value} agents may not do this")
