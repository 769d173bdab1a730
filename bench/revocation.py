"""P2 revocation latency: from the spec patch (suspend, revoke) to each access path being closed.

Called by ``bench.__main__``. The operator and the token service run as processes; ``agents`` agents are suspended
and as many others revoked, one agent at a time (nothing else in flight). Before each patch all four paths are
proven open; from the moment the patch is sent, four probes run back to back (``probe_interval`` apart) until
each path is closed:
- (a) the agent's ServiceAccount token lists ConfigMaps at the apiserver: 200 → 403 (the RoleBinding is gone);
- (b) exchanging a ServiceAccount token at the token service: 200 → refused;
- (c) introspecting an agent JWT issued before the patch: active → inactive;
- (d) the same agent JWT lists ConfigMaps at the apiserver: 200 → 401/403.
A latency is the time from sending the patch to the first response showing the path closed (an upper bound,
resolution about one probe round trip).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from agentid.domain import claims
from agentid.kube import resources
from agentid.kube.resources import SERVICE_ACCOUNTS
from bench import report
from bench.environment import (
    KUBE_AUDIENCE,
    BenchCluster,
    TokenServiceProcess,
    create_namespace,
    provision,
    running_operator,
    service_account_token,
    unique,
)

PATHS = ("a_serviceaccount_403", "b_exchange_refused", "c_introspection_inactive", "d_agent_jwt_denied")
ACTIONS = {
    "suspend": {"spec": {"supervision": {"mode": "Suspended", "reason": "benchmark"}}},
    "revoke": {"spec": {"revoked": True, "revocationReason": "benchmark"}},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    name: str
    service_account_token: str  # audience: the apiserver
    subject_token: str  # audience: the token service
    agent_jwt: str  # audience: the apiserver, issued by the token service


class Probes:
    def __init__(
        self, namespace: str, server: str, issuer: str, kube: aiohttp.ClientSession, tokens: aiohttp.ClientSession
    ) -> None:
        self.caller_token = ""  # a tool's ServiceAccount token: introspection callers authenticate (RFC 7662 §2.1)
        self.namespace = namespace
        self.server = server
        self.issuer = issuer
        self.kube = kube
        self.tokens = tokens

    async def list_configmaps(self, token: str) -> int:
        url = f"{self.server}/api/v1/namespaces/{self.namespace}/configmaps?limit=1"
        async with self.kube.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            await response.read()
            return response.status

    async def exchange(self, subject_token: str, **extra: str) -> tuple[int, dict[str, Any]]:
        form = {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
            **extra,
        }
        async with self.tokens.post(f"{self.issuer}/token", data=urlencode(form), headers=FORM) as response:
            return response.status, await response.json()

    async def introspect(self, token: str) -> bool:
        headers = {**FORM, "Authorization": f"Bearer {self.caller_token}"}
        async with self.tokens.post(
            f"{self.issuer}/introspect", data=urlencode({"token": token}), headers=headers
        ) as response:
            answer = await response.json()
            if response.status != 200:  # a refused caller is not a closed path
                raise RuntimeError(f"introspection refused the caller: {response.status} {answer}")
            return bool(answer.get("active"))

    def closed_checks(self, credentials: Credentials) -> dict[str, Callable[[], Awaitable[bool]]]:
        """Per path: a call that returns True once that path is closed."""

        async def a() -> bool:
            return await self.list_configmaps(credentials.service_account_token) in (401, 403)

        async def b() -> bool:
            status, _ = await self.exchange(credentials.subject_token)
            return status != 200

        async def c() -> bool:
            return not await self.introspect(credentials.agent_jwt)

        async def d() -> bool:
            return await self.list_configmaps(credentials.agent_jwt) in (401, 403)

        return dict(zip(PATHS, (a, b, c, d), strict=True))


async def _first_closed(check: Callable[[], Awaitable[bool]], started: float, interval: float) -> float | None:
    while time.perf_counter() - started < PROBE_TIMEOUT:
        if await check():
            return time.perf_counter() - started
        await asyncio.sleep(interval)
    return None


async def _all_open(probes: Probes, credentials: Credentials, within: float) -> None:
    deadline = time.monotonic() + within
    checks = probes.closed_checks(credentials)
    for path, check in checks.items():
        while await check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{credentials.name}: path {path} is not open before the patch")
            await asyncio.sleep(0.1)


async def run(cluster: BenchCluster, *, agents: int, probe_interval: float, repeat: int) -> dict[str, Any]:
    namespace = unique("bench-p2")
    client = await cluster.client()
    samples: dict[str, dict[str, list[float]]] = {action: {path: [] for path in PATHS} for action in ACTIONS}
    unclosed: dict[str, dict[str, int]] = {action: dict.fromkeys(PATHS, 0) for action in ACTIONS}
    service = TokenServiceProcess(cluster, label="p2")
    try:
        await create_namespace(client, namespace)
        context = cluster.ssl_context()
        service.wait_ready(context)
        with running_operator(cluster, [namespace], label=namespace):
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as kube,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as tokens,
            ):
                probes = Probes(namespace, str(client.configuration.host), cluster.endpoint.issuer, kube, tokens)
                probes.caller_token = await _tool_token(client, namespace, cluster.endpoint.issuer)
                for attempt in range(repeat):
                    names = {action: [f"{action}-{attempt}-{i:03d}" for i in range(agents)] for action in ACTIONS}
                    await provision(client, namespace, [name for group in names.values() for name in group])
                    for action, group in names.items():
                        for name in group:
                            credentials = await _credentials(client, probes, namespace, name)
                            # The first agent waits for the apiserver to trust the issuer (discovery, JWKS).
                            await _all_open(probes, credentials, within=90 if name == group[0] else 30)
                            started = time.perf_counter()
                            await client.patch(resources.AGENT_IDENTITIES, name, ACTIONS[action], namespace)
                            checks = probes.closed_checks(credentials)
                            results = await asyncio.gather(
                                *(_first_closed(check, started, probe_interval) for check in checks.values())
                            )
                            for path, latency in zip(PATHS, results, strict=True):
                                if latency is None:
                                    unclosed[action][path] += 1
                                else:
                                    samples[action][path].append(latency)
    finally:
        service.stop()
        await client.close()

    table = report.Table(
        f"P2 revocation latency ({agents} agents per action, x{repeat})",
        ["action", "path", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "not closed"],
    )
    summary: dict[str, dict[str, Any]] = {}
    for action in ACTIONS:
        summary[action] = {}
        for path in PATHS:
            stats = report.latency_summary(samples[action][path]) | {"not_closed": unclosed[action][path]}
            summary[action][path] = stats
            table.add(
                action,
                path,
                stats["n"],
                stats["p50_ms"],
                stats["p95_ms"],
                stats["p99_ms"],
                stats["max_ms"],
                stats["not_closed"],
            )
    print(table.render(), flush=True)
    return {
        "benchmark": "P2",
        "agents_per_action": agents,
        "repeat": repeat,
        "probe_interval_seconds": probe_interval,
        "summary": summary,
        "samples_ms": {
            action: {path: [round(s * 1000, 2) for s in values] for path, values in paths.items()}
            for action, paths in samples.items()
        },
    }


async def _tool_token(client: Any, namespace: str, issuer: str) -> str:
    """A token of a plain (non-agent) ServiceAccount, as a tool calling introspection would hold."""
    await client.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace),
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench-tool"}},
    )
    path = SERVICE_ACCOUNTS.path(namespace, "bench-tool", "token")
    body = {"apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": [issuer], "expirationSeconds": 3600}}
    return str((await client.request("POST", path, body=body))["status"]["token"])


async def _credentials(client: Any, probes: Probes, namespace: str, name: str) -> Credentials:
    service_account = await service_account_token(client, namespace, name)
    subject = await service_account_token(client, namespace, name, audience=probes.issuer)
    for _ in range(600):
        status, body = await probes.exchange(subject, audience=KUBE_AUDIENCE)
        if status == 200:
            return Credentials(name, service_account, subject, str(body["access_token"]))
        await asyncio.sleep(0.05)  # the service's agent watch has not seen the agent's status yet
    raise RuntimeError(f"{namespace}/{name}: no agent token: {status} {body}")
