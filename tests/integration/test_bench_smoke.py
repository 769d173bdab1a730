"""The benchmarks run end to end at tiny sizes (``python -m bench --smoke``), so the suite never rots.

Nothing here judges speed: timings live only in bench/ and docs/benchmarks.md. What is checked is that every
benchmark ran against its baseline and wrote its result, and the invariants it exists to watch (every access
path closed after a revocation, no refused exchange under load, no write by a restarted operator).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentid.devcluster import assets

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One smoke run of every benchmark on its own control plane; their JSON results by name."""
    try:
        assets.find_binary("kube-apiserver")
    except assets.AssetsNotFound:
        pytest.skip("the benchmarks start their own control plane: its binaries are not built here")
    folder = tmp_path_factory.mktemp("bench-results")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", f"--results={folder}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = {path.name.split("-", 1)[0]: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert sorted(found) == ["p1", "p2", "p2s", "p3", "p4", "p5", "p6", "p7", "p8"], run.stdout[-3000:]
    return found


@pytest.mark.timeout(900)
def test_provisioning_compares_the_operator_with_the_raw_client(results: dict[str, dict[str, Any]]) -> None:
    p1 = results["p1"]
    assert p1["machine"]["cores"] >= 1
    for measured in p1["rounds"]:
        assert measured["baseline"]["seconds"] > 0
        assert measured["operator"]["seconds"] > 0
        assert measured["operator"]["writes_per_agent"] > 0
        assert measured["ratio"] > 0


@pytest.mark.timeout(900)
def test_revocation_closes_every_access_path_for_every_agent(results: dict[str, dict[str, Any]]) -> None:
    for action, paths in results["p2"]["summary"].items():
        for path, stats in paths.items():
            assert stats["not_closed"] == 0, f"{action}: {path}"
            assert stats["n"] == results["p2"]["agents_per_action"], f"{action}: {path}"


@pytest.mark.timeout(900)
def test_token_exchange_is_measured_warm_and_cold_without_refusals(results: dict[str, dict[str, Any]]) -> None:
    p3 = results["p3"]
    assert {row["cache"] for row in p3["rows"]} == {"warm", "cold"}
    assert all(row["errors"] == {} and row["n"] > 0 for row in p3["rows"])
    assert all(baseline["tokens_per_second"] > 0 for baseline in p3["baseline"])


@pytest.mark.timeout(900)
def test_a_killed_token_service_replica_costs_only_the_exchanges_on_its_connections(
    results: dict[str, dict[str, Any]],
) -> None:
    p5 = results["p5"]["tokens"]
    for killed in p5["failover"]:
        assert killed["backends_dropped"] == 1  # the killed replica's endpoint went away
        assert killed["succeeded_after_kill"] > 0  # the survivor took over
        # Each keep-alive connection to the killed replica can fail at most the one request it carried.
        assert killed["failed"] <= killed["connections_to_killed_replica"], killed["errors"]
    assert sorted(row["replicas"] for row in p5["scale"]) == sorted([1, 2] * p5["repeat"])
    assert all(row["failed"] == 0 and row["n"] > 0 for row in p5["scale"])


@pytest.mark.timeout(900)
def test_a_restarted_operator_resumes_every_agent_without_writing(results: dict[str, dict[str, Any]]) -> None:
    for measured in results["p4"]["rounds"]:
        assert [point["agents"] for point in measured["points"]] == [0, *sorted(results["p4"]["scale"])]
        assert all(point["rss_mb"] > 0 for point in measured["points"])
        assert measured["restart"]["writes"] == 0, measured["restart"]["requests"]


@pytest.mark.timeout(900)
def test_tool_verification_is_measured_against_a_bare_decode_and_introspection_is_cached(
    results: dict[str, dict[str, Any]],
) -> None:
    for measured in results["p6"]["rounds"]:
        in_process = measured["in_process"]
        for name in ("a_bare_jwt_decode", "b_verifier", "c_request_with_middleware", "d_request_without_middleware"):
            assert in_process[name]["n"] > 0
            assert in_process[name]["p50_us"] > 0
        introspection = measured["introspection"]
        assert introspection["no_cache"]["round_trips"] >= introspection["no_cache"]["n"]
        assert introspection["cache_5s"]["round_trips"] < introspection["cache_5s"]["n"]


def test_the_sidecar_loses_its_tokens_on_suspension_and_revocation_and_gets_them_back(
    results: dict[str, dict[str, Any]],
) -> None:
    p7 = results["p7"]
    for event in ("suspend_removed", "resume_back", "revoke_removed"):
        assert p7["latency"][event]["n"] == p7["agents"] * (p7["rounds"] if event != "revoke_removed" else 1)
    assert p7["rss_mb"]["max"] > 0
    assert p7["refresh"][0]["refreshes"] >= 1


def test_every_guardrail_change_reaches_the_existing_agent(results: dict[str, dict[str, Any]]) -> None:
    for scenario, stats in results["p8"]["summary"].items():
        assert stats["not_closed"] == 0, scenario
        assert stats["n"] >= 1, scenario


@pytest.mark.timeout(900)
def test_the_offline_verifier_refuses_with_the_receiver_and_not_without(results: dict[str, dict[str, Any]]) -> None:
    p2s = results["p2s"]
    for action in ("suspend", "revoke"):
        with_receiver = p2s["summary"][f"e_{action}_refused_with_receiver"]
        without = p2s["summary"][f"e_{action}_without_receiver_remaining_lifetime"]
        assert with_receiver["n"] == p2s["agents_per_action"] * p2s["repeat"]  # every token refused after the event
        assert without["n"] == with_receiver["n"]  # and every one still accepted without the receiver
        assert without["refused_before_expiry"] == 0
    assert p2s["summary"]["f_cascade_inactive"]["n"] >= 1
    assert p2s["transmitter"]["sets_signed"] == p2s["transmitter"]["receivers"] * p2s["transmitter"]["events"]


@pytest.mark.timeout(900)
def test_a_lost_leader_is_replaced_and_every_agent_of_the_burst_becomes_ready(
    results: dict[str, dict[str, Any]],
) -> None:
    rounds = results["p5"]["operator"]["rounds"]
    assert {measured["stop"] for measured in rounds} == {"kill", "term"}
    for measured in rounds:
        assert measured["successor"] != measured["leader"]
        assert (
            measured["writes_created"] + measured["writes_refused_by_webhook"] + measured["writes_unanswered"]
            == (measured["agents"])
        )
        assert measured["all_ready_s"] is not None  # every created agent became Ready after the stop
