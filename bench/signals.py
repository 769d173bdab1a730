"""P2 extended (``p2s``): Shared Signals and the cascade.

Called by ``bench.__main__``. The operator and the token service run as processes, as in P2.
- (e) an offline verifier (``agentid.verify``, JWKS only) with an SSF receiver (RFC 8936 long poll): from the
  suspend / revoke patch to the verifier refusing an agent JWT issued before it, probed every millisecond (no
  network per probe: the verifier is local). The same JWT checked by the same verifier *without* the receiver is
  still accepted at that moment; its refusal is bounded by the token's remaining lifetime, reported alongside.
- (f) cascade: a token delegated twice (subject → planner → orchestrator); the innermost actor (planner) is
  suspended; time until introspection answers inactive for the delegated token.
- events/s: the transmitter in this process, one core, signing one SET per event per stream for ``receivers``
  poll streams (SET signing is the cost; delivery is a dictionary append until a receiver polls).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx

from agentid.api.v1alpha1 import AgentIdentity, KeyAlgorithm
from agentid.domain import claims, keys
from agentid.kube import resources
from agentid.kube.resources import SERVICE_ACCOUNTS
from agentid.tokens.agents import AgentCache
from agentid.tokens.ssf import Transmitter
from agentid.verify import InvalidToken, JWKSCache, JWTVerifier, SignalReceiver, Verifier
from agentid.verify.introspection import ClientCredentials
from bench import report
from bench.environment import (
    KUBE_AUDIENCE,
    BenchCluster,
    ReadyWatch,
    TokenServiceProcess,
    agent_manifest,
    create_namespace,
    running_operator,
    service_account_token,
    unique,
)

ACTIONS = {
    "suspend": {"spec": {"supervision": {"mode": "Suspended", "reason": "benchmark"}}},
    "revoke": {"spec": {"revoked": True, "revocationReason": "benchmark"}},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
RECEIVER_ROLE = "agentid-bench-signals-receiver"
PROBE_INTERVAL = 0.001
PROBE_TIMEOUT = 10.0


async def run(cluster: BenchCluster, *, agents: int, repeat: int, receivers: int, events: int) -> dict[str, Any]:
    namespace = unique("bench-p2s")
    client = await cluster.client()
    issuer = cluster.endpoint.issuer
    signals_ms: dict[str, list[float]] = {action: [] for action in ACTIONS}
    remaining_s: dict[str, list[float]] = {action: [] for action in ACTIONS}
    offline_refused_early: dict[str, int] = dict.fromkeys(ACTIONS, 0)
    cascade_ms: list[float] = []
    service = TokenServiceProcess(cluster, label="p2s")
    try:
        await create_namespace(client, namespace)
        context = cluster.ssl_context()
        service.wait_ready(context)
        caller = await _receiver_token(client, namespace, issuer)
        with running_operator(cluster, [namespace], label=namespace):
            async with (
                httpx.AsyncClient(verify=context, trust_env=False, timeout=10) as http,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as tokens,
            ):
                keys_cache = JWKSCache(issuer, http=http)
                credentials = ClientCredentials(headers={"Authorization": f"Bearer {caller}"}, form={})
                receiver = SignalReceiver(
                    issuer, http=http, keys=keys_cache, credentials=lambda: credentials, name=unique("bench")
                )
                task = asyncio.create_task(receiver.run())
                async with asyncio.timeout(30):
                    await receiver.connected.wait()
                local = JWTVerifier(issuer=issuer, audience=KUBE_AUDIENCE, keys=keys_cache)
                guarded, offline = Verifier(jwt=local, signals=receiver), Verifier(jwt=local)
                exchange = Exchange(tokens, issuer, caller)
                for attempt in range(repeat):
                    names = {action: [f"{action}-{attempt}-{i:03d}" for i in range(agents)] for action in ACTIONS}
                    await _provision(client, namespace, [name for group in names.values() for name in group])
                    for action, group in names.items():
                        for name in group:
                            token = await exchange.agent_jwt(client, namespace, name)
                            await guarded.verify(token)  # open before the patch
                            started = time.perf_counter()
                            await client.patch(resources.AGENT_IDENTITIES, name, ACTIONS[action], namespace)
                            latency = await _refused_after(guarded, token, started)
                            if latency is not None:
                                signals_ms[action].append(latency)
                            try:
                                principal = await offline.verify(token)
                                remaining_s[action].append(principal.expires_at - time.time())
                            except InvalidToken:
                                offline_refused_early[action] += 1
                    for chain in range(max(1, agents // 2)):
                        cascade_ms.extend(await _cascade(client, namespace, exchange, f"{attempt}-{chain}"))
                task.cancel()
    finally:
        service.stop()
        await client.close()
    throughput = await _events_per_second(receivers=receivers, events=events)
    return _report(agents, repeat, signals_ms, remaining_s, offline_refused_early, cascade_ms, throughput)


class Exchange:
    def __init__(self, tokens: aiohttp.ClientSession, issuer: str, caller: str) -> None:
        self.tokens = tokens
        self.issuer = issuer
        self.caller = caller

    async def post(self, path: str, form: dict[str, str], **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.tokens.post(self.issuer + path, data=urlencode(form), headers={**FORM, **headers}) as response:
            return response.status, await response.json()

    async def exchange(self, subject: str, **extra: str) -> str:
        form = {
            "grant_type": claims.GRANT_TOKEN_EXCHANGE,
            "subject_token": subject,
            "subject_token_type": claims.TOKEN_TYPE_JWT,
            **extra,
        }
        for _ in range(600):
            status, body = await self.post("/token", form)
            if status == 200:
                return str(body["access_token"])
            await asyncio.sleep(0.05)  # the service's agent watch has not seen the agent's status yet
        raise RuntimeError(f"no token: {status} {body}")

    async def agent_jwt(self, client: Any, namespace: str, name: str, audience: str = KUBE_AUDIENCE) -> str:
        subject = await service_account_token(client, namespace, name, audience=self.issuer)
        return await self.exchange(subject, audience=audience)

    async def active(self, token: str) -> bool:
        status, body = await self.post("/introspect", {"token": token}, Authorization=f"Bearer {self.caller}")
        if status != 200:
            raise RuntimeError(f"introspection refused the caller: {status}")
        return bool(body.get("active"))


async def _refused_after(verifier: Verifier, token: str, started: float) -> float | None:
    while time.perf_counter() - started < PROBE_TIMEOUT:
        try:
            await verifier.verify(token)
        except InvalidToken:
            return time.perf_counter() - started
        await asyncio.sleep(PROBE_INTERVAL)
    return None


async def _cascade(client: Any, namespace: str, exchange: Exchange, attempt: str) -> list[float]:
    """One two-hop chain; suspend the innermost actor; until introspection says inactive."""
    subject, planner, orchestrator = (f"{role}-{attempt}" for role in ("subject", "planner", "orchestrator"))
    delegation = {"allowedActors": [{"name": planner}, {"name": orchestrator}], "maxDepth": 2}
    async with ReadyWatch(client, namespace) as ready:
        await client.create(
            resources.AGENT_IDENTITIES, agent_manifest(subject, namespace, delegation=delegation), namespace
        )
        for name in (planner, orchestrator):
            await client.create(resources.AGENT_IDENTITIES, agent_manifest(name, namespace), namespace)
        await ready.wait_ready([subject, planner, orchestrator], within=120)
    token = await exchange.agent_jwt(client, namespace, subject, audience=exchange.issuer)
    for actor in (planner, orchestrator):
        actor_token = await service_account_token(client, namespace, actor, audience=exchange.issuer)
        token = await exchange.exchange(
            token,
            subject_token_type=claims.TOKEN_TYPE_ACCESS_TOKEN,
            actor_token=actor_token,
            actor_token_type=claims.TOKEN_TYPE_JWT,
        )
    if not await exchange.active(token):
        raise RuntimeError("the delegated token is not active before the suspension")
    started = time.perf_counter()
    await client.patch(resources.AGENT_IDENTITIES, planner, ACTIONS["suspend"], namespace)
    while time.perf_counter() - started < PROBE_TIMEOUT:
        if not await exchange.active(token):
            return [time.perf_counter() - started]
        await asyncio.sleep(0.005)
    return []


async def _events_per_second(*, receivers: int, events: int) -> dict[str, Any]:
    """The transmitter alone: ``events`` supervision changes fanned out to ``receivers`` poll streams."""
    transmitter = Transmitter(issuer="https://issuer.bench", agents=AgentCache(), keyring=_Keyring(), max_log=events)
    for index in range(receivers):
        transmitter.create(
            owner=f"receiver-{index}",
            method="urn:ietf:rfc:8936",
            events_requested=("https://schemas.openid.net/secevent/caep/event-type/assurance-level-change",),
            description=None,
            endpoint_url=None,
            authorization_header=None,
        )
    autonomous, suspended = _agent("Autonomous"), _agent("Suspended")
    started = time.perf_counter()
    for index in range(events):
        old, new = (autonomous, suspended) if index % 2 == 0 else (suspended, autonomous)
        transmitter.on_agent_change(old, new)
    accepted = time.perf_counter() - started
    started = time.perf_counter()
    for stream in list(transmitter.streams.values()):  # every receiver polls once: each SET signed
        await transmitter.poll(stream, acks=[], max_events=events, return_immediately=True, wait=0)
    delivered = time.perf_counter() - started
    return {
        "receivers": receivers,
        "events": events,
        "sets_signed": transmitter.sent,
        "fan_out_seconds": round(accepted, 3),
        "events_fanned_out_per_second": round(events / accepted, 1),
        "delivery_seconds": round(delivered, 3),
        "sets_signed_per_second": round(transmitter.sent / delivered, 1),
        "events_delivered_to_all_per_second": round(events / (accepted + delivered), 2),
    }


class _Keyring:
    """The issuer keyring's one method the transmitter calls, with a fresh ES256 key (no apiserver)."""

    def __init__(self) -> None:
        self._key = keys.generate(KeyAlgorithm.ES256)

    def signing_key(self) -> keys.SigningKey:
        return self._key


