"""A Shared Signals receiver (``agentid.verify.SignalReceiver``) and the offline verifier it guards, on their own
event loop in a thread, talking to the session's real token service; plus the ServiceAccount a receiver runs as.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import threading
from typing import Any

import httpx
import kubernetes

from agentid.verify import InvalidToken, IssuerUnavailable, JWKSCache, JWTVerifier, SignalReceiver, Verifier
from agentid.verify.introspection import ClientCredentials
from tests.support.clusters import ClusterHandle
from tests.support.rbac import wait_until_authorized
from tests.support.tokens import SERVICE_NAMESPACE, TokenServiceHandle, tool_service_account_token

RECEIVER_ROLE = "agentid-test-signals-receiver"


def receiver_token(cluster: ClusterHandle, issuer: str, name: str = "signals-receiver") -> str:
    """A ServiceAccount token of a receiver allowed to list AgentIdentities cluster-wide (what streams require)."""
    token = tool_service_account_token(cluster, issuer, name)
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    role = {
        "metadata": {"name": RECEIVER_ROLE},
        "rules": [{"apiGroups": ["agentid.dev"], "resources": ["agentidentities"], "verbs": ["get", "list", "watch"]}],
    }
    binding = {
        "metadata": {"name": f"{RECEIVER_ROLE}-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": RECEIVER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": SERVICE_NAMESPACE}],
    }
    for create, body in ((rbac.create_cluster_role, role), (rbac.create_cluster_role_binding, binding)):
        try:
            create(body)
        except kubernetes.client.ApiException as error:
            if error.status != 409:
                raise
    wait_until_authorized(cluster, None, binding)
    return token


class ReceiverThread:
    """An offline verifier for ``audience`` with a receiver, on an event loop in a thread."""

    def __init__(
        self,
        service: TokenServiceHandle,
        token: str,
        audience: str,
        *,
        name: str = "test-receiver",
        fail_closed_after: float | None = 30.0,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="signals-receiver", daemon=True)
        self._thread.start()
        self._task: concurrent.futures.Future[None] | None = None

        async def build() -> tuple[httpx.AsyncClient, Verifier, SignalReceiver]:
            http = httpx.AsyncClient(
                verify=ssl.create_default_context(cafile=service.endpoint.ca), trust_env=False, timeout=10
            )
            keys = JWKSCache(service.issuer, http=http)
            receiver = SignalReceiver(
                service.issuer,
                http=http,
                keys=keys,
                credentials=lambda: ClientCredentials(headers={"Authorization": f"Bearer {token}"}, form={}),
                name=name,
                fail_closed_after=fail_closed_after,
                **options,
            )
            verifier = Verifier(jwt=JWTVerifier(issuer=service.issuer, audience=audience, keys=keys), signals=receiver)
            return http, verifier, receiver

        self.http, self.verifier, self.receiver = self.call(build())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def start(self) -> ReceiverThread:
        self._task = asyncio.run_coroutine_threadsafe(self.receiver.run(), self._loop)
        self.call(self._connected())
        return self

    async def _connected(self) -> None:
        async with asyncio.timeout(30):
            await self.receiver.connected.wait()

    def verdict(self, token: str) -> str:
        """``accepted``, ``refused: <reason>`` or ``unavailable``."""
        try:
            self.call(self.verifier.verify(token))
        except InvalidToken as invalid:
            return f"refused: {invalid.reason}"
        except IssuerUnavailable:
            return "unavailable"
        return "accepted"

    def push_app(self, wrapped: Any = None) -> Any:
        """An ASGI app (default: the receiver's RFC 8935 push endpoint) for a server on another event loop
        (uvicorn's thread): each request is read there and handled on the receiver's loop, where its HTTP client
        lives (in a tool both run on one loop)."""
        endpoint = wrapped or self.receiver.push_endpoint

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await endpoint(scope, receive, send)
                return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            sent: list[dict[str, Any]] = []

            async def replay() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def collect(message: dict[str, Any]) -> None:
                sent.append(message)

            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(endpoint(scope, replay, collect), self._loop))
            for message in sent:
                await send(message)

        return app

    def stop(self) -> None:
        """Stop receiving (like a crashed receiver: nothing is acknowledged or deleted on the way out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError):
                self._task.result(10)
            self._task = None

    def close(self) -> None:
        self.stop()
        self.call(self.http.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
