"""The operator's watches of what agents refer to: ClusterRoles, AgentPolicies and Namespaces, as typed stores.

Started with the other watches (``agentid.reconcile.agentwatch``, ``.owned``). Each kind is one list+watch
(``kube.watch.informer``) reduced at once to what the reconciler reads (a ClusterRole's ``ClusterRoleInfo``, a
parsed ``AgentPolicy``, a namespace's labels). Every change that alters what is kept is reported with the value
before and after, so the controller re-plans exactly the agents it affects (a policy's old and new namespaces,
a relabelled namespace's agents, the agents bound to a ClusterRole). ``synced``: all three listed once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import pydantic

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain import projections
from agentid.domain.supervision import ClusterRoleInfo
from agentid.kube import resources, watch
from agentid.kube.client import JsonObject, KubeClient
from agentid.kube.resources import Resource

V = TypeVar("V")
Labels = Mapping[str, str]


class Store(Generic[V]):
    """name -> value, fed by one informer; ``on_change(name, old, new)`` for every change of a kept value
    (None: absent). The first listing reports nothing: every agent gets a pass after its own first listing."""

    def __init__(
        self, resource: Resource, project: Callable[[JsonObject], V | None], on_change: Callable[[str, Any, Any], None]
    ) -> None:
        self.resource = resource
        self.project = project
        self.on_change = on_change
        self.values: dict[str, V] = {}
        self.listed = asyncio.Event()

    def get(self, name: str) -> V | None:
        return self.values.get(name)

    async def run(self, client: KubeClient) -> None:
        async for event in watch.informer(client, self.resource, project=self._named):
            if isinstance(event, watch.Listed):
                self._replace(dict(item for item in event.items if item[0]))
            else:
                name, value = event.object
                self._set(name, None if event.type == "DELETED" else value)
            del event

    def _named(self, body: JsonObject) -> tuple[str, V | None]:
        return str((body.get("metadata") or {}).get("name") or ""), self.project(body)

    def _replace(self, fresh: dict[str, V | None]) -> None:
        first = not self.listed.is_set()
        for name in set(self.values) | set(fresh):
            old, new = self.values.get(name), fresh.get(name)
            if new is None:
                self.values.pop(name, None)
            else:
                self.values[name] = new
            if not first and old != new:
                self.on_change(name, old, new)
        self.listed.set()

    def _set(self, name: str, new: V | None) -> None:
        old = self.values.get(name)
        if new is None:
            self.values.pop(name, None)
        else:
            self.values[name] = new
        if old != new:
            self.on_change(name, old, new)


def _policy(body: JsonObject) -> AgentPolicy | None:
    try:
        return AgentPolicy.from_body(body)
    except pydantic.ValidationError:
        return None  # refused by admission; a policy the operator cannot read governs nothing


def _labels(body: JsonObject) -> dict[str, str]:
    return dict((body.get("metadata") or {}).get("labels") or {})


class References:
    def __init__(
        self,
        client: KubeClient,
        *,
        on_cluster_role: Callable[[str], None],
        on_policy: Callable[[AgentPolicy | None, AgentPolicy | None], None],
        on_namespace: Callable[[str], None],
    ) -> None:
        self.client = client
        self.cluster_roles: Store[ClusterRoleInfo] = Store(
            resources.CLUSTER_ROLES, projections.cluster_role_info, lambda name, old, new: on_cluster_role(name)
        )
        self.policies: Store[AgentPolicy] = Store(
            resources.AGENT_POLICIES, _policy, lambda name, old, new: on_policy(old, new)
        )
        self.namespaces: Store[dict[str, str]] = Store(
            resources.NAMESPACES, _labels, lambda name, old, new: on_namespace(name)
        )
        self.synced = asyncio.Event()

    async def run(self) -> None:
        stores = (self.cluster_roles, self.policies, self.namespaces)

        async def all_listed() -> None:
            await asyncio.gather(*(store.listed.wait() for store in stores))
            self.synced.set()

        await asyncio.gather(all_listed(), *(store.run(self.client) for store in stores))
