"""What the handlers share at run time: the API client, the reconciler and its view of the cluster.

Created by ``agentid.handlers.runtime.run_operator`` and handed to every handler through Kopf's ``memo``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import kopf
from kubernetes.aio import client as aio_client

from agentid.kube.client import KubeClient
from agentid.reconcile.agents import AgentReconciler
from agentid.reconcile.scheduler import Scheduler
from agentid.reconcile.view import ClusterView


@dataclass
class Runtime:
    configuration: aio_client.Configuration
    client: KubeClient
    view: ClusterView
    scheduler: Scheduler
    reconciler: AgentReconciler

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

    async def reconcile_agent(self, namespace: str, name: str) -> None:
        body = self.view.agent_body(namespace, name)
        if body is not None:
            await self.reconciler.reconcile(body)

    async def reconcile_agents_referencing(self, cluster_role: str) -> None:
        await asyncio.gather(*(self.reconciler.reconcile(body) for body in self.view.agents_referencing(cluster_role)))

    async def close(self) -> None:
        await self.scheduler.close()
        await self.client.close()
