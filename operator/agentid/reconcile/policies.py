"""AgentPolicy status: how many agents each policy governs, how many are out of its bounds, and a Ready condition.

Run by the operator as one background loop (started at startup). It reads only the operator's indexes and
writes a policy's status only when the numbers change, so a quiet cluster costs no API writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agentid.api.v1alpha1 import AgentIdentity, AgentPolicy, AgentPolicyStatus
from agentid.domain import conditions, lifecycle, policy, reasons
from agentid.kube import errors, resources
from agentid.kube.client import KubeClient
from agentid.reconcile.view import ClusterView

logger = logging.getLogger(__name__)
MAX_LISTED = 20


def policy_status(
    governing: AgentPolicy,
    agents: list[Mapping[str, Any]],
    namespace_labels: Callable[[str], Mapping[str, str]],
    cluster_roles: Callable[[list[str]], policy.ClusterRoles],
    now: dt.datetime,
) -> AgentPolicyStatus:
    governed, out_of_bounds = 0, []
    for body in agents:
        agent = AgentIdentity.from_body(body)
        labels = namespace_labels(agent.namespace)
        if not policy.selects(governing.spec.namespace_selector, labels) or lifecycle.terminal_phase(agent, now):
            continue
        governed += 1
        roles = cluster_roles(agent.spec.cluster_role_refs)
        if policy.violations(agent.spec, policy.effective_policy([governing], labels), now, roles):
            out_of_bounds.append(f"{agent.namespace}/{agent.name}")
    listed = sorted(out_of_bounds)[:MAX_LISTED]
    if out_of_bounds:
        reason = reasons.AGENTS_OUT_OF_BOUNDS
        more = f" and {len(out_of_bounds) - len(listed)} more" if len(out_of_bounds) > len(listed) else ""
        message = (
            f"in force for {governed} agent(s); {len(out_of_bounds)} exceed it (Ready=False, reason "
            f"PolicyViolation): {', '.join(listed)}{more}"
        )
    else:
        reason, message = reasons.POLICY_ENFORCED, f"in force for {governed} agent(s), all within bounds"
    ready = conditions.set_condition(
        governing.status.conditions,
        type_=reasons.READY,
        status="True",
        reason=reason,
        message=message,
        generation=governing.generation,
        now=now,
    )
    return AgentPolicyStatus(
        observed_generation=governing.generation,
        agents=governed,
        out_of_bounds=len(out_of_bounds),
        out_of_bounds_agents=listed,
        conditions=ready,
    )


class PolicyStatusWriter:
    def __init__(
        self,
        *,
        client: KubeClient,
        view: ClusterView,
        clock: Callable[[], dt.datetime],
        interval: float = 10.0,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client = client
        self.view = view
        self.clock = clock  # the reconciler's: both judge the same agents at the same moment
        self.interval = interval
        self.active = active  # with leader election: only the holder of shard 0 writes policy status

    async def run(self) -> None:
        while True:
            try:
                if self.active():
                    await self.write_once()
            except errors.ApiError as error:
                logger.warning("could not update AgentPolicy status: %s", error)
            await asyncio.sleep(self.interval)

    async def write_once(self) -> None:
        now = self.clock()
        agents = self.view.all_agents()

        for governing in list(self.view.indexes.policies.values()):
            status = policy_status(governing, agents, self.view.namespace_labels, self.view.cluster_roles, now)
            if status == governing.status:
                continue
            patch = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
            await self.client.patch(resources.AGENT_POLICIES, governing.name, patch, subresource="status")
