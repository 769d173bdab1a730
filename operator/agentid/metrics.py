"""Prometheus metrics of the operator and the token service (prometheus-client), and their HTTP endpoint.

Instrumented by the reconciler (passes, durations, errors, revocation latency), the token service (exchanges
granted/refused) and a periodic collector of agents by phase and mode (``run_agent_counts``, a task on the
operator's event loop reading its agent index: the index is never touched from the HTTP server's thread).
Labels never carry identities of individual agents (cardinality stays flat at thousands of agents) and never
carry secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from agentid.api.v1alpha1 import Phase, SupervisionMode

RECONCILES = Counter("agentid_reconcile_total", "Reconciliation passes", ["result"])
RECONCILE_SECONDS = Histogram(
    "agentid_reconcile_duration_seconds",
    "Duration of one reconciliation pass",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_ERRORS = Counter("agentid_api_errors_total", "API errors met while reconciling", ["reason"])
AGENTS = Gauge("agentid_agents", "AgentIdentities by phase and supervision mode", ["phase", "mode"])
REVOCATION_SECONDS = Histogram(
    "agentid_revocation_latency_seconds",
    "From the spec change (suspend/revoke/expiry) seen by the operator to access removed at the API server",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKEN_EXCHANGES = Counter("agentid_token_exchanges_total", "Token exchange requests", ["outcome", "error"])
INTROSPECTIONS = Counter("agentid_token_introspections_total", "Introspection requests", ["active"])
TOKEN_REVOCATIONS = Counter("agentid_token_revocations_total", "Tokens revoked through RFC 7009 /revoke")
SSF_STREAMS = Gauge("agentid_ssf_streams", "Shared Signals streams held by this token-service replica")
SSF_SETS = Counter("agentid_ssf_sets_total", "Security Event Tokens signed for delivery", ["method"])
SSF_DROPPED = Counter("agentid_ssf_sets_dropped_total", "Undelivered SETs dropped from a full stream log")
ADMISSION_REVIEWS = Counter("agentid_admission_reviews_total", "Admission reviews of AgentIdentities", ["allowed"])
SHARDS_HELD = Gauge(
    "agentid_shard_held", "1 while this replica holds the shard's Lease (reconciles its agents)", ["shard"]
)
ELECTION_WAITING = Gauge(
    "agentid_election_waiting_for_shards",
    "The shard count of the replicas of another --shards this replica waits for before it campaigns (0: none)",
)
POD_INJECTIONS = Counter("agentid_pod_injections_total", "Pods labelled agentid.dev/agent, by outcome", ["outcome"])


def serve(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:  # noqa: S104
    """Serve /metrics in a background thread (the scrape endpoint of the Pod)."""
    start_http_server(port, addr=addr, registry=registry)


AgentCounts = dict[tuple[str, str], int]


def agent_counts(bodies: Iterable[Mapping[str, Any]]) -> AgentCounts:
    """(phase, mode) -> number of agents, with every known combination present (zeros included), so a series never
    vanishes when its last agent goes. Reads only ``status.phase`` and ``spec.supervision.mode`` (with the API's
    defaults) instead of parsing thousands of whole objects on every pass."""
    counts: AgentCounts = {(phase.value, mode.value): 0 for phase in Phase for mode in SupervisionMode}
    for body in bodies:
        supervision = (body.get("spec") or {}).get("supervision") or {}
        phase = str((body.get("status") or {}).get("phase") or Phase.PENDING.value)
        mode = str(supervision.get("mode") or SupervisionMode.SUPERVISED.value)
        counts[(phase, mode)] = counts.get((phase, mode), 0) + 1
    return counts


class AgentGauge:
    """Publishes ``agent_counts`` into the ``agentid_agents`` gauge; combinations that disappear are removed."""

    def __init__(self, gauge: Gauge = AGENTS) -> None:
        self.gauge = gauge
        self._published: set[tuple[str, str]] = set()

    def publish(self, counts: AgentCounts) -> None:
        for phase, mode in self._published - counts.keys():
            self.gauge.remove(phase, mode)
        for (phase, mode), count in counts.items():
            self.gauge.labels(phase=phase, mode=mode).set(count)
        self._published = set(counts)


async def run_agent_counts(
    source: Callable[[], Iterable[Mapping[str, Any]]], *, interval: float = 15.0, gauge: Gauge = AGENTS
) -> None:
    """Every ``interval`` seconds, count the agents ``source`` returns (e.g. the operator's agent index) by phase
    and mode. Runs until cancelled; start it as a task on the loop that owns ``source``."""
    publisher = AgentGauge(gauge)
    while True:
        publisher.publish(agent_counts(source()))
        await asyncio.sleep(interval)
