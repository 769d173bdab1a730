"""The operator's watches of what agents refer to: ClusterRoles, AgentPolicies and Namespaces, as typed stores.

Started with the other watches (``agentid.reconcile.agentwatch``, ``.owned``). Each kind is one list+watch
(``kube.watch.informer``) reduced at once to what the reconciler reads (a ClusterRole's ``ClusterRoleInfo``, a
parsed ``AgentPolicy``, a namespace's labels). Every change that alters what is kept is reported with the value
before and after, so the controller re-plans exactly the agents it affects (a policy's old and new namespaces,
a relabelled namespace's agents, the agents bound to a ClusterRole). ``synced``: all three listed once. Roles and
bindings not written by agentid are watched too, reduced to what grants access, for the owner ceiling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import pydantic

from agentid.api.v1alpha1 import AgentPolicy
from agentid.domain import naming, projections
from agentid.domain.supervision import ClusterRoleInfo
from agentid.kube import errors, resources, watch
from agentid.kube.client import JsonObject, KubeClient
from agentid.kube.resources import Resource

logger = logging.getLogger(__name__)
V = TypeVar("V")
Labels = Mapping[str, str]


class Store(Generic[V]):
    """name -> value, fed by one informer; ``on_change(name, old, new)`` for every change of a kept value
    (None: absent). The first listing reports nothing: every agent gets a pass after its own first listing."""

    def __init__(
        self,
        resource: Resource,
        project: Callable[[JsonObject], V | None],
        on_change: Callable[[str, Any, Any], None],
        selector: watch.Selector | None = None,
    ) -> None:
        self.resource = resource
        self.project = project
        self.on_change = on_change
        self.selector = selector
        self.values: dict[str, V] = {}
        self.listed = asyncio.Event()

    def get(self, name: str) -> V | None:
        return self.values.get(name)

    async def run(self, client: KubeClient) -> None:
        async for event in watch.informer(client, self.resource, self.selector, project=self._named):
            if isinstance(event, watch.Listed):
                self._replace(dict(item for item in event.items if item[0]))
            else:
                name, value = event.object
                self._set(name, None if event.type == "DELETED" else value)
            del event

    def _named(self, body: JsonObject) -> tuple[str, V | None]:
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name") or "")
        return (f"{metadata['namespace']}/{name}" if metadata.get("namespace") else name), self.project(body)

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


def _grants(body: JsonObject) -> dict[str, Any]:
    """What decides who may do what: a binding's role and subjects, a Role's rules."""
    kept: dict[str, Any] = projections.shared(
        {key: body[key] for key in ("roleRef", "subjects", "rules") if key in body}
    )
    return kept


# RBAC not written by agentid (its own writes must not invalidate the owner ceiling's answers, or loop).
FOREIGN_RBAC = watch.Selector(label_selector=f"{naming.MANAGED_BY_LABEL}!={naming.MANAGED_BY}")


class References:
    def __init__(
        self,
        client: KubeClient,
        *,
        on_cluster_role: Callable[[str], None],
        on_policy: Callable[[AgentPolicy | None, AgentPolicy | None], None],
        on_namespace: Callable[[str], None],
        on_rbac: Callable[[], None],
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
        # Only for the owner ceiling: any change to who holds what drops its cached answers. Not part of ``synced``
        # (an operator without cluster-wide RBAC read still reconciles; the ceiling then relies on its cache TTL).
        self.rbac: list[Store[dict[str, Any]]] = [
            Store(resource, _grants, lambda name, old, new: on_rbac(), FOREIGN_RBAC)
            for resource in (resources.ROLES, resources.ROLE_BINDINGS, resources.CLUSTER_ROLE_BINDINGS)
        ]
        self.synced = asyncio.Event()

    async def run(self) -> None:
        stores = (self.cluster_roles, self.policies, self.namespaces)

        async def all_listed() -> None:
            await asyncio.gather(*(store.listed.wait() for store in stores))
            self.synced.set()

        await asyncio.gather(
            all_listed(), *(store.run(self.client) for store in stores), *(self._rbac(store) for store in self.rbac)
        )

    async def _rbac(self, store: Store[dict[str, Any]]) -> None:
        """Watched where the operator may read RBAC cluster-wide (the chart's exact-namespace install may not)."""
        try:
            await self.client.request("GET", store.resource.path(), query={"limit": "1"})
        except errors.Forbidden:
            logger.info("no cluster-wide read of %s: the owner ceiling relies on its cache TTL", store.resource.plural)
            return
        await store.run(self.client)
