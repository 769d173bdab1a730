"""The agent SDK (``agentid.client``) against the real token service: tokens, cache, refresh, delegation, RFC 7523
assertions, the requests and httpx helpers, and a typed error for every refusal."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import jwt
import kubernetes
import pytest
import requests

from agentid.client import AgentClient, AsyncAgentClient, Credentials, errors
from agentid.client.httpx_auth import AgentAuth
from agentid.domain import naming
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually, eventually_async
from tests.support.tokens import MCP, ProvisionedAgent, TokenServiceHandle, provisioned

pytestmark = pytest.mark.cluster
SPEC: dict[str, Any] = {"credentials": {"audiences": [MCP], "tokenTTL": "10m"}}


def credentials(service: TokenServiceHandle, agent: ProvisionedAgent, folder: Path, **extra: Any) -> Credentials:
    """What an injected Pod's environment says, with a TokenRequest-minted token standing in for the kubelet's."""
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "token"
    token_file.write_text(agent.service_account_token(service.issuer))
    return Credentials(
        token_url=f"{service.issuer}/token",
        introspection_url=f"{service.issuer}/introspect",
        ca_file=service.endpoint.ca,
        service_account_token_file=str(token_file),
        issuer=service.issuer,
        agent_id=agent.agent_id,
        agent=f"{agent.namespace}/{agent.name}",
        **extra,
    )


def mount_key(cluster: ClusterHandle, agent: ProvisionedAgent, folder: Path) -> Path:
    """The agent's key Secret as a volume would present it: one file per data key."""
    secret = kubernetes.client.CoreV1Api(cluster.admin()).read_namespaced_secret(
        naming.key_secret(agent.name), agent.namespace
    )
    folder.mkdir(parents=True)
    for key, value in (secret.data or {}).items():
        (folder / key).write_bytes(base64.b64decode(value))
    return folder


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


