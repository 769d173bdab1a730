"""The CLI as a user runs it: `agentid serve` as a real process, `agentid token`, `verify` and `whoami`."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agentid.devcluster.processes import ManagedProcess
from tests.support.cluster_setup import KUBE_AUDIENCE, TokenServiceEndpoint
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import (
    MCP,
    SERVICE_NAMESPACE,
    TokenServiceHandle,
    ensure_namespace,
    fresh_endpoint,
    provisioned,
)

pytestmark = pytest.mark.cluster


def agentid(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentid", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def served(cluster: ClusterHandle, token_service: TokenServiceHandle, tmp_path: Path) -> Iterator[TokenServiceEndpoint]:
    """`agentid serve` as a child process with its own port, certificate and keyring Secret."""
    ensure_namespace(cluster, SERVICE_NAMESPACE)
    endpoint = fresh_endpoint()
    process = ManagedProcess(
        "agentid-serve",
        [
            sys.executable,
            "-m",
            "agentid",
            "serve",
            f"--issuer={endpoint.issuer}",
            "--host=127.0.0.1",
            f"--port={endpoint.port}",
            f"--tls-cert={endpoint.cert}",
            f"--tls-key={endpoint.key}",
            f"--namespace={SERVICE_NAMESPACE}",
            f"--secret-name=cli-{uuid.uuid4().hex[:6]}",
            f"--kubeconfig={cluster.kubeconfig}",
        ],
        log_path=tmp_path / "serve.log",
    )

    def ready() -> bool:
        assert process.alive(), process.log_tail()
        try:
            return requests.get(f"{endpoint.issuer}/readyz", verify=endpoint.ca, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        eventually(ready, timeout=60, what="agentid serve ready")
        yield endpoint
    finally:
        process.stop()
    assert process.popen.returncode == 0, process.log_tail()


def test_serve_token_and_verify_work_together(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, served: TokenServiceEndpoint
) -> None:
    provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        supervision={"mode": "Supervised"},
        credentials={"audiences": [MCP]},
    )
    issued = agentid(
        "token",
        f"--issuer={served.issuer}",
        f"--agent={token_namespace}/triage",
        f"--audience={MCP}",
        f"--cacert={served.ca}",
        f"--kubeconfig={cluster.kubeconfig}",
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()

    verified = agentid("verify", token, f"--issuer={served.issuer}", f"--cacert={served.ca}", f"--audience={MCP}")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("VALID")
    assert f"agent: {token_namespace}/triage" in verified.stdout
    assert "supervision: Supervised" in verified.stdout
    assert "delegation: none" in verified.stdout

    wrong_audience = agentid(
        "verify",
        "-",
        f"--issuer={served.issuer}",
        f"--cacert={served.ca}",
        "--audience=https://other.example",
        input_text=token,
    )
    assert wrong_audience.returncode == 1
    assert token not in wrong_audience.stdout + wrong_audience.stderr


def test_token_reports_refusals_without_a_traceback(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, served: TokenServiceEndpoint
) -> None:
    provisioned(cluster, token_service, token_namespace, "triage", supervision={"mode": "Suspended"})
    refused = agentid(
        "token",
        f"--issuer={served.issuer}",
        f"--agent={token_namespace}/triage",
        f"--cacert={served.ca}",
        f"--kubeconfig={cluster.kubeconfig}",
    )
    assert refused.returncode == 1
    assert "invalid_grant" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.usefixtures("apiserver_trusts_issuer")
def test_whoami_shows_what_the_apiserver_makes_of_an_agent_token(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str, tmp_path: Path
) -> None:
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        supervision={"mode": "Autonomous"},
        credentials={"audiences": [KUBE_AUDIENCE]},
    )
    token_file = tmp_path / "agent.jwt"
    token_file.write_text(
        token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    )
    shown = agentid("whoami", f"--token={token_file}", f"--kubeconfig={cluster.kubeconfig}")
    assert shown.returncode == 0, shown.stderr
    assert f"username: agent:{token_namespace}:triage" in shown.stdout
    assert f"agentid:uid:{agent.uid}" in shown.stdout
    assert "extra agentid.dev/owner: User:alice@example.com" in shown.stdout

    admin = agentid("whoami", f"--kubeconfig={cluster.kubeconfig}")
    assert "username: admin" in admin.stdout


def test_print_authentication_config_emits_what_the_apiserver_loads() -> None:
    printed = agentid("serve", "--issuer=https://tokens.example", "--print-authentication-config")
    assert printed.returncode == 0, printed.stderr
    assert "apiVersion: apiserver.config.k8s.io/v1" in printed.stdout
    assert "agentid:uid:" in printed.stdout
