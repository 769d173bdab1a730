"""The list+watch helper the operator's watches and the token service's agent cache run on: events in order, list
items complete with apiVersion and kind, 410 Gone means re-list."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentid.api import v1alpha1
from agentid.kube import watch
from agentid.kube.client import KubeClient
from agentid.kube.resources import AGENT_IDENTITIES
from tests.support.agents import agent_manifest
from tests.support.clusters import ClusterHandle

pytestmark = pytest.mark.cluster
Event = watch.Listed[Any] | watch.Changed[Any]


@pytest.fixture
async def client(cluster: ClusterHandle, crds: None) -> AsyncIterator[KubeClient]:
    kube = await KubeClient.connect(str(cluster.kubeconfig), field_manager="agentid-test")
    yield kube
    await kube.close()


async def next_event(events: AsyncIterator[Event]) -> Event:
    async with asyncio.timeout(30):
        return await anext(events)


async def test_the_informer_lists_then_streams_changes_in_order(client: KubeClient, namespace: str) -> None:
    await client.create(AGENT_IDENTITIES, agent_manifest("first", namespace), namespace)
    events = watch.informer(client, AGENT_IDENTITIES, watch.Selector(namespace=namespace), project=watch.unchanged)
    listed = await next_event(events)
    assert isinstance(listed, watch.Listed)
    assert [item["metadata"]["name"] for item in listed.items] == ["first"]
    assert (listed.items[0]["apiVersion"], listed.items[0]["kind"]) == (v1alpha1.API_VERSION, v1alpha1.KIND)

    await client.create(AGENT_IDENTITIES, agent_manifest("second", namespace), namespace)
    await client.patch(AGENT_IDENTITIES, "second", {"spec": {"supervision": {"mode": "Suspended"}}}, namespace)
    await client.delete(AGENT_IDENTITIES, "first", namespace)
    seen = []
    for _ in range(3):
        event = await next_event(events)
        assert isinstance(event, watch.Changed)
        seen.append((event.type, event.object["metadata"]["name"]))
    assert seen == [("ADDED", "second"), ("MODIFIED", "second"), ("DELETED", "first")]
    await events.aclose()


async def test_a_watch_from_an_expired_resource_version_asks_for_a_re_list(client: KubeClient, namespace: str) -> None:
    with pytest.raises(watch.Expired):
        async for _ in watch.watch_once(client, AGENT_IDENTITIES, watch.Selector(namespace=namespace), "1"):
            pass
