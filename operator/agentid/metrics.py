"""Prometheus metrics of the operator and the token service (prometheus-client), and their HTTP endpoint.

Instrumented by the reconciler (passes, durations, errors, revocation latency), the token service (exchanges
granted/refused) and a periodic collector of agents by phase and mode. Labels never carry identities of
individual agents (cardinality stays flat at thousands of agents) and never carry secrets.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
ADMISSION_REVIEWS = Counter("agentid_admission_reviews_total", "Admission reviews of AgentIdentities", ["allowed"])


def serve(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:  # noqa: S104
    """Serve /metrics in a background thread (the scrape endpoint of the Pod)."""
    start_http_server(port, addr=addr, registry=registry)