class Clock:
    def __init__(self) -> None:
        import time  # noqa: PLC0415

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_token_is_cached_and_refreshed_once_most_of_its_life_has_passed(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-cache", **SPEC)
    clock = Clock()
    client = AgentClient(credentials(token_service, agent, tmp_path), clock=clock)
    token = client.token(MCP)
    payload = claims_of(token)
    assert (payload["sub"], payload["aud"]) == (agent.agent_id, MCP)
    assert token_service.introspect(token)["active"] is True
    assert client.introspect(token)["sub"] == agent.agent_id
    assert client.token(MCP) == token  # cached
    clock.now += 0.79 * 600
    assert client.token(MCP) == token
    clock.now += 0.02 * 600  # past 80 % of its life
    refreshed = client.token(MCP)
    assert refreshed != token
    assert claims_of(refreshed)["jti"] != payload["jti"]


def test_the_async_client_shares_one_exchange_between_concurrent_callers(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-async", **SPEC)

    async def main() -> list[str]:
        async with AsyncAgentClient(credentials(token_service, agent, tmp_path)) as client:
            return list(await asyncio.gather(*(client.token(MCP) for _ in range(8))))

    tokens = asyncio.run(main())
    assert len(set(tokens)) == 1
    assert claims_of(tokens[0])["aud"] == MCP


def test_delegation_builds_the_act_chain(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    subject = provisioned(
        cluster, token_service, token_namespace, "sdk-subject", **SPEC,
        delegation={"allowedActors": [{"name": "sdk-actor"}], "maxDepth": 2},
    )  # fmt: skip
    actor = provisioned(cluster, token_service, token_namespace, "sdk-actor", **SPEC)
    stranger = provisioned(cluster, token_service, token_namespace, "sdk-stranger", **SPEC)
    handed_over = AgentClient(credentials(token_service, subject, tmp_path / "s")).token(MCP)

    delegated = AgentClient(credentials(token_service, actor, tmp_path / "a")).on_behalf_of(handed_over, MCP)
    payload = claims_of(delegated)
    assert payload["sub"] == subject.agent_id
    assert payload["act"]["sub"] == actor.agent_id
    assert token_service.introspect(delegated)["act"]["sub"] == actor.agent_id

    async def async_delegation() -> str:
        async with AsyncAgentClient(credentials(token_service, actor, tmp_path / "aa")) as client:
            return await client.on_behalf_of(handed_over, MCP)

    assert claims_of(asyncio.run(async_delegation()))["act"]["sub"] == actor.agent_id
    with pytest.raises(errors.DelegationRefused) as refused:
        AgentClient(credentials(token_service, stranger, tmp_path / "x")).on_behalf_of(handed_over, MCP)
    assert refused.value.reason == "ActorNotAllowed"


def test_with_the_agent_key_mounted_tokens_come_from_rfc_7523_assertions(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-key", **SPEC)
    key_dir = mount_key(cluster, agent, tmp_path / "key")
    keyed = Credentials(
        token_url=f"{token_service.issuer}/token",
        ca_file=token_service.endpoint.ca,
        key_dir=str(key_dir),
        issuer=token_service.issuer,
        agent_id=agent.agent_id,
    )
    client = AgentClient(keyed)
    assertion = client.assertion()
    header = jwt.get_unverified_header(assertion)
    assert header["kid"] == (key_dir / naming.KEY_SECRET_KEY_ID).read_text()
    assert claims_of(assertion)["iss"] == claims_of(assertion)["sub"] == agent.agent_id
    token = client.token(MCP)
    assert claims_of(token)["sub"] == agent.agent_id
    assert token_service.introspect(token)["active"] is True


def test_requests_and_httpx_send_the_agent_token_and_httpx_retries_a_401_once(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-auth", **SPEC)
    client = AgentClient(credentials(token_service, agent, tmp_path))
    prepared = requests.Request("GET", "https://mcp.example/tools", auth=client.auth(MCP)).prepare()
    bearer = prepared.headers["Authorization"].removeprefix("Bearer ")
    assert token_service.introspect(bearer)["active"] is True

    seen: list[str] = []
    rejected_first: list[bool] = []

    def resource_server(request: httpx.Request) -> httpx.Response:
        """An MCP server stand-in that introspects the bearer token at the real token service, and (once) claims
        the token was rejected, to exercise the retry with a fresh one."""
        token = request.headers["Authorization"].removeprefix("Bearer ")
        seen.append(token)
        if not rejected_first:
            rejected_first.append(True)
            return httpx.Response(401)
        return httpx.Response(200 if token_service.introspect(token)["active"] else 401)

    with httpx.Client(transport=httpx.MockTransport(resource_server), auth=AgentAuth(client, MCP)) as http:
        assert http.get("https://mcp.example/tools").status_code == 200
    assert len(seen) == 2
    assert seen[0] != seen[1]  # the 401 dropped the cached token


async def test_httpx_async_clients_get_the_agent_token_from_the_async_sdk(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-httpx-async", **SPEC)

    async def resource_server(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        answer = await asyncio.to_thread(token_service.introspect, token)
        return httpx.Response(200 if answer["active"] and answer["sub"] == agent.agent_id else 401)

    async with (
        AsyncAgentClient(credentials(token_service, agent, tmp_path)) as client,
        httpx.AsyncClient(transport=httpx.MockTransport(resource_server), auth=AgentAuth(client, MCP)) as http,
    ):
        assert (await http.get("https://mcp.example/tools")).status_code == 200


def test_every_refusal_is_a_typed_error(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-refusals", **SPEC)
    client = AgentClient(credentials(token_service, agent, tmp_path / "own"))
    with pytest.raises(errors.AudienceRefused) as audience:
        client.token("https://not-declared.example")
    assert audience.value.error == "invalid_target"
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "token").write_text("not-a-token")
    forged = Credentials(
        token_url=f"{token_service.issuer}/token",
        ca_file=token_service.endpoint.ca,
        service_account_token_file=str(garbage / "token"),
    )
    with pytest.raises(errors.InvalidCredentials):
        AgentClient(forged).token(MCP)
    unreachable = Credentials(token_url="https://127.0.0.1:1/token", service_account_token_file=str(garbage / "token"))
    with pytest.raises(errors.TokenServiceUnavailable):
        AgentClient(unreachable).token(MCP)

    client.token(MCP)
    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident"}})
    eventually(lambda: refused_as(client, errors.AgentSuspended), what="AgentSuspended")
    # Revocation deletes the ServiceAccount: its token turns invalid, and the SDK asks with its last agent token
    # why, so the agent still learns it was revoked (not merely "invalid credentials").
    agent.patch_spec({"revoked": True, "revocationReason": "compromised"})
    refusal = eventually(lambda: refused_as(client, errors.AgentRevoked), what="AgentRevoked")
    assert refusal.reason == "Revoked"


def refused_as(client: AgentClient, expected: type[errors.TokenRefused]) -> errors.TokenRefused:
    """For ``eventually``: an AssertionError (retried) until the token service has seen the change."""
    client.invalidate()
    refusal: errors.TokenRefused | None = None
    try:
        client.token(MCP)
    except errors.TokenRefused as refused:
        refusal = refused
    assert isinstance(refusal, expected), repr(refusal)
    return refusal


async def test_the_async_client_raises_the_same_typed_errors(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "sdk-async-refusals", **SPEC)
    async with AsyncAgentClient(credentials(token_service, agent, tmp_path)) as client:
        await client.token(MCP)
        with pytest.raises(errors.AudienceRefused):
            await client.token("https://not-declared.example")

        async def refused(expected: type[errors.TokenRefused]) -> bool:
            """As ``refused_as``: an AssertionError (retried) until the token service has seen the change — not
            ``pytest.raises``, whose "DID NOT RAISE" is no AssertionError and would end the polling at once."""
            client.invalidate()
            refusal: errors.TokenRefused | None = None
            try:
                await client.token(MCP)
            except errors.TokenRefused as raised:
                refusal = raised
            assert isinstance(refusal, expected), repr(refusal)
            return True

        agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident"}})
        await eventually_async(lambda: refused(errors.AgentSuspended), what="AgentSuspended")
        agent.patch_spec({"revoked": True, "revocationReason": "compromised"})
        await eventually_async(lambda: refused(errors.AgentRevoked), what="AgentRevoked")
