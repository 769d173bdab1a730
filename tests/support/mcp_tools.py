"""The example MCP tool server (examples/mcp-server/server.py) on a real loopback port, and an agent calling it
with the official MCP client.

``McpToolServer`` runs the example's ASGI app under uvicorn in a thread and keeps every audit record the tool
writes. ``call`` connects with the official ``mcp.Client`` over streamable HTTP, presenting an agent token, and
returns what each tool call answered.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from agentid.devcluster.ports import free_port
from tests.support.polling import eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp-server" / "server.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentid_example_mcp_server", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class AsgiThread:
    """An ASGI app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="asgi-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        eventually(lambda: self._server.started, what="the ASGI server listens")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)


class McpToolServer:
    def __init__(self, issuer: str, ca_file: str, *, introspection_token_file: str | None = None) -> None:
        self.audit: list[dict[str, Any]] = []
        self._port = free_port()
        self.resource = f"http://127.0.0.1:{self._port}/mcp"
        app, _ = example().build(
            issuer,
            self.resource,
            ca_file=ca_file,
            introspection_token_file=introspection_token_file,
            audit_sink=self.audit.append,
        )
        self._server = AsgiThread(app, self._port)

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> McpToolServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def decisions(self, tool: str) -> list[dict[str, Any]]:
        return [record for record in self.audit if record["tool"] == tool]


def text_of(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


async def _session(resource: str, http: httpx2.AsyncClient, work: Callable[[Client], Awaitable[Any]]) -> Any:
    async with http, Client(streamable_http_client(resource, http_client=http)) as client:
        return await work(client)


def call(resource: str, token: str, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[CallToolResult]:
    """Each tool call's result, over one MCP session authenticated with ``token``."""

    async def work(client: Client) -> list[CallToolResult]:
        return [await client.call_tool(name, arguments) for name, arguments in calls]

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    results: list[CallToolResult] = asyncio.run(_session(resource, http, work))
    return results


def listed_tools(resource: str, token: str) -> list[str]:
    async def work(client: Client) -> list[str]:
        return sorted(tool.name for tool in (await client.list_tools()).tools)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    tools: list[str] = asyncio.run(_session(resource, http, work))
    return tools