def _agent(mode: str) -> AgentIdentity:
    body = agent_manifest("bench", "bench", supervision={"mode": mode})
    body["metadata"]["uid"] = "bench-uid"
    body["status"] = {"agentID": "spiffe://cluster.local/ns/bench/agent/bench", "phase": "Active"}
    return AgentIdentity.from_body(body)


async def _provision(client: Any, namespace: str, names: list[str]) -> None:
    async with ReadyWatch(client, namespace) as ready:
        await asyncio.gather(
            *(client.create(resources.AGENT_IDENTITIES, agent_manifest(name, namespace), namespace) for name in names)
        )
        await ready.wait_ready(names, within=300)


async def _receiver_token(client: Any, namespace: str, issuer: str) -> str:
    """A tool's ServiceAccount that may list agents cluster-wide (what an SSF stream requires), and its token."""
    await client.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace),
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench-receiver"}},
    )
    name = f"{RECEIVER_ROLE}-{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["agentid.dev"], "resources": ["agentidentities"], "verbs": ["list", "watch"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "bench-receiver", "namespace": namespace}],
    }
    await client.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body=role)
    await client.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=binding)
    path = SERVICE_ACCOUNTS.path(namespace, "bench-receiver", "token")
    body = {"apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": [issuer], "expirationSeconds": 3600}}
    return str((await client.request("POST", path, body=body))["status"]["token"])


