"""Admission of Pods labelled ``agentid.dev/agent``: identity injection (``agentid.domain.podidentity``).

Called by the Kopf mutating handler for Pods (``agentid.handlers.registrations``). The webhook configuration
selects only labelled Pods (objectSelector), so every other Pod never reaches here. The agent is read live: a
Pod admitted right after a revocation must be refused, whatever a cache last saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from agentid import audit, metrics
from agentid.api.v1alpha1 import AgentIdentity
from agentid.domain import podidentity
from agentid.domain.podidentity import Injection, InjectionSettings, Refusal
from agentid.kube import resources
from agentid.kube.client import KubeClient


class PodAdmission:
    def __init__(self, client: KubeClient, settings: InjectionSettings) -> None:
        self.client = client
        self.settings = settings

    async def inject(self, pod: Mapping[str, Any], *, namespace: str, userinfo: Mapping[str, Any]) -> Injection:
        """The mutated Pod and warnings, or ``Refusal`` (recorded in the audit log)."""
        name = podidentity.agent_name(pod)
        if not name:
            raise Refusal(f"label {podidentity.LABEL} must name an AgentIdentity in namespace {namespace}")
        try:
            injection = podidentity.inject(
                pod, await self._agent(namespace, name), namespace=namespace, settings=self.settings
            )
        except Refusal as refusal:
            metrics.POD_INJECTIONS.labels(outcome="refused").inc()
            audit.record(
                "PodRefused",
                namespace=namespace,
                name=name,
                actor=str(userinfo.get("username")),
                reason="Refused",
                message=str(refusal),
            )
            raise
        metrics.POD_INJECTIONS.labels(outcome="injected").inc()
        return injection

    async def _agent(self, namespace: str, name: str) -> AgentIdentity | None:
        body = await self.client.get(resources.AGENT_IDENTITIES, name, namespace)
        if body is None:
            return None
        try:
            return AgentIdentity.from_body(body)
        except pydantic.ValidationError:
            raise Refusal(f"AgentIdentity {name!r} in namespace {namespace} cannot be read (invalid spec)") from None
