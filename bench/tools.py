"""P6 tool-side verification: what agentid.verify costs a tool per request, and live introspection's latency.

Called by ``bench.__main__``. Two parts:
- in process, same run, same token (an ES256 agent token shaped as the service issues it, keys cached):
  (a) a bare ``jwt.decode`` with the key, issuer and audience — the floor; (b) ``JWTVerifier.verify`` (header
  checks, key lookup, decode, typed principal); (c) a whole request through ``AgentAuthMiddleware`` (verify,
  per-tool policy, audit record to a no-op sink) in front of an ASGI app that answers at once, minus nothing —
  compare it to (d) the same app without the middleware;
- against the real token service (its own process; an agent provisioned by the operator): the tool's
  ``IntrospectionClient`` answering for one token, without a cache (every call a round trip over HTTPS
  keep-alive, ServiceAccount caller authenticated by a cached TokenReview) and with its cache (5 s).
Timings are per call, in microseconds (p50, p99).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import keys
from agentid.verify import IntrospectionClient, JWKSCache, JWTVerifier, Policy, Rule, Verifier
from agentid.verify.asgi import AgentAuthMiddleware
from agentid.verify.introspection import ClientCredentials
from bench import report
from bench.environment import (
    BenchCluster,
    TokenServiceProcess,
    create_namespace,
    provision,
    running_operator,
    service_account_token,
    unique,
)

ISSUER = "https://issuer.bench"
RESOURCE = "https://tool.bench/mcp"
KEY = keys.generate(KeyAlgorithm.ES256)


def _agent_token() -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "spiffe://cluster.local/ns/finance/agent/invoice-triage",
        "aud": RESOURCE,
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "agent": {
            "namespace": "finance",
            "name": "invoice-triage",
            "uid": str(uuid.uuid4()),
            "owner": {"kind": "User", "name": "alice@example.com"},
            "supervision": "Autonomous",
            "attributes": {"costCenter": "4711", "team": "finance"},
        },
        "act": {"sub": "spiffe://cluster.local/ns/finance/agent/orchestrator"},
    }
    return jwt.encode(payload, KEY.private_key, algorithm="ES256", headers={"kid": KEY.key_id, "typ": "JWT"})


def _issuer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/.well-known/oauth-authorization-server":
        return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks.json"})
    return httpx.Response(200, json={"keys": [keys.public_only(KEY.jwk)]})


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def _us(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50_us": round(report.percentile(samples, 50) * 1e6, 1),
        "p99_us": round(report.percentile(samples, 99) * 1e6, 1),
    }


async def _in_process(n: int) -> dict[str, dict[str, Any]]:
    token = _agent_token()
    public = KEY.private_key.public_key()
    async with httpx.AsyncClient(transport=httpx.MockTransport(_issuer)) as http:
        verifier = JWTVerifier(issuer=ISSUER, audience=RESOURCE, keys=JWKSCache(ISSUER, http=http))
        await verifier.verify(token)  # discovery and JWKS once; then the hot path

        async def bare_decode() -> None:
            jwt.decode(token, public, algorithms=["ES256"], issuer=ISSUER, audience=RESOURCE)

        async def ok(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        middleware = AgentAuthMiddleware(
            ok,
            verifier=Verifier(jwt=verifier),
            resource=RESOURCE,
            policy=Policy([Rule(tools=("GET /*",))]),
            audit_sink=lambda record: None,
        )
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/mcp/invoices",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
            "query_string": b"",
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            return None

        async def through(app: Any) -> None:
            await app(dict(scope), receive, send)

        phases = {
            "a_bare_jwt_decode": bare_decode,
            "b_verifier": lambda: verifier.verify(token),
            "c_request_with_middleware": lambda: through(middleware),
            "d_request_without_middleware": lambda: through(ok),
        }
        results = {}
        for name, call in phases.items():
            await _timed(call, min(n, 200))  # warm up
            results[name] = _us(await _timed(call, n))
        return results


async def _introspection(cluster: BenchCluster, n: int) -> dict[str, dict[str, Any]]:
    namespace = unique("bench-p6")
    client = await cluster.client()
    service = TokenServiceProcess(cluster, label="p6")
    try:
        await create_namespace(client, namespace)
        context = cluster.ssl_context()
        service.wait_ready(context)
        with running_operator(cluster, [namespace], label=namespace):
            await provision(client, namespace, ["tool-caller"])
        issuer = cluster.endpoint.issuer
        caller = await service_account_token(client, namespace, "tool-caller", audience=issuer)
        credentials = ClientCredentials(headers={"Authorization": f"Bearer {caller}"}, form={})
        subject = await service_account_token(client, namespace, "tool-caller", audience=issuer)
        results = {}
        async with httpx.AsyncClient(verify=context, trust_env=False) as http:
            token = await _exchange(http, issuer, subject)
            for label, ttl in (("no_cache", 0.0), ("cache_5s", 5.0)):
                live = IntrospectionClient(f"{issuer}/introspect", http=http, credentials=lambda: credentials, ttl=ttl)
                await _until_active(live, token)
                samples = await _timed(functools.partial(live.introspect, token), n)
                results[label] = _us(samples) | {"round_trips": live.calls}
        return results
    finally:
        service.stop()
        await client.close()


async def _exchange(http: httpx.AsyncClient, issuer: str, subject: str) -> str:
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": subject,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    deadline = time.monotonic() + 60
    while True:
        response = await http.post(f"{issuer}/token", data=form)
        if response.status_code == 200:
            return str(response.json()["access_token"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"exchange failed: {response.status_code} {response.text[:200]}")
        await asyncio.sleep(0.1)


async def _until_active(live: IntrospectionClient, token: str) -> None:
    deadline = time.monotonic() + 30
    while (await live.introspect(token)).get("active") is not True:
        if time.monotonic() > deadline:
            raise RuntimeError("the token never became active at introspection")
        await asyncio.sleep(0.1)


async def run(cluster: BenchCluster, *, requests: int, repeat: int) -> dict[str, Any]:
    rounds = []
    for _ in range(repeat):
        in_process = await _in_process(requests)
        rounds.append({"in_process": in_process, "introspection": await _introspection(cluster, requests)})
    title = f"P6 tool-side verification ({requests} calls, x{repeat})"
    table = report.Table(title, ["round", "what", "p50 µs", "p99 µs"])
    for index, result in enumerate(rounds):
        for part in ("in_process", "introspection"):
            for name, stats in result[part].items():
                table.add(index, f"{part}/{name}", stats["p50_us"], stats["p99_us"])
    print(table.render(), flush=True)
    return {"benchmark": "P6", "requests": requests, "repeat": repeat, "rounds": rounds, "source": Path(__file__).name}