def _report(  # noqa: PLR0917 - one call site, in order of the table
    agents: int,
    repeat: int,
    signals_ms: dict[str, list[float]],
    remaining_s: dict[str, list[float]],
    offline_refused_early: dict[str, int],
    cascade_ms: list[float],
    throughput: dict[str, Any],
) -> dict[str, Any]:
    table = report.Table(
        f"P2 extended: offline verifier, SSF receiver, cascade ({agents} agents per action, x{repeat})",
        ["measure", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
    )
    summary: dict[str, Any] = {}
    for action in ACTIONS:
        stats = report.latency_summary(signals_ms[action])
        summary[f"e_{action}_refused_with_receiver"] = stats
        table.add(f"(e) {action} → refused, with receiver", *_row(stats))
        without = report.latency_summary(remaining_s[action])
        summary[f"e_{action}_without_receiver_remaining_lifetime"] = without | {
            "refused_before_expiry": offline_refused_early[action]
        }
        table.add(f"(e) {action}, without receiver: still accepted, lifetime left", *_row(without))
    cascade = report.latency_summary(cascade_ms)
    summary["f_cascade_inactive"] = cascade
    table.add("(f) inner actor suspended → delegated token inactive", *_row(cascade))
    print(table.render(), flush=True)
    print(f"transmitter: {throughput}", flush=True)
    return {
        "benchmark": "P2S",
        "agents_per_action": agents,
        "repeat": repeat,
        "summary": summary,
        "transmitter": throughput,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _row(stats: dict[str, Any]) -> list[Any]:
    return [stats["n"], stats["p50_ms"], stats["p95_ms"], stats["p99_ms"], stats["max_ms"]]
