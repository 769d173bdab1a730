"""An operator's day 2: `agentid check` reports each broken piece on its own line, and the CLI's error paths (no
kubeconfig, an unreachable API server, CRDs not installed) are one line on stderr with the documented exit code.

A second, bare control plane (no CRDs, no webhook, no token service) is the broken installation; the session
cluster, with the session operator's webhook, token service and issuer trust, is the whole one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentid.cli import agents
from agentid.webhooks.configuration import webhook_configurations
from tests.support.cluster_setup import KUBE_AUDIENCE, reserved_port
from tests.support.clusters import ClusterHandle, second_cluster
from tests.support.tokens import TokenServiceHandle, provisioned

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def agentid(*args: str, kubeconfig: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "agentid", *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def bare_cluster(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    """A second control plane where nothing of agentid is installed."""
    with second_cluster(cluster, "a second, bare cluster") as bare:
        yield bare


# -- error paths ----------------------------------------------------------------------------------------------------


def test_a_missing_kubeconfig_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = agentid("list", kubeconfig=missing)
    assert result.returncode == agents.EXIT_ERROR
    assert one_error_line(result) == f"error: no kubeconfig at {missing} (set KUBECONFIG or pass --kubeconfig)"


def test_a_malformed_kubeconfig_is_one_line_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [\n")
    result = agentid("describe", "x", "--kubeconfig", str(broken))
    assert result.returncode == agents.EXIT_ERROR
    assert one_error_line(result).startswith(f"error: kubeconfig {broken}: ")


def test_a_kubeconfig_context_that_does_not_exist_is_one_line(cluster: ClusterHandle) -> None:
    result = agentid("list", "--context", "no-such-context", kubeconfig=cluster.kubeconfig)
    assert result.returncode == agents.EXIT_ERROR
    assert "no-such-context" in one_error_line(result)


def test_an_unreachable_api_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = reserved_port()  # reserved, nobody listens
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    for command in (["list"], ["check"], ["whoami"]):
        result = agentid(*command, kubeconfig=kubeconfig)
        assert result.returncode == agents.EXIT_ERROR, command
        assert one_error_line(result).startswith("error: cannot reach the API server: "), command


def test_missing_crds_are_reported_as_such_with_exit_5(bare_cluster: ClusterHandle) -> None:
    for command in (["list"], ["describe", "bot"], ["suspend", "bot"], ["audit", "bot"]):
        result = agentid(*command, kubeconfig=bare_cluster.kubeconfig)
        assert result.returncode == agents.EXIT_NOT_INSTALLED, command
        assert one_error_line(result).startswith("error: the agentid CRDs are not installed"), command


# -- check ----------------------------------------------------------------------------------------------------------


def check_lines(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """piece -> (status, detail), from lines like 'FAIL  token service: ...'."""
    assert "Traceback" not in result.stderr
    found = {}
    for line in result.stdout.splitlines():
        status, rest = line.split(maxsplit=1)
        piece, _, detail = rest.partition(": ")
        found[piece] = (status, detail)
    return found


def test_check_on_a_bare_cluster_reports_every_missing_piece_on_its_own_line(bare_cluster: ClusterHandle) -> None:
    result = agentid("check", "--operator-namespace", "agentid-system", kubeconfig=bare_cluster.kubeconfig)
    assert result.returncode == agents.EXIT_ERROR
    found = check_lines(result)
    assert found["CRD agentidentities.agentid.dev"] == ("FAIL", "not installed (install the chart, or `agentid crds`)")
    assert found["CRD agentpolicies.agentid.dev"][0] == "FAIL"
    assert found["operator"][0] == "SKIP"
    assert found["token service Pods"][0] == "SKIP"
    assert found["validating webhook"][0] == "FAIL"
    assert found["mutating webhook"][0] == "FAIL"
    assert found["webhook reachable"][0] == "SKIP"
    assert found["token service"][0] == "FAIL"
    assert "no Service labelled" in found["token service"][1]
    assert found["apiserver authentication"][0] == "SKIP"
    assert "problem(s)" in result.stderr


def test_check_names_a_webhook_the_api_server_cannot_call(bare_cluster: ClusterHandle) -> None:
    bare_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for name in ("agentidentities.agentid.dev", "agentpolicies.agentid.dev"):
        bare_cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    assert bare_cluster.local is not None
    dead = webhook_configurations(base_url=f"https://127.0.0.1:{reserved_port()}", ca_bundle=bare_cluster.local.ca.pem)
    bare_cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(dead))

    result = agentid("check", "-n", "default", kubeconfig=bare_cluster.kubeconfig)
    assert result.returncode == agents.EXIT_ERROR
    found = check_lines(result)
    assert found["CRD agentidentities.agentid.dev"][0] == "ok"
    assert found["validating webhook"] == ("ok", "agentid.dev/agentidentities.validate.agentid.dev")
    assert found["webhook reachable"][0] == "FAIL"
    assert "the API server cannot call it" in found["webhook reachable"][1]
    assert found["token service"][0] == "FAIL"


def test_check_reports_deployments_whose_pods_are_not_ready_and_version_skew(bare_cluster: ClusterHandle) -> None:
    """Nothing schedules Pods on this control plane: the chart's operator Deployment stays at 0/1 ready."""
    labels = {
        "app.kubernetes.io/part-of": "agentid",
        "app.kubernetes.io/component": "operator",
        "app.kubernetes.io/version": "0.0.1",
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "agentid-operator", "namespace": "agentid-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "agentid-operator"}},
            "template": {
                "metadata": {"labels": {"app": "agentid-operator"}},
                "spec": {"containers": [{"name": "operator", "image": "agentid:0.0.1"}]},
            },
        },
    }
    bare_cluster.kubectl("create", "namespace", "agentid-system", check=False)
    bare_cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(deployment))
    result = agentid("check", "-o", "json", kubeconfig=bare_cluster.kubeconfig)
    assert result.returncode == agents.EXIT_ERROR
    findings = {(f["piece"], f["status"]): f["detail"] for f in json.loads(result.stdout)}
    assert findings[("operator", "FAIL")].startswith("agentid-operator: 0/1 Pods ready")
    assert "runs agentid 0.0.1, this CLI is" in findings[("operator version", "WARN")]
    assert ("token service Pods", "SKIP") in findings


