"""Tools enforce agent identity: the official MCP client and server SDKs over real HTTP against the real token
service — per-tool rules by supervision mode, suspension, delegation in the tool's audit, RFC 9728 discovery and
the SDK's own OAuth flow (client credentials with the agent's key as ``private_key_jwt``, RFC 8707 ``resource``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import jwt
import pytest
import requests
from mcp import Client
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata

from tests.support.clusters import ClusterHandle
from tests.support.mcp_tools import McpToolServer, call, listed_tools, text_of
from tests.support.polling import eventually
from tests.support.tokens import ProvisionedAgent, TokenServiceHandle, provisioned, tool_service_account_token

pytestmark = pytest.mark.cluster

READ = ("read_invoice", {"invoice_id": "INV-1"})
WRITE = ("approve_payment", {"invoice_id": "INV-1"})


@pytest.fixture(scope="module")
def tool(token_service: TokenServiceHandle) -> Iterator[McpToolServer]:
    server = McpToolServer(token_service.issuer, token_service.endpoint.ca).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_tool(
    cluster: ClusterHandle, token_service: TokenServiceHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[McpToolServer]:
    """The same tool server asking the token service about every token (cached 5 s): live supervision."""
    token_file = tmp_path_factory.mktemp("mcp-tool") / "token"
    token_file.write_text(tool_service_account_token(cluster, token_service.issuer, name="mcp-tool"))
    server = McpToolServer(token_service.issuer, token_service.endpoint.ca, introspection_token_file=str(token_file))
    yield server.start()
    server.stop()


def finance_agent(
    cluster: ClusterHandle, service: TokenServiceHandle, namespace: str, name: str, resource: str, **spec: Any
) -> ProvisionedAgent:
    spec.setdefault("supervision", {"mode": "Autonomous"})
    return provisioned(
        cluster,
        service,
        namespace,
        name,
        attributes={"costCenter": "4711"},
        credentials={"audiences": [resource, service.issuer]},
        **spec,
    )


def tool_token(service: TokenServiceHandle, agent: ProvisionedAgent, resource: str) -> str:
    """RFC 8693 exchange with RFC 8707 ``resource``: a token for exactly that tool."""
    token = service.token(agent.service_account_token(service.issuer), resource=resource)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == resource
    return token


def test_a_request_without_a_token_is_sent_to_the_protected_resource_metadata(
    tool: McpToolServer, token_service: TokenServiceHandle
) -> None:
    response = requests.post(tool.resource, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
    assert response.status_code == 401
    metadata_url = f"http://127.0.0.1:{tool.port}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in response.headers["WWW-Authenticate"]
    document = ProtectedResourceMetadata.model_validate(requests.get(metadata_url, timeout=10).json())
    assert str(document.resource) == tool.resource
    assert [str(server) for server in document.authorization_servers] == [token_service.issuer]
    # The authorization server's metadata is what the MCP SDK's client model accepts.
    OAuthMetadata.model_validate(token_service.get("/.well-known/oauth-authorization-server").json())


def test_read_tools_work_write_tools_are_refused_when_supervised_and_everything_when_suspended(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, live_tool: McpToolServer
) -> None:
    """With live introspection, one and the same token follows the agent's supervision within the cache TTL."""
    tool = live_tool
    agent = finance_agent(cluster, token_service, token_namespace, "payer", tool.resource)
    token = tool_token(token_service, agent, tool.resource)
    read, write = call(tool.resource, token, [READ, WRITE])
    assert not read.is_error, text_of(read)
    assert "ACME" in text_of(read)
    assert not write.is_error, text_of(write)
    assert listed_tools(tool.resource, token) == ["approve_payment", "list_invoices", "read_invoice"]

    agent.patch_spec({"supervision": {"mode": "Supervised"}})
    write = eventually(
        lambda: (result := call(tool.resource, token, [WRITE])[0]).is_error and result,
        timeout=30,
        what="the write tool refused once the agent is Supervised",
    )
    assert text_of(write) == "refused by agentid: Supervised agents may not use this tool"
    (read,) = call(tool.resource, token, [READ])
    assert not read.is_error, text_of(read)
    assert listed_tools(tool.resource, token) == ["list_invoices", "read_invoice"]
    denied = tool.decisions("approve_payment")[-1]
    assert denied["decision"] == "deny"
    assert denied["supervision"] == "Supervised"
    assert denied["agent"] == f"{token_namespace}/payer"
    assert denied["owner"] == "User:alice@example.com"
    assert denied["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]

    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident"}})
    eventually(lambda: refused_outright(tool, token), timeout=30, what="every request refused once Suspended")
    assert tool.audit[-1]["reason"] == "invalid token: inactive at the token service"


def refused_outright(tool: McpToolServer, token: str) -> bool:
    response = requests.post(
        tool.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    return response.status_code == 401


def test_without_introspection_a_token_claiming_suspended_opens_nothing(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tool: McpToolServer
) -> None:
    """Local verification only: the supervision in the token decides, and Suspended is refused whatever the rules
    (the token service never issues such a token; this one is signed with the issuer key by the test)."""
    agent = finance_agent(cluster, token_service, token_namespace, "payer", tool.resource)
    claims = jwt.decode(tool_token(token_service, agent, tool.resource), options={"verify_signature": False})
    claims["agent"]["supervision"] = "Suspended"
    signing = token_service.service.keyring.signing_key()
    suspended = jwt.encode(
        claims, signing.private_key, algorithm=signing.jws_algorithm, headers={"kid": signing.key_id}
    )
    results = call(tool.resource, suspended, [READ, ("list_invoices", {})])
    assert all(result.is_error for result in results)
    assert {text_of(result) for result in results} == {"refused by agentid: the agent is suspended"}
    assert listed_tools(tool.resource, suspended) == []


def test_a_delegated_call_shows_the_act_chain_in_the_tools_audit(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tool: McpToolServer
) -> None:
    subject = finance_agent(
        cluster,
        token_service,
        token_namespace,
        "payer",
        tool.resource,
        delegation={"allowedActors": [{"name": "orchestrator"}], "maxDepth": 1},
    )
    actor = finance_agent(cluster, token_service, token_namespace, "orchestrator", tool.resource)
    handed_over = token_service.token(subject.service_account_token(token_service.issuer), resource=tool.resource)
    delegated = token_service.delegated(handed_over, actor.service_account_token(token_service.issuer))
    (result,) = call(tool.resource, delegated, [WRITE])
    assert not result.is_error, text_of(result)
    assert text_of(result).endswith(f"acting through {actor.agent_id}")
    record = tool.decisions("approve_payment")[-1]
    assert record["decision"] == "allow"
    assert record["agent_id"] == subject.agent_id
    assert record["act_chain"] == [actor.agent_id]
    assert record["jti"] == jwt.decode(delegated, options={"verify_signature": False})["jti"]
    assert delegated not in str(tool.audit)


def test_a_token_for_another_resource_is_refused(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tool: McpToolServer
) -> None:
    agent = finance_agent(cluster, token_service, token_namespace, "payer", tool.resource)
    subject = agent.service_account_token(token_service.issuer)
    for_the_issuer = token_service.token(subject, resource=token_service.issuer)
    response = requests.post(
        tool.resource,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Authorization": f"Bearer {for_the_issuer}", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert tool.audit[-1]["reason"] == "invalid token: wrong audience"


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def test_the_mcp_sdks_own_oauth_flow_gets_a_tool_token_with_the_agents_key(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tool: McpToolServer
) -> None:
    """401 → RFC 9728 metadata → our RFC 8414 metadata → client_credentials with a private_key_jwt assertion signed
    by the agent's own key and ``resource`` → a token for exactly this tool → the read tool works."""
    agent = finance_agent(cluster, token_service, token_namespace, "payer", tool.resource)
    key = agent.signing_key()

    async def assertion(audience: str) -> str:
        now = int(dt.datetime.now(dt.UTC).timestamp())
        payload = {"iss": agent.agent_id, "sub": agent.agent_id, "aud": audience, "iat": now, "exp": now + 60}
        payload["jti"] = str(uuid.uuid4())
        return jwt.encode(payload, key.private_key, algorithm=key.jws_algorithm, headers={"kid": key.key_id})

    storage = Memory()
    provider = PrivateKeyJWTOAuthProvider(
        server_url=tool.resource,
        storage=storage,
        client_id=agent.agent_id,
        assertion_provider=assertion,
        issuer=token_service.issuer,
    )

    async def scenario() -> str:
        http = httpx2.AsyncClient(auth=provider, verify=_ssl(token_service.endpoint.ca), timeout=30)
        async with http, Client(streamable_http_client(tool.resource, http_client=http)) as client:
            return text_of(await client.call_tool(*READ))

    assert "ACME" in asyncio.run(scenario())
    assert storage.tokens is not None
    claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
    assert claims["aud"] == tool.resource
    assert claims["sub"] == agent.agent_id
    assert tool.decisions("read_invoice")[-1]["agent_id"] == agent.agent_id


def _ssl(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)
