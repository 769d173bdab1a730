"""List-then-watch of one resource as an async stream of events: the informer pattern, without a framework.

Called by the operator's watches of agents and owned objects (``agentid.reconcile``) and the token service's agent
cache. Each (re)list yields one ``Listed`` event with the complete current set, so a consumer replaces its state
wholesale; watch events follow. Every object passes through the consumer's ``project`` as it arrives (page by
page while listing), so a consumer that keeps a reduced form never holds thousands of full bodies at once. A
watch that expires (410 Gone, or an ERROR event carrying it) or breaks re-lists; bookmarks keep the
resourceVersion fresh so a quiet resource re-watches instead of re-listing. Objects are plain dicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from agentid.kube import errors
from agentid.kube.client import JsonObject, KubeClient
from agentid.kube.resources import Resource

logger = logging.getLogger(__name__)

WATCH_SECONDS = 290  # the apiserver ends each watch after this; we re-watch from the last resourceVersion
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True)
class Listed(Generic[T]):
    """The complete set of objects at ``resource_version`` (after the first list and every re-list)."""

    items: list[T]
    resource_version: str


@dataclass(frozen=True)
class Changed(Generic[T]):
    """One watch event: ADDED, MODIFIED or DELETED."""

    type: str
    object: T


def unchanged(body: JsonObject) -> JsonObject:
    """The projection of a consumer that keeps whole objects."""
    return body


@dataclass
class Selector:
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def query(self) -> dict[str, str]:
        query = dict(self.extra)
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        return query


class Expired(Exception):
    """The resourceVersion is too old (410 Gone): the caller must re-list."""


async def list_all(
    client: KubeClient, resource: Resource, selector: Selector, project: Callable[[JsonObject], T]
) -> Listed[T]:
    """A consistent list (all pages of one snapshot) with its resourceVersion, each object projected."""
    items: list[T] = []
    metadata: dict[str, Any] = {}
    async for page in client.pages(resource, selector.namespace, selector.query()):
        kind = str(page.get("kind") or "").removesuffix("List")
        for body in page.get("items") or []:
            body.setdefault("apiVersion", page.get("apiVersion"))  # items of a list come without them
            body.setdefault("kind", kind)
            items.append(project(body))
        metadata = page.get("metadata") or {}
        del page
    return Listed(items, str(metadata.get("resourceVersion") or ""))


async def informer(
    client: KubeClient,
    resource: Resource,
    selector: Selector | None = None,
    *,
    project: Callable[[JsonObject], T],
    max_backoff: float = 5.0,
) -> AsyncGenerator[Listed[T] | Changed[T]]:
    """Yield ``Listed`` then ``Changed`` events forever (cancel the consumer to stop)."""
    selector = selector or Selector()
    backoff = 0.1
    resource_version: str | None = None
    while True:
        try:
            if resource_version is None:
                listed = await list_all(client, resource, selector, project)
                resource_version = listed.resource_version
                yield listed
                del listed  # the generator lives as long as the watch: never keep every listed body alive
            async for event_type, body in watch_once(client, resource, selector, resource_version):
                resource_version = str((body.get("metadata") or {}).get("resourceVersion") or resource_version)
                if event_type != "BOOKMARK":
                    yield Changed(event_type, project(body))
                backoff = 0.1
        except Expired:
            resource_version = None  # too old: re-list at once (no backoff: this is routine)
        except (TimeoutError, errors.ApiError, aiohttp.ClientError, ValueError) as error:
            logger.warning(
                "watch of %s broke (%s); re-listing in %.1fs", resource.plural, type(error).__name__, backoff
            )
            resource_version = None
            await asyncio.sleep(backoff + random.uniform(0, backoff / 2))  # noqa: S311 - jitter
            backoff = min(backoff * 2, max_backoff)


async def watch_once(
    client: KubeClient, resource: Resource, selector: Selector, resource_version: str
) -> AsyncIterator[tuple[str, JsonObject]]:
    """One watch request, as (type, object) pairs; raises ``Expired`` when the resourceVersion is gone."""
    query = dict(
        selector.query(),
        watch="true",
        resourceVersion=resource_version,
        allowWatchBookmarks="true",
        timeoutSeconds=str(WATCH_SECONDS),
    )
    _, url, headers, _, _ = await client.api.param_serialize(
        method="GET",
        resource_path=resource.path(selector.namespace),
        query_params=list(query.items()),
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
    response = await client.api.call_api("GET", url, header_params=headers, _request_timeout=timeout)
    raw: aiohttp.ClientResponse = response.response
    try:
        if raw.status == 410:
            raise Expired
        if raw.status != 200:
            raise errors.from_response(raw.status, await raw.read(), raw.headers)
        async for line in raw.content:
            if not line.strip():
                continue
            event = json.loads(line)
            event_type, body = str(event.get("type")), event.get("object") or {}
            if event_type == "ERROR":
                if _status_code(body) == 410:
                    raise Expired
                raise errors.from_response(_status_code(body) or 500, json.dumps(body))
            yield event_type, body
    finally:
        raw.release()


def _status_code(body: Mapping[str, Any]) -> int:
    code = body.get("code")
    return code if isinstance(code, int) else 0


class Store(Protocol[T_contra]):
    """What ``feed`` keeps up to date: a complete set replaced on every (re)list, then single changes."""

    synced: asyncio.Event

    def replace(self, items: Iterable[T_contra]) -> None: ...
    def upsert(self, item: T_contra) -> None: ...
    def remove(self, item: T_contra) -> None: ...


async def feed(events: AsyncIterator[Listed[T] | Changed[T]], store: Store[T]) -> None:
    """Apply an informer's events to ``store`` forever (cancel to stop); ``synced`` is set after the first list."""
    async for event in events:
        if isinstance(event, Listed):
            store.replace(event.items)
            store.synced.set()
        elif event.type == "DELETED":
            store.remove(event.object)
        else:
            store.upsert(event.object)
        del event  # idle between events, the loop variable would pin a whole list response
