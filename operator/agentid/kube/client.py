"""The one asynchronous door to the API server, on ``kubernetes.aio`` (its config loading, auth, TLS, pool).

Called by every other ``kube`` adapter. Requests go by REST path with plain-dict bodies: no discovery, no model
deserialisation (fast at thousands of agents, and the dicts are what Kopf and the domain builders use). Retries
429/5xx honouring Retry-After, bounds the requests in flight, and counts requests by verb (metrics, benchmarks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import yaml
import yarl
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from agentid import __version__
from agentid.kube import errors
from agentid.kube.resources import Resource

JsonObject = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_RETRIES = 5
PAGE_SIZE = "500"


async def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> aio_client.Configuration:
    """In-cluster credentials when running in a Pod (and no kubeconfig is named), else the kubeconfig.

    Raises ``errors.KubeconfigError`` (one line) when neither gives usable credentials."""
    configuration = aio_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        try:
            aio_config.load_incluster_config(client_configuration=configuration)
        except aio_config.ConfigException as error:
            raise errors.KubeconfigError(f"in-cluster configuration: {_one_line(error)}") from None
        return configuration
    paths, existing = _kubeconfig_files(kubeconfig)
    try:
        await aio_config.load_kube_config(
            config_file=existing,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (aio_config.ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, KeyError) as error:
        raise errors.KubeconfigError(f"kubeconfig {paths}: {_one_line(error)}") from None
    return configuration


def _kubeconfig_files(kubeconfig: str | None) -> tuple[str, str]:
    """(what was asked for, the files of it that exist): the client library only logs a warning for a missing one."""
    paths = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser(aio_config.KUBE_CONFIG_DEFAULT_LOCATION)
    existing = [path for path in paths.split(os.pathsep) if path and os.path.exists(os.path.expanduser(path))]
    if not existing:
        raise errors.KubeconfigError(f"no kubeconfig at {paths} (set KUBECONFIG or pass --kubeconfig)")
    return paths, os.pathsep.join(existing)


def _one_line(error: object) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _resolve_environment_once(configuration: aio_client.Configuration) -> None:
    """kubernetes.aio opens its session with ``trust_env=True``: aiohttp then reads ~/.netrc and the proxy variables
    in a worker thread on *every* request (two thread hand-offs each, a quarter of the operator's CPU while it
    provisions). The environment does not change while we run: take its proxy for the apiserver once (a kubeconfig
    ``proxy-url`` still wins) and switch the per-request lookups off. (netrc basic auth never applied: Kubernetes
    requests carry their own credentials.)"""
    if configuration.proxy is None and configuration.host:
        with contextlib.suppress(LookupError):
            proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(configuration.host))
            configuration.proxy = str(proxy)
            if auth is not None:
                configuration.proxy_headers = {"Proxy-Authorization": auth.encode()}
    extra = dict(getattr(configuration, "client_session_kwargs", None) or {})
    configuration.client_session_kwargs = {**extra, "trust_env": False}


class KubeClient:
    """Plain-dict REST access to the API server. One per process; close it on shutdown."""

    def __init__(
        self,
        configuration: aio_client.Configuration,
        *,
        field_manager: str,
        max_in_flight: int = 64,
        instance: str | None = None,
    ) -> None:
        configuration.connection_pool_maxsize = max_in_flight
        _resolve_environment_once(configuration)
        self.configuration = configuration
        self.api = aio_client.ApiClient(configuration)
        # Names us in the apiserver's audit log; the instance tells replicas of one Deployment apart.
        self.api.user_agent = f"{field_manager}/{__version__}" + (f" ({instance})" if instance else "")
        self.field_manager = field_manager
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.requests: collections.Counter[str] = collections.Counter()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, *, field_manager: str, max_in_flight: int = 64) -> KubeClient:
        return cls(await load_configuration(kubeconfig), field_manager=field_manager, max_in_flight=max_in_flight)

    async def close(self) -> None:
        await self.api.close()

    # -- raw ------------------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """Send one request; retry throttling and server errors; raise ``errors.ApiError`` otherwise."""
        attempt = 0
        while True:
            try:
                return await self._request_once(method, path, body=body, query=query, content_type=content_type)
            except (errors.Throttled, errors.Unavailable) as error:
                attempt += 1
                if attempt >= _RETRIES:
                    raise
                delay = error.retry_after if error.retry_after is not None else min(0.1 * 2**attempt, 5.0)
                await asyncio.sleep(delay + random.uniform(0, 0.1))  # noqa: S311 - jitter, not crypto

    async def _request_once(
        self, method: str, path: str, *, body: Any, query: Mapping[str, str] | None, content_type: str
    ) -> JsonObject:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        _, url, headers, _, _ = await self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        async with self._in_flight:  # the REST layer JSON-encodes dict bodies for json and apply-patch types
            self.requests[method] += 1
            try:
                response = await self.api.call_api(method, url, header_params=headers, body=body)
                payload = await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:  # apiserver restarting, connection reset
                raise errors.Unreachable(0, "Unreachable", f"{type(error).__name__}: {error}") from None
        if not 200 <= response.status < 300:
            raise errors.from_response(response.status, payload, response.headers)
        if not payload:
            return {}
        document = json.loads(payload)
        return document if isinstance(document, dict) else {"items": document}

    # -- typed conveniences -----------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> JsonObject | None:
        try:
            return await self.request("GET", resource.path(namespace, name))
        except errors.NotFound:
            return None

    async def list(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[JsonObject]:
        query = {"labelSelector": label_selector} if label_selector else {}
        return [item async for page in self.pages(resource, namespace, query) for item in page.get("items") or []]

    async def pages(
        self, resource: Resource, namespace: str | None, query: Mapping[str, str]
    ) -> AsyncIterator[JsonObject]:
        """One consistent list, page by page (the one place that follows ``continue`` tokens)."""
        continue_token: str | None = None
        while True:
            page_query = dict(query, limit=PAGE_SIZE)
            if continue_token:
                page_query["continue"] = continue_token
            page = await self.request("GET", resource.path(namespace), query=page_query)
            continue_token = (page.get("metadata") or {}).get("continue")
            yield page
            if not continue_token:
                return

    async def create(self, resource: Resource, body: JsonObject, namespace: str | None = None) -> JsonObject:
        """POST; raises ``errors.Conflict`` (409 AlreadyExists) if an object of that name exists."""
        query = {"fieldManager": self.field_manager}
        return await self.request("POST", resource.path(namespace), body=body, query=query)

    async def apply(self, resource: Resource, manifest: JsonObject, *, force: bool = True) -> JsonObject:
        """Server-side apply as this client's field manager (force: the operator owns what it applies)."""
        metadata = manifest["metadata"]
        query = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH",
            resource.path(metadata.get("namespace"), metadata["name"]),
            body=manifest,
            query=query,
            content_type=APPLY_PATCH,
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> JsonObject:
        return await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            query={"fieldManager": self.field_manager},
            content_type=content_type,
        )

    async def replace(self, resource: Resource, body: JsonObject) -> JsonObject:
        """PUT the whole object; with ``metadata.resourceVersion`` set, ``errors.Conflict`` if it changed since."""
        metadata = body["metadata"]
        return await self.request(
            "PUT",
            resource.path(metadata.get("namespace"), metadata["name"]),
            body=body,
            query={"fieldManager": self.field_manager},
        )

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> bool:
        """Delete (background propagation); False if it was already gone. ``uid`` guards against a newer twin."""
        body: JsonObject = {"propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", resource.path(namespace, name), body=body)
        except errors.NotFound:
            return False
        except errors.Conflict:
            return False  # the precondition failed: a different object of that name exists now
        return True

    async def create_review(self, resource: Resource, spec: JsonObject) -> JsonObject:
        """POST a review object (TokenReview, SubjectAccessReview, SelfSubjectReview) and return its status."""
        review = await self.create(resource, {"apiVersion": resource.api_version, "kind": resource.kind, "spec": spec})
        status = review.get("status", {})
        return status if isinstance(status, dict) else {}
