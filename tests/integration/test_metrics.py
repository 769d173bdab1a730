"""Prometheus metrics: `agentid run --metrics-port` serves every metric family while it reconciles, and the
agents-by-phase-and-mode gauge counts what the operator's index holds."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from agentid import metrics
from agentid.devcluster.ports import free_port
from agentid.devcluster.processes import ManagedProcess
from tests.support.agents import agent_manifest, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually, eventually_async

FAMILIES = {
    "agentid_reconcile": "counter",
    "agentid_reconcile_duration_seconds": "histogram",
    "agentid_api_errors": "counter",
    "agentid_agents": "gauge",
    "agentid_revocation_latency_seconds": "histogram",
    "agentid_token_exchanges": "counter",
    "agentid_token_introspections": "counter",
    "agentid_admission_reviews": "counter",
}


def scrape(url: str) -> dict[str, Any]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(response.text)}


@pytest.fixture
def metrics_operator(cluster: ClusterHandle, crds: None, namespace: str, tmp_path: Path) -> Iterator[str]:
    """`agentid run` as a process watching ``namespace`` (one the session operator leaves alone); its /metrics URL."""
    port = free_port()
    process = ManagedProcess(
        "metrics-operator",
        [sys.executable, "-m", "agentid", "run", f"--kubeconfig={cluster.kubeconfig}", f"--namespace={namespace}",
         f"--metrics-port={port}", "--log-format=plain"],
        log_path=tmp_path / "operator.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def serving() -> bool:
        assert process.alive(), process.log_tail()
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    eventually(serving, timeout=60, what="metrics endpoint up")
    yield url
    process.stop()


@pytest.mark.cluster
def test_a_running_operator_serves_every_metric_family(
    cluster: ClusterHandle, namespace: str, metrics_operator: str
) -> None:
    create_agent(cluster, namespace, "measured").wait_ready(timeout=60)
    families = scrape(metrics_operator)
    for name, kind in FAMILIES.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind
    revocation = families["agentid_revocation_latency_seconds"]
    assert {sample.labels.get("kind") for sample in revocation.samples} <= {None, "suspend", "revoke", "expiry"}


@pytest.mark.cluster
def test_a_running_operator_counts_agents_and_reconcile_passes(
    cluster: ClusterHandle, namespace: str, metrics_operator: str
) -> None:
    create_agent(cluster, namespace, "counted").wait_ready(timeout=60)
    create_agent(cluster, namespace, "paused", supervision={"mode": "Suspended"})

    def counted() -> bool:
        samples = {
            (s.labels.get("phase"), s.labels.get("mode")): s.value
            for s in scrape(metrics_operator)["agentid_agents"].samples
        }
        return samples.get(("Active", "Autonomous")) == 1 and samples.get(("Suspended", "Suspended")) == 1

    eventually(counted, timeout=20, what="agents counted by phase and mode")
    passes = scrape(metrics_operator)["agentid_reconcile"].samples
    assert sum(s.value for s in passes if s.name == "agentid_reconcile_total") >= 2


# -- the gauge publisher, without a cluster ---------------------------------------------------------------------------


def body(name: str, mode: str | None, phase: str | None) -> dict[str, Any]:
    manifest = agent_manifest(name, "team-a")
    if mode is None:
        del manifest["spec"]["supervision"]
    else:
        manifest["spec"]["supervision"] = {"mode": mode}
    if phase is not None:
        manifest["status"] = {"phase": phase}
    return manifest


def test_agents_are_counted_by_phase_and_mode_with_every_combination_present() -> None:
    counts = metrics.agent_counts(
        [body("a", "Autonomous", "Active"), body("b", "Autonomous", "Active"), body("c", None, None),
         body("d", "Suspended", "Suspended")]
    )  # fmt: skip
    assert counts[("Active", "Autonomous")] == 2
    assert counts[("Pending", "Supervised")] == 1  # no status yet, the API's default mode
    assert counts[("Suspended", "Suspended")] == 1
    assert counts[("Revoked", "Autonomous")] == 0
    assert len(counts) == 7 * 3


def test_the_gauge_follows_the_counts_and_drops_combinations_that_vanish() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("agentid_agents", "test", ["phase", "mode"], registry=registry)
    publisher = metrics.AgentGauge(gauge)
    publisher.publish({("Active", "Autonomous"): 2, ("Futuristic", "Autonomous"): 1})
    assert registry.get_sample_value("agentid_agents", {"phase": "Futuristic", "mode": "Autonomous"}) == 1
    publisher.publish({("Active", "Autonomous"): 0})
    assert registry.get_sample_value("agentid_agents", {"phase": "Active", "mode": "Autonomous"}) == 0
    assert registry.get_sample_value("agentid_agents", {"phase": "Futuristic", "mode": "Autonomous"}) is None


async def test_run_agent_counts_publishes_from_its_source_until_cancelled() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("agentid_agents", "test", ["phase", "mode"], registry=registry)
    agents = [body("a", "Supervised", "Supervised")]
    task = asyncio.create_task(metrics.run_agent_counts(lambda: list(agents), interval=0.01, gauge=gauge))
    supervised = {"phase": "Supervised", "mode": "Supervised"}
    try:
        await eventually_async(lambda: _value(registry, supervised, 1), what="one agent published")
        agents.append(body("b", "Supervised", "Supervised"))
        await eventually_async(lambda: _value(registry, supervised, 2), what="two agents published")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _value(registry: CollectorRegistry, labels: dict[str, str], expected: float) -> bool:
    return registry.get_sample_value("agentid_agents", labels) == expected
