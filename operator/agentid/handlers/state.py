"""What the handlers share at run time: the API client, the reconciler and its view of the cluster.

Created by ``agentid.handlers.runtime.run_operator`` and handed to every handler through Kopf's ``memo``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic
from kubernetes.aio import client as aio_client

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain.policy import POLICY_VIOLATION
from agentid.kube.client import KubeClient
from agentid.reconcile.agents import AgentReconciler
from agentid.reconcile.agentwatch import AgentWatch
from agentid.reconcile.owned import OwnedObjects
from agentid.reconcile.policies import PolicyStatusWriter
from agentid.reconcile.scheduler import Scheduler
from agentid.reconcile.view import ClusterView
from agentid.webhooks.admission import AgentAdmission
from agentid.webhooks.pods import PodAdmission


@dataclass
class Runtime:
    configuration: aio_client.Configuration
    client: KubeClient
    view: ClusterView
    scheduler: Scheduler
    reconciler: AgentReconciler
    admission: AgentAdmission
    policy_status: PolicyStatusWriter
    owned: OwnedObjects | None = None  # the watch of owned objects (set by build_runtime)
    agents: AgentWatch | None = None  # the watch of agents and the reconcile queue (set by build_runtime)
    pods: PodAdmission | None = None  # Pod identity injection (set by build_runtime when configured)
    kopf_indexed: asyncio.Event = field(default_factory=asyncio.Event)  # Kopf's indexes are complete
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background_tasks(self) -> None:
        self._tasks.append(asyncio.create_task(self.policy_status.run(), name="agentpolicy-status"))
        if self.owned is not None:
            self._tasks.append(asyncio.create_task(self.owned.run(), name="owned-objects"))
        if self.agents is not None:
            self._tasks.append(asyncio.create_task(self.agents.run(), name="agents"))

    async def synced(self) -> None:
        """The operator's own watches have listed everything once."""
        for watch in (self.owned, self.agents):
            if watch is not None:
                await watch.synced.wait()

    async def passes_may_start(self) -> None:
        """A pass reads the whole view: every watch listed, Kopf's indexes included."""
        await self.synced()
        await self.kopf_indexed.wait()

    def connection_info(self) -> kopf.ConnectionInfo:
        """Kopf's own watch connections use the very credentials of our client."""
        configuration = self.configuration
        token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
        scheme, _, value = (token or "").partition(" ")
        return kopf.ConnectionInfo(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            scheme=scheme if value else ("Bearer" if token else None),
            token=value or token or None,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )

    async def reconcile_agents_referencing(self, cluster_role: str) -> None:
        await self._reconcile_all(self.view.agents_referencing(cluster_role))

    async def reconcile_agents_in(self, namespace: str) -> None:
        await self._reconcile_all(self.view.agents_in([namespace]))

    async def reconcile_agents_governed_by(self, policy_body: Mapping[str, Any]) -> None:
        """A policy changed: its namespaces' agents, and any agent it may have been holding back."""
        try:
            selected = self.view.namespaces_selected_by(AgentPolicy.from_body(policy_body).spec.namespace_selector)
        except pydantic.ValidationError:
            selected = []
        affected = {body["metadata"]["uid"]: body for body in self.view.agents_in(selected)}
        for body in self.view.all_agents():
            conditions = (body.get("status") or {}).get("conditions") or []
            if any(c.get("reason") == POLICY_VIOLATION for c in conditions):
                affected[body["metadata"]["uid"]] = body
        await self._reconcile_all(list(affected.values()))

    async def _reconcile_all(self, bodies: list[Mapping[str, Any]]) -> None:
        await asyncio.gather(*(self.reconciler.reconcile(body) for body in bodies))

    async def stop_background_tasks(self) -> None:
        """Watches, passes and wake-ups stop before Kopf finishes stopping: it waits for every task started while
        it ran, and re-raises what any of them raised meanwhile (a pass refused in a namespace being deleted)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.scheduler.close()

    async def close(self) -> None:
        await self.stop_background_tasks()
        if self.owned is not None:
            await self.owned.client.close()  # the agents' watch shares this client
        await self.client.close()
