"""The token service's view of every AgentIdentity, fed by list+watch, indexed the ways the service asks.

Called by the exchange and introspection handlers (lookups, no I/O) and by the TokenReview cache (it listens
for changes to drop entries). A spec change reaches this cache within milliseconds of the apiserver accepting
it, which is what makes a suspension bite at the token service before the operator has reconciled anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic

from agentid.api.v1alpha1 import AgentIdentity, KeyStatus
from agentid.domain import naming
from agentid.kube import watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import AGENT_IDENTITIES
from agentid.tokens.accounts import AccountCache

logger = logging.getLogger(__name__)
Listener = Callable[[AgentIdentity | None, AgentIdentity | None], None]
AgentKey = tuple[str, str]


class AgentCache:
    """Agents by name, UID and agent ID. The agent ID is computed from the trust domain, namespace and name and
    replaces whatever status says: status is a report that the status subresource's writers control, and a
    planted ID would put another agent's name into ``sub``."""

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self._trust_domain = trust_domain
        self._by_name: dict[AgentKey, AgentIdentity] = {}
        self._by_uid: dict[str, AgentIdentity] = {}
        self._by_agent_id: dict[str, AgentIdentity] = {}
        self._listeners: list[Listener] = []
        self.synced = asyncio.Event()

    # -- lookups ----------------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> AgentIdentity | None:
        return self._by_name.get((namespace, name))

    def by_uid(self, uid: str) -> AgentIdentity | None:
        return self._by_uid.get(uid)

    def by_agent_id(self, agent_id: str) -> AgentIdentity | None:
        return self._by_agent_id.get(agent_id)

    def __len__(self) -> int:
        return len(self._by_name)

    def all(self) -> list[AgentIdentity]:
        return list(self._by_name.values())

    def subscribe(self, listener: Listener) -> None:
        """``listener(old, new)`` runs synchronously on every change (None for added/removed)."""
        self._listeners.append(listener)

    # -- feeding ----------------------------------------------------------------------------------------------

    async def run(self, client: KubeClient) -> None:
        """Consume list+watch forever (cancel to stop)."""
        await watch.feed(watch.informer(client, AGENT_IDENTITIES, project=watch.unchanged), self)

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        fresh = [agent for agent in (self._parse(body) for body in bodies) if agent is not None]
        seen = {(agent.namespace, agent.name) for agent in fresh}
        for key in [key for key in self._by_name if key not in seen]:
            self._store(self._by_name[key], None)
        for agent in fresh:
            self._store(self._by_name.get((agent.namespace, agent.name)), agent)

    def upsert(self, body: Mapping[str, Any]) -> None:
        agent = self._parse(body)
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        self._store(self._by_name.get(key), agent)

    def remove(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        old = self._by_name.get((str(metadata.get("namespace")), str(metadata.get("name"))))
        if old is not None:
            self._store(old, None)

    def _store(self, old: AgentIdentity | None, new: AgentIdentity | None) -> None:
        if old is not None:
            self._by_name.pop((old.namespace, old.name), None)
            _pop_if(self._by_uid, old.metadata.uid, old)
            _pop_if(self._by_agent_id, old.status.agent_id, old)
        if new is not None:
            self._by_name[(new.namespace, new.name)] = new
            self._by_uid[new.metadata.uid] = new
            if new.status.agent_id:
                self._by_agent_id[new.status.agent_id] = new
        if old is not new:
            for listener in self._listeners:
                listener(old, new)

    def _parse(self, body: Mapping[str, Any]) -> AgentIdentity | None:
        agent = _parse(body)
        if agent is None or not agent.status.agent_id:
            return agent  # not provisioned yet: no ID, no tokens
        computed = naming.agent_id(self._trust_domain, agent.namespace, agent.name)
        if agent.status.agent_id == computed:
            return agent
        return agent.model_copy(update={"status": agent.status.model_copy(update={"agent_id": computed})})


def _pop_if(index: dict[str, AgentIdentity], key: str | None, agent: AgentIdentity) -> None:
    if key is not None and index.get(key) is agent:
        del index[key]


def _parse(body: Mapping[str, Any]) -> AgentIdentity | None:
    """An object the model cannot parse gets no tokens (and is not logged: it is the user's data)."""
    try:
        return AgentIdentity.from_body(body)
    except pydantic.ValidationError as error:
        metadata = body.get("metadata") or {}
        logger.warning(
            "ignoring AgentIdentity %s/%s: %d validation error(s)",
            metadata.get("namespace"),
            metadata.get("name"),
            error.error_count(),
        )
        return None


def published_keys(agent: AgentIdentity, accounts: AccountCache, now: dt.datetime) -> list[KeyStatus]:
    """The agent's own public keys that may verify its assertions — as the operator mirrored them from the key
    Secret onto the agent's own ServiceAccount, never from status: none once it is revoked."""
    if agent.spec.revoked or agent.status.phase.terminal:
        return []
    return accounts.keys_of(agent, now)
