"""The token sidecar's folder as the SDK reads it: atomic token files, and a status file that turns a missing token
into the right typed error (no cluster needed: the sidecar fails before any request)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentid.client import errors, tokenfiles
from agentid.client.aio import AsyncAgentClient
from agentid.client.credentials import Credentials
from agentid.sidecar.agent import TokenAgent
from tests.support.polling import eventually_async

MCP = "https://mcp.example"


def test_tokens_are_written_atomically_and_a_missing_one_says_why(tmp_path: Path) -> None:
    path = tokenfiles.token_path(tmp_path, MCP)
    tokenfiles.write_atomically(path, "first")
    tokenfiles.write_atomically(path, "second")
    assert tokenfiles.read_token(tmp_path, MCP) == "second"
    assert oct(path.stat().st_mode & 0o777) == oct(tokenfiles.FILE_MODE)
    assert [p.name for p in tmp_path.iterdir()] == ["mcp.example"]  # no temporary file left behind
    tokenfiles.remove(path)
    with pytest.raises(errors.TokenServiceUnavailable, match="no token yet"):
        tokenfiles.read_token(tmp_path, MCP)
    for state, expected in (("suspended", errors.AgentSuspended), ("revoked", errors.AgentRevoked)):
        tokenfiles.write_status(tmp_path, {"state": state, "reason": state.title(), "error": "invalid_grant"})
        with pytest.raises(expected) as raised:
            tokenfiles.read_token(tmp_path, MCP)
        assert raised.value.reason == state.title()
    with pytest.raises(errors.ConfigurationError, match="holds no token for 'https://b'"):
        tokenfiles.read_token(tmp_path, "https://b", held=(MCP,))  # not even looked for
    tokenfiles.write_status(tmp_path, {"state": "ready"})
    with pytest.raises(errors.ConfigurationError, match=r"agentid\.dev/token-audiences"):
        tokenfiles.read_token(tmp_path, "https://not-held.example")


async def test_a_sidecar_without_its_service_account_token_says_so_and_keeps_trying(tmp_path: Path) -> None:
    credentials = Credentials(token_url="https://127.0.0.1:9/token", service_account_token_file=str(tmp_path / "no"))
    client = AsyncAgentClient(credentials)
    agent = TokenAgent(client, tokens_dir=tmp_path, audiences=(MCP,))
    running = asyncio.create_task(agent.run())
    try:
        await eventually_async(
            lambda: asyncio.to_thread(lambda: tokenfiles.read_status(tmp_path).get("state") == "misconfigured"),
            timeout=10,
            what="status misconfigured",
        )
        with pytest.raises(errors.ConfigurationError, match="cannot read the ServiceAccount token"):
            tokenfiles.read_token(tmp_path, MCP)
        assert not running.done()  # it keeps trying (the kubelet may project the token later)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await client.close()
