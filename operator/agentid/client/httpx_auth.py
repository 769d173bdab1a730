"""``httpx`` auth for agent tokens (imported only by agents that use httpx: ``pip install agentid[client]``).

``httpx.Client(auth=AgentAuth(client, audience))`` or ``httpx.AsyncClient(auth=AgentAuth(async_client, ...))``.
A 401 from the resource server drops the cached token and retries once with a fresh one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from agentid.client.aio import AsyncAgentClient
from agentid.client.sync import AgentClient


class AgentAuth(httpx.Auth):
    def __init__(self, client: AgentClient | AsyncAgentClient, audience: str) -> None:
        self.client = client
        self.audience = audience

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not isinstance(self.client, AgentClient):
            raise TypeError("a sync httpx.Client needs an AgentClient (AsyncAgentClient is for httpx.AsyncClient)")
        request.headers["Authorization"] = f"Bearer {self.client.token(self.audience)}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self.client.invalidate(self.audience)
            request.headers["Authorization"] = f"Bearer {self.client.token(self.audience)}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not isinstance(self.client, AsyncAgentClient):
            raise TypeError("an httpx.AsyncClient needs an AsyncAgentClient")
        request.headers["Authorization"] = f"Bearer {await self.client.token(self.audience)}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            self.client.invalidate(self.audience)
            request.headers["Authorization"] = f"Bearer {await self.client.token(self.audience)}"
            yield request
