"""The kubectl plugin as a user runs it: `agentid list|describe|suspend|resume|revoke|audit|explain-token|crds` as
real processes against the session cluster and operator, with the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentid.api import crdgen
from agentid.cli import agents
from tests.support.agents import Agent, create_agent
from tests.support.clusters import ClusterHandle, kubectl_binary
from tests.support.tokens import (
    TokenServiceHandle,
    provisioned,
)

pytestmark = pytest.mark.cluster


def agentid(cluster: ClusterHandle, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """`agentid ARGS` with the cluster's kubeconfig, output piped (not a terminal: no colours)."""
    return subprocess.run(
        [sys.executable, "-m", "agentid", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )


def ready_agent(cluster: ClusterHandle, namespace: str, name: str, **spec: Any) -> Agent:
    agent = create_agent(cluster, namespace, name, **spec)
    agent.wait_ready()
    return agent


def test_list_shows_name_owner_mode_phase_ready_and_age(cluster: ClusterHandle, agent_namespace: str) -> None:
    ready_agent(cluster, agent_namespace, "lister")
    ready_agent(cluster, agent_namespace, "watcher", supervision={"mode": "Supervised"}, owner={"kind": "Group",
                "name": "sre"})  # fmt: skip

    table = agentid(cluster, "list", "-n", agent_namespace)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "OWNER", "MODE", "PHASE", "READY", "AGE"]
    assert lines[1].split()[:5] == ["lister", "alice@example.com", "Autonomous", "Active", "True"]
    assert lines[2].split()[:5] == ["watcher", "group:sre", "Supervised", "Supervised", "True"]
    assert "\x1b[" not in table.stdout, "no colours when stdout is not a terminal"

    listed = json.loads(agentid(cluster, "list", "-n", agent_namespace, "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert [(i["kind"], i["metadata"]["name"], i["status"]["phase"]) for i in listed["items"]] == [
        ("AgentIdentity", "lister", "Active"), ("AgentIdentity", "watcher", "Supervised")]  # fmt: skip
    as_yaml = yaml.safe_load(agentid(cluster, "list", "-n", agent_namespace, "-o", "yaml").stdout)
    assert [item["metadata"]["name"] for item in as_yaml["items"]] == ["lister", "watcher"]
    names = agentid(cluster, "list", "-n", agent_namespace, "-o", "name").stdout.splitlines()
    assert names == ["agentidentity.agentid.dev/lister", "agentidentity.agentid.dev/watcher"]
    wide = agentid(cluster, "list", "-n", agent_namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["AGENT-ID", "EXPIRES", "PURPOSE"]
    assert f"spiffe://cluster.local/ns/{agent_namespace}/agent/lister" in wide[1]

    everywhere = agentid(cluster, "list", "-A")
    assert everywhere.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [agent_namespace, "lister"] for line in everywhere.stdout.splitlines())


def test_list_of_an_empty_namespace_says_so_and_succeeds(cluster: ClusterHandle, namespace: str) -> None:
    result = agentid(cluster, "list", "-n", namespace)
    assert result.returncode == agents.EXIT_OK
    assert result.stdout == ""
    assert "No agents found" in result.stderr


def test_describe_shows_identity_access_keys_and_conditions_never_private_keys(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = ready_agent(cluster, agent_namespace, "described", clusterRoleRefs=["view"])
    status = agent.status()
    result = agentid(cluster, "describe", "described", "-n", agent_namespace)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        f"Agent ID:        {status['agentID']}",
        "Owner:           User alice@example.com",
        "Phase:           Active",
        "view (granted)",
        status["keys"][0]["keyID"],
        "Ready",
        "Provisioned",
    ):
        assert expected in out
    assert "PRIVATE KEY" not in out
    raw = json.loads(agentid(cluster, "describe", "described", "-n", agent_namespace, "-o", "json").stdout)
    assert raw["metadata"]["uid"] == agent.body()["metadata"]["uid"]
    assert (raw["apiVersion"], raw["kind"]) == ("agentid.dev/v1alpha1", "AgentIdentity")
    as_yaml = yaml.safe_load(agentid(cluster, "describe", "described", "-n", agent_namespace, "-o", "yaml").stdout)
    assert as_yaml["metadata"]["uid"] == raw["metadata"]["uid"]
    named = agentid(cluster, "describe", "described", "-n", agent_namespace, "-o", "name")
    assert named.stdout == "agentidentity.agentid.dev/described\n"


def test_suspend_and_resume_change_live_access_and_restore_the_previous_mode(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = ready_agent(cluster, agent_namespace, "pausable", supervision={"mode": "Autonomous"})
    token = agent.service_account_token()
    assert agent.can(token, "create") == 200

    suspended = agentid(cluster, "suspend", "pausable", "-n", agent_namespace, "--reason", "INC-7", "--wait")
    assert suspended.returncode == 0, suspended.stderr
    assert "is Suspended" in suspended.stdout
    assert agent.body()["spec"]["supervision"] == {"mode": "Suspended", "reason": "INC-7"}
    assert agent.can(token, "list") == 403

    again = agentid(cluster, "suspend", "pausable", "-n", agent_namespace)
    assert again.returncode == agents.EXIT_OK
    assert "already suspended" in again.stdout

    resumed = agentid(cluster, "resume", "pausable", "-n", agent_namespace, "--wait")
    assert resumed.returncode == 0, resumed.stderr
    assert agent.body()["spec"]["supervision"]["mode"] == "Autonomous"  # the mode it was suspended from
    assert agent.can(token, "create") == 200

    supervised = agentid(cluster, "resume", "pausable", "-n", agent_namespace, "--mode", "Supervised", "--wait")
    assert supervised.returncode == 0, supervised.stderr
    assert agent.status()["phase"] == "Supervised"
    assert agent.can(token, "create") == 403


def test_revoke_is_terminal_for_the_cli_too(cluster: ClusterHandle, agent_namespace: str) -> None:
    ready_agent(cluster, agent_namespace, "doomed")
    missing_reason = agentid(cluster, "revoke", "doomed", "-n", agent_namespace)
    assert missing_reason.returncode == agents.EXIT_USAGE

    revoked = agentid(cluster, "revoke", "doomed", "-n", agent_namespace, "--reason", "key leaked", "--wait")
    assert revoked.returncode == 0, revoked.stderr
    assert "is Revoked" in revoked.stdout

    for command in (["resume", "doomed"], ["suspend", "doomed"]):
        refused = agentid(cluster, *command, "-n", agent_namespace)
        assert refused.returncode == agents.EXIT_TERMINAL
        assert "terminal" in refused.stderr
    again = agentid(cluster, "revoke", "doomed", "-n", agent_namespace, "--reason", "again")
    assert again.returncode == agents.EXIT_OK
    assert "already revoked" in again.stdout


@pytest.mark.parametrize("command", [["describe"], ["suspend"], ["resume"], ["revoke", "--reason", "x"], ["audit"]])
def test_a_missing_agent_exits_3(cluster: ClusterHandle, namespace: str, command: list[str]) -> None:
    result = agentid(cluster, command[0], "ghost", *command[1:], "-n", namespace)
    assert result.returncode == agents.EXIT_NOT_FOUND
    assert "ghost" in result.stderr


def test_an_unreachable_api_server_exits_1(cluster: ClusterHandle, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    result = agentid(cluster, "list", "-A", f"--kubeconfig={broken}")
    assert result.returncode == agents.EXIT_ERROR
    assert "cannot reach the API server" in result.stderr


def test_audit_is_the_agents_timeline_oldest_first(cluster: ClusterHandle, agent_namespace: str) -> None:
    agent = ready_agent(cluster, agent_namespace, "audited")
    assert agentid(cluster, "suspend", "audited", "-n", agent_namespace, "--reason", "night", "--wait").returncode == 0
    assert agentid(cluster, "resume", "audited", "-n", agent_namespace, "--wait").returncode == 0

    timeline = json.loads(agentid(cluster, "audit", "audited", "-n", agent_namespace, "-o", "json").stdout)
    reasons = [entry["reason"] for entry in timeline]
    assert reasons[0] == "Provisioned"
    assert reasons.index("Suspended") < reasons.index("Resumed")
    assert {entry["uid"] for entry in timeline} == {agent.body()["metadata"]["uid"]}
    times = [entry["time"] for entry in timeline]
    assert times == sorted(times)

    table = agentid(cluster, "audit", "audited", "-n", agent_namespace)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert "owner User alice@example.com" in lines[0]
    assert lines[1].split() == ["TIME", "TYPE", "REASON", "MESSAGE"]
    assert "night" in table.stdout


def test_explain_token_shows_a_real_delegated_agent_tokens_chain_marked_unverified(
    cluster: ClusterHandle, agent_namespace: str, token_service: TokenServiceHandle
) -> None:
    orchestrator = provisioned(cluster, token_service, agent_namespace, "orchestrator")
    worker = provisioned(
        cluster, token_service, agent_namespace, "worker", delegation={"allowedActors": [{"name": "orchestrator"}],
        "maxDepth": 2}, credentials={"audiences": ["https://mcp.example.com"]},
    )  # fmt: skip
    issuer = token_service.issuer
    token = token_service.token(
        worker.service_account_token(issuer),
        actor_token=orchestrator.service_account_token(issuer),
        actor_token_type="urn:ietf:params:oauth:token-type:jwt",
        audience="https://mcp.example.com",
    )

    explained = agentid(cluster, "explain-token", "-", "-o", "json", input_text=token)
    assert explained.returncode == 0, explained.stderr
    document = json.loads(explained.stdout)
    assert document["verified"] is False
    assert document["claims"]["sub"] == worker.agent_id
    assert document["delegationChain"] == [f"{orchestrator.agent_id} ({agent_namespace}/orchestrator)"]

    text = agentid(cluster, "explain-token", token)
    assert text.stdout.startswith("UNVERIFIED")
    assert re.search(rf"^Agent: +{agent_namespace}/worker \(uid ", text.stdout, re.MULTILINE)
    assert f"actor {orchestrator.agent_id}" in text.stdout


def test_explain_token_of_garbage_exits_1(cluster: ClusterHandle) -> None:
    result = agentid(cluster, "explain-token", "not.a-token")
    assert result.returncode == agents.EXIT_ERROR
    assert "not a JWT" in result.stderr


def test_crds_prints_what_the_cluster_accepts(cluster: ClusterHandle, crds: None) -> None:
    result = agentid(cluster, "crds")
    assert result.returncode == 0
    printed = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert [doc["metadata"]["name"] for doc in printed] == [d.name for d in crdgen.DEFINITIONS]
    applied = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                              input_text=result.stdout)  # fmt: skip
    assert applied.returncode == 0


@pytest.mark.existing_cluster
def test_kubectl_runs_it_as_a_plugin(cluster: ClusterHandle, agent_namespace: str) -> None:
    ready_agent(cluster, agent_namespace, "plugged")
    scripts = Path(sys.executable).parent  # where pip put the kubectl-agentid console script
    result = subprocess.run(
        [kubectl_binary(), "agentid", "list", "-n", agent_namespace, f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[0] == "plugged"