@pytest.mark.existing_cluster
def test_check_of_a_whole_installation_passes_and_proves_apiserver_authentication(
    cluster: ClusterHandle,
    token_service: TokenServiceHandle,
    apiserver_trusts_issuer: None,
    token_namespace: str,
) -> None:
    provisioned(
        cluster, token_service, token_namespace, "checker",
        supervision={"mode": "Autonomous"}, credentials={"audiences": [KUBE_AUDIENCE]},
    )  # fmt: skip
    result = agentid(
        "check",
        "-n", token_namespace,
        "--issuer", token_service.issuer,
        "--cacert", token_service.endpoint.ca,
        "--agent", f"{token_namespace}/checker",
        "--kube-audience", KUBE_AUDIENCE,
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    assert result.returncode == agents.EXIT_OK, result.stdout + result.stderr
    found = check_lines(result)
    assert {status for piece, (status, _) in found.items() if piece not in ("operator", "token service Pods")} == {
        "ok"
    }, result.stdout
    assert found["operator"][0] == "SKIP", "the session operator runs in-process, not as a Deployment"
    assert found["webhook reachable"] == ("ok", f"answered a dry-run create in {token_namespace}")
    assert found["token service"][1].startswith(f"issuer {token_service.issuer} answers discovery")
    assert found["apiserver authentication"][1].endswith(f"as agent:{token_namespace}:checker")
    assert cluster.kubectl("get", "agentidentities", "-n", token_namespace, "-o", "name").stdout.split() == [
        "agentidentity.agentid.dev/checker"
    ], "the dry run stored nothing"


@pytest.mark.existing_cluster
def test_check_finds_the_chart_token_service_by_its_labels_and_says_when_it_does_not_answer(
    cluster: ClusterHandle, crds: None, namespace: str
) -> None:
    """The chart's token Service, without Pods behind it (nothing runs on this control plane): found through the API
    server's Service proxy, reported as not answering."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "agentid-tokens",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "agentid", "app.kubernetes.io/component": "token-service"},
        },
        "spec": {"selector": {"app": "nothing"}, "ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
    }
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(service))
    result = agentid("check", "--operator-namespace", namespace, "-n", namespace, kubeconfig=cluster.kubeconfig)
    found = check_lines(result)
    status, detail = found["token service"]
    assert status == "FAIL"
    assert detail.startswith("discovery does not answer: "), detail
    # The proxy found the Service and had nowhere to send the request (a wrong proxy path is a 404 instead).
    assert 'no endpoints available for service "agentid-tokens"' in detail, detail
    assert result.returncode == agents.EXIT_ERROR
