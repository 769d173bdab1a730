"""What the handlers share at run time: the API client, the reconciler and its view of the cluster.

Created by ``agentid.handlers.runtime.run_operator`` and handed to every handler through Kopf's ``memo``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import kopf
from kubernetes.aio import client as aio_client

from agentid.kube.client import KubeClient
from agentid.kube.lease import ShardElector
from agentid.reconcile.agents import AgentReconciler
from agentid.reconcile.agentwatch import AgentWatch
from agentid.reconcile.controller import Controller
from agentid.reconcile.owned import OwnedObjects
from agentid.reconcile.policies import PolicyStatusWriter
from agentid.reconcile.references import References
from agentid.reconcile.view import ClusterView
from agentid.webhooks.admission import AgentAdmission
from agentid.webhooks.pods import PodAdmission


@dataclass
class Runtime:
    configuration: aio_client.Configuration
    client: KubeClient
    watcher: KubeClient  # the watches' own connection pool
    view: ClusterView
    reconciler: AgentReconciler
    admission: AgentAdmission
    policy_status: PolicyStatusWriter
    controller: Controller
    agents: AgentWatch
    owned: OwnedObjects
    references: References
    pods: PodAdmission | None = None  # Pod identity injection (set by build_runtime when configured)
    elector: ShardElector | None = None  # leader election (every replica watches and admits; holders reconcile)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background_tasks(self) -> None:
        """The watches, the controller's workers (they wait for ``synced``), the policy status loop and, with
        leader election, the campaign for shards (once synced: a replica takes work only when it can do it)."""
        for name, coroutine in (
            ("agents", self.agents.run()),
            ("owned-objects", self.owned.run()),
            ("references", self.references.run()),
            ("controller", self.controller.run(self.synced)),
            ("agentpolicy-status", self.policy_status.run()),
            ("leases", self._campaign()),
        ):
            self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def _campaign(self) -> None:
        if self.elector is not None:
            await self.synced()
            await self.elector.run()

    async def synced(self) -> None:
        """Every watch has listed everything once: the view a pass reads is complete."""
        for watch in (self.owned, self.agents, self.references):
            await watch.synced.wait()

    def connection_info(self) -> kopf.ConnectionInfo:
        """Kopf's own connections use the very credentials of our client."""
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

    async def stop_background_tasks(self) -> None:
        """Watches, passes and timers stop before Kopf finishes stopping: it waits for every task started while
        it ran, and re-raises what any of them raised meanwhile (a pass refused in a namespace being deleted).
        Leases are released last, once no pass of this replica runs any more: the next holder starts at once."""
        self.controller.queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.elector is not None:
            await self.elector.release()

    async def close(self) -> None:
        await self.stop_background_tasks()
        await self.watcher.close()
        await self.client.close()
        if self.elector is not None:
            await self.elector.client.close()
