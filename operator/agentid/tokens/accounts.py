"""The token service's view of agents' ServiceAccounts: which agent (by UID) owns each, and its public keys.

Called by the exchange (a ServiceAccount token is an agent's only if its ServiceAccount is controller-owned by
that agent's UID) and by assertion verification and the agent JWKS endpoint (the public keys the operator
mirrors onto the ServiceAccount from the key Secret). AgentIdentity status is never consulted for either: status
is a report that anyone with the status subresource could write (security.md). The ServiceAccount is created by
agentid and owned by the agent; those who may edit it may already run Pods as it. The service needs no access
to Secrets.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import AgentIdentity, KeyStatus
from agentid.domain import keyring, naming
from agentid.kube import watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import SERVICE_ACCOUNTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentAccount:
    """One agent ServiceAccount, reduced to what the token service decides with."""

    uid: str
    namespace: str
    name: str
    agent_uid: str
    keys: tuple[KeyStatus, ...] = ()


def project(body: Mapping[str, Any]) -> AgentAccount:
    """The account; ``agent_uid`` is empty when no AgentIdentity is its controller (a stranger's, whatever its
    labels say)."""
    metadata = body.get("metadata") or {}
    owner: Mapping[str, Any] = next(
        (
            ref
            for ref in metadata.get("ownerReferences") or []
            if ref.get("controller")
            and ref.get("kind") == v1alpha1.KIND
            and str(ref.get("apiVersion", "")).startswith(f"{v1alpha1.GROUP}/")
        ),
        {},
    )
    annotations = metadata.get("annotations") or {}
    try:
        keys = keyring.decode_keys(annotations.get(naming.PUBLIC_KEYS_ANNOTATION) or "[]")
    except ValueError:
        keys = ()  # unreadable: no key verifies anything
    return AgentAccount(
        uid=str(metadata.get("uid") or ""),
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        agent_uid=str(owner.get("uid") or ""),
        keys=keys,
    )


DEPARTED_MAX = 10_000  # ServiceAccounts remembered after their deletion (to name why their tokens are refused)


class AccountCache:
    def __init__(self) -> None:
        self._by_uid: dict[str, AgentAccount] = {}
        self._by_name: dict[tuple[str, str], AgentAccount] = {}
        self._departed: collections.OrderedDict[str, AgentAccount] = collections.OrderedDict()
        self.synced = asyncio.Event()

    def by_uid(self, uid: str) -> AgentAccount | None:
        return self._by_uid.get(uid)

    def departed(self, uid: str) -> AgentAccount | None:
        """A deleted agent ServiceAccount: a revoked or expired agent's are deleted moments after the spec says
        so, and its tokens may still pass a cached TokenReview; knowing whose it was names the precise refusal.
        It never makes a token acceptable."""
        return self._departed.get(uid)

    def account_of(self, agent: AgentIdentity) -> AgentAccount | None:
        """The agent's own ServiceAccount: its derived name in its namespace, controller-owned by its UID."""
        account = self._by_name.get((agent.namespace, naming.service_account(agent.name)))
        return account if account is not None and account.agent_uid == agent.metadata.uid else None

    def keys_of(self, agent: AgentIdentity, now: dt.datetime) -> list[KeyStatus]:
        """The agent's published public keys (active, and retiring ones still in their window)."""
        account = self.account_of(agent)
        return keyring.still_published(account.keys, now) if account is not None else []

    async def run(self, client: KubeClient) -> None:
        """Consume list+watch of agentid's ServiceAccounts forever (cancel to stop)."""
        selector = watch.Selector(label_selector=f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY}")
        await watch.feed(watch.informer(client, SERVICE_ACCOUNTS, selector, project=project), self)

    def replace(self, accounts: Iterable[AgentAccount]) -> None:
        self._by_uid.clear()
        self._by_name.clear()
        for account in accounts:
            self.upsert(account)

    def upsert(self, account: AgentAccount) -> None:
        self._drop(account)
        if account.agent_uid and account.uid:
            self._by_uid[account.uid] = account
            self._by_name[(account.namespace, account.name)] = account

    def remove(self, account: AgentAccount) -> None:
        """A deletion: the account is remembered (bounded) as departed."""
        previous = self._drop(account)
        if previous is not None:
            self._departed[previous.uid] = previous
            while len(self._departed) > DEPARTED_MAX:
                self._departed.popitem(last=False)

    def _drop(self, account: AgentAccount) -> AgentAccount | None:
        previous = self._by_uid.pop(account.uid, None)
        for stale in (previous, account):
            if stale is not None and self._by_name.get((stale.namespace, stale.name), stale).uid == stale.uid:
                self._by_name.pop((stale.namespace, stale.name), None)
        return previous
