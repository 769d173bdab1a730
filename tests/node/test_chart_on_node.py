"""The Helm chart running for real on the node: its operator (two replicas, one leader) and token service in Pods,
the example agents reconciled by the in-Pod operator, a workload Pod using its agent identity end to end (projected
ServiceAccount token -> in-cluster token service -> kube-apiserver), suspend/resume seen from inside the Pod, the
leader Pod killed mid-burst and replaced by the other replica, ``helm upgrade`` rolling without an outage, and the
documented uninstall (``agentid uninstall``, ``helm uninstall``, ``agentid uninstall``) leaving nothing behind.

The tests run in file order on one release (the last one uninstalls it). Timings go to bench/results.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from agentid.api import v1alpha1
from agentid.devcluster import chartrelease
from agentid.devcluster import node as devnode
from agentid.domain import attribution
from tests.node import chart
from tests.node.conftest import NodeEnv
from tests.support.polling import eventually

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RELEASE = chart.Release(name="agentid", namespace="agentid-system")
TIMINGS: dict[str, float] = {}
WORKLOAD_NAMESPACE = "finance-agents"
WORKLOAD_AGENT = "invoice-triage"


@pytest.fixture(scope="module")
def release(node_env: NodeEnv) -> Iterator[chart.Release]:
    TIMINGS.update(node_env.timings)
    TIMINGS["helm_install_wait_s"] = chart.install(node_env, RELEASE)
    TIMINGS.update(_node_memory_mb(node_env))
    yield RELEASE
    _write_timings()


def _node_memory_mb(env: NodeEnv) -> dict[str, float]:
    """What the node costs in memory with the chart running: its processes (containerd, kubelet, kube-proxy,
    scheduler, forwards) and the shims, plus the Pods' cgroup."""
    processes = [psutil.Process(process.pid) for process in env.node.processes if process.alive()]
    shims = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "containerd-shim-runc-v2"]
    rss = sum(process.memory_info().rss for process in processes + shims)
    pods = Path("/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes")
    pods_bytes = int(pods.read_text()) if pods.exists() else 0
    return {"node_processes_rss_mb": rss / 2**20, "pods_memory_mb": pods_bytes / 2**20}


def _write_timings() -> None:
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "node-timings.json").write_text(json.dumps({k: round(v, 2) for k, v in TIMINGS.items()}, indent=2))


def _pods(env: NodeEnv, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", namespace, "-o", "json"] + ([f"-l={selector}"] if selector else [])
    return list(json.loads(env.kubectl(*args))["items"])


def _ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("metadata", {}).get("deletionTimestamp") is None and conditions.get("Ready") == "True"


def _agent(env: NodeEnv, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(env.kubectl("get", "agentidentity", name, "-n", namespace, "-o", "json")))


def _agent_ready(env: NodeEnv, namespace: str, name: str) -> bool:
    body = _agent(env, namespace, name)
    conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
    ready = conditions.get("Ready", {})
    return ready.get("status") == "True" and ready.get("observedGeneration") == body["metadata"]["generation"]


def _not_ready(env: NodeEnv, wanted: set[tuple[str, str]]) -> list[str]:
    """Which of the (namespace, name) agents are not Ready for their current generation (one list call)."""
    items = json.loads(env.kubectl("get", "agentidentities", "--all-namespaces", "-o", "json"))["items"]
    ready = set()
    for body in items:
        conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        condition = conditions.get("Ready", {})
        if condition.get("status") == "True" and condition.get("observedGeneration") == body["metadata"]["generation"]:
            ready.add((body["metadata"]["namespace"], body["metadata"]["name"]))
    return sorted(f"{namespace}/{name}" for namespace, name in wanted - ready)


def _wait_ready(env: NodeEnv, docs: list[dict[str, Any]], timeout: float) -> None:
    wanted = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in docs}
    eventually(lambda: _not_ready(env, wanted) == [], timeout=timeout, what=f"Ready: {sorted(wanted)}")


def _example_documents() -> list[dict[str, Any]]:
    """Every example but the workload Deployment (it names images from a registry; its own test runs one here)."""
    docs = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc["kind"] != "Deployment"]


def _try_apply(env: NodeEnv, documents: list[dict[str, Any]]) -> bool:
    """Apply; False (not an exception) while the webhook refuses, e.g. with no operator Pod to answer."""
    applied = env.cluster.kubectl(
        "apply", "--server-side", "-f", "-", input_text=yaml.safe_dump_all(documents), check=False
    )
    return applied.returncode == 0


def _https_get(env: NodeEnv, url: str) -> int:
    context = ssl.create_default_context(cafile=str(env.local.ca.cert_path))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 - https only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0


# -- install -------------------------------------------------------------------------------------------------------


def test_helm_install_runs_the_operator_and_the_token_service_in_pods(
    node_env: NodeEnv, release: chart.Release
) -> None:
    pods = _pods(node_env, release.namespace)
    components = sorted(pod["metadata"]["labels"]["app.kubernetes.io/component"] for pod in pods)
    assert components == ["operator", "operator", "token-service", "token-service"]  # every one a replica of two
    for pod in pods:
        assert _ready(pod), pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == devnode.NODE_NAME
        assert pod["status"]["podIP"].startswith("10.89.0.")
        image = pod["status"]["containerStatuses"][0]["image"]
        assert image.endswith(f"{node_env.agentid_image.repository.removeprefix('localhost/')}:dev"), image
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    # The token service answers at its issuer (a ClusterIP behind the gateway) with the certificate the chart kept.
    discovery = f"{node_env.issuer.url}/.well-known/openid-configuration"
    assert eventually(lambda: _https_get(node_env, discovery) == 200, timeout=30, what="discovery")


def test_the_admission_webhook_answers_from_its_pod(node_env: NodeEnv, release: chart.Release) -> None:
    configuration = json.loads(node_env.kubectl("get", "mutatingwebhookconfigurations", release.fullname, "-o", "json"))
    service = configuration["webhooks"][0]["clientConfig"]["service"]
    assert (service["namespace"], service["name"]) == (release.namespace, f"{release.fullname}-webhook")
    node_env.kubectl("create", "namespace", "webhook-probe")
    agent = {
        "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
        "kind": v1alpha1.KIND,
        "metadata": {"name": "probe", "namespace": "webhook-probe"},
        "spec": {"owner": {"kind": "User", "name": "alice@example.com"}, "purpose": "answers the webhook test"},
    }
    started = time.monotonic()
    node_env.kubectl("create", "-f", "-", input_text=json.dumps(agent))
    stamped = _agent(node_env, "webhook-probe", "probe")["metadata"].get("annotations", {})
    assert attribution.CREATED_BY in stamped, stamped  # only the webhook in the operator Pod writes it
    eventually(lambda: _agent_ready(node_env, "webhook-probe", "probe"), timeout=60, what="probe Ready")
    TIMINGS["agent_ready_through_pods_s"] = time.monotonic() - started
    node_env.kubectl("delete", "namespace", "webhook-probe", "--wait=false")


def test_every_example_agent_becomes_ready(node_env: NodeEnv, release: chart.Release) -> None:
    node_env.apply(*_example_documents())
    agents = [doc for doc in _example_documents() if doc["kind"] == v1alpha1.KIND]
    assert len(agents) >= 3
    _wait_ready(node_env, agents, timeout=90)


# -- a workload running as an agent ----------------------------------------------------------------------------------


def _in_workload(env: NodeEnv, mode: str) -> dict[str, Any]:
    output = env.kubectl(
        "exec",
        chartrelease.WORKLOAD_POD,
        "-n",
        WORKLOAD_NAMESPACE,
        "-c",
        "agent",
        "--",
        "python",
        "-c",
        chartrelease.WORKLOAD_SCRIPT,
        mode,
    )
    return dict(json.loads(output.strip().splitlines()[-1]))


def _agentid_cli(env: NodeEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentid", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": str(env.cluster.kubeconfig)},
    )


@pytest.fixture
def workload(node_env: NodeEnv, release: chart.Release) -> Iterator[str]:
    """The agent workload Pod, Ready; deleted afterwards whatever the test's outcome."""
    eventually(lambda: _agent_ready(node_env, WORKLOAD_NAMESPACE, WORKLOAD_AGENT), timeout=90, what="agent Ready")
    started = time.monotonic()
    pod = chartrelease.agent_workload_pod(
        node_env.agentid_image, node_env.issuer, WORKLOAD_NAMESPACE, f"{WORKLOAD_AGENT}-agent"
    )
    node_env.apply(pod)
    try:
        eventually(
            lambda: any(_ready(found) for found in _pods(node_env, WORKLOAD_NAMESPACE)),
            timeout=60,
            what="workload Pod Ready",
        )
        TIMINGS["workload_pod_create_to_ready_s"] = time.monotonic() - started
        yield chartrelease.WORKLOAD_POD
    finally:
        node_env.kubectl("delete", "pod", chartrelease.WORKLOAD_POD, "-n", WORKLOAD_NAMESPACE, "--wait=false")


def test_a_workload_pod_uses_its_agent_identity_and_suspend_cuts_it_off(node_env: NodeEnv, workload: str) -> None:
    # kube-apiserver fetches the issuer's discovery and keys on its own schedule once the release runs (retrying
    # with a backoff): the first exchange may come before that.
    eventually(
        lambda: _in_workload(node_env, "exchange") == {"exchange": "granted", "apiserver": 200},
        timeout=90,
        interval=1.0,
        what="the apiserver accepts the agent token",
    )

    suspended = _agentid_cli(
        node_env, "suspend", WORKLOAD_AGENT, "-n", WORKLOAD_NAMESPACE, "--reason", "node test", "--wait"
    )
    assert suspended.returncode == 0, suspended.stderr
    # The token it already holds no longer opens the apiserver, and a new exchange is refused.
    eventually(
        lambda: _in_workload(node_env, "call")["apiserver"] == 403, timeout=30, interval=1.0, what="old token denied"
    )
    assert _in_workload(node_env, "exchange")["exchange"] == "refused"

    resumed = _agentid_cli(node_env, "resume", WORKLOAD_AGENT, "-n", WORKLOAD_NAMESPACE, "--wait")
    assert resumed.returncode == 0, resumed.stderr
    eventually(
        lambda: _in_workload(node_env, "exchange") == {"exchange": "granted", "apiserver": 200},
        timeout=30,
        interval=1.0,
        what="works again after resume",
    )


# -- the operator Pod dies mid-burst ---------------------------------------------------------------------------------


def _lease_holder(env: NodeEnv, release: chart.Release) -> str:
    lease = json.loads(env.kubectl("get", "lease", release.operator, "-n", release.namespace, "-o", "json"))
    return str(lease["spec"].get("holderIdentity") or "")


def test_the_leader_pod_killed_mid_burst_is_replaced_by_the_other_replica_and_every_agent_converges(
    node_env: NodeEnv, release: chart.Release
) -> None:
    namespace = "burst-agents"
    node_env.kubectl("create", "namespace", namespace)
    count = 30
    agents = [
        {
            "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
            "kind": v1alpha1.KIND,
            "metadata": {"name": f"burst-{index:02d}", "namespace": namespace},
            "spec": {"owner": {"kind": "User", "name": "alice@example.com"}, "purpose": "survives an operator crash"},
        }
        for index in range(count)
    ]
    replicas = {pod["metadata"]["name"]: pod for pod in _pods(node_env, release.namespace, _OPERATOR)}
    assert len(replicas) == 2
    assert all(_ready(pod) for pod in replicas.values())
    leader = _lease_holder(node_env, release)
    assert leader in replicas, f"the Lease names {leader!r}, not one of {sorted(replicas)}"
    (follower,) = set(replicas) - {leader}
    admitted: list[bool] = []
    creator = threading.Thread(target=lambda: admitted.append(_try_apply(node_env, agents[count // 2 :])))
    node_env.apply(*agents[: count // 2])
    creator.start()
    killed = time.monotonic()
    node_env.kubectl("delete", "pod", leader, "-n", release.namespace, "--grace-period=0", "--force")
    creator.join(timeout=120)
    # The follower Pod, already running and admitting, takes the Lease once the killed leader's expires.
    eventually(lambda: _lease_holder(node_env, release) == follower, timeout=60, what=f"{follower} leads")
    TIMINGS["leader_pod_killed_lease_taken_s"] = time.monotonic() - killed
    # The other replica served admission meanwhile: a refusal (a request that met the dying Pod before its endpoint
    # left the Service) is applied again, as GitOps would; the timing file records whether one was needed.
    TIMINGS["leader_pod_killed_apply_refused"] = float(admitted != [True])
    eventually(lambda: _try_apply(node_env, agents), timeout=60, what="every agent admitted")
    _wait_ready(node_env, agents, timeout=120)

    def replaced() -> bool:
        pods = _pods(node_env, release.namespace, _OPERATOR)
        names = {pod["metadata"]["name"] for pod in pods}
        return len(pods) == 2 and all(_ready(pod) for pod in pods) and leader not in names

    eventually(replaced, timeout=90, what="a second operator replica Ready again")
    node_env.kubectl("delete", "namespace", namespace, "--wait=false")


_OPERATOR = "app.kubernetes.io/component=operator"


# -- upgrade and uninstall -----------------------------------------------------------------------------------------


def test_helm_upgrade_rolls_the_pods_and_the_token_service_keeps_serving(
    node_env: NodeEnv, release: chart.Release, tmp_path: Path
) -> None:
    before = {pod["metadata"]["uid"] for pod in _pods(node_env, release.namespace)}
    jwks = f"{node_env.issuer.url}/.well-known/openid-configuration"
    answers: list[int] = []
    stop = threading.Event()

    def probe() -> None:  # bounded: stops with the upgrade, one request at a time
        while not stop.is_set() and len(answers) < 10_000:
            answers.append(_https_get(node_env, jwks))
            stop.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        rolled = {"podAnnotations": {"agentid.dev/rolled": "upgrade-test"}}
        values_file = tmp_path / "upgrade.yaml"
        values_file.write_text(yaml.safe_dump(chart.values(node_env, operator=rolled, tokenService=rolled)))
        started = time.monotonic()
        chart.helm(node_env, "upgrade", release.name, str(chart.CHART), "-n", release.namespace,
                   f"--values={values_file}", "--wait", "--timeout=240s")  # fmt: skip
        TIMINGS["helm_upgrade_wait_s"] = time.monotonic() - started
    finally:
        stop.set()
        prober.join(timeout=30)
    after = _pods(node_env, release.namespace)
    assert {pod["metadata"]["uid"] for pod in after if _ready(pod)}.isdisjoint(before)
    assert all(
        pod["metadata"]["annotations"].get("agentid.dev/rolled") == "upgrade-test" for pod in after if _ready(pod)
    )
    assert len(answers) >= 10
    assert set(answers) == {200}, f"the token service failed {sum(a != 200 for a in answers)} of {len(answers)}"
    agents = [doc for doc in _example_documents() if doc["kind"] == v1alpha1.KIND]
    _wait_ready(node_env, agents, timeout=60)  # the new operator Pod took over the agents


def test_helm_uninstall_and_the_documented_cleanup_leave_nothing(node_env: NodeEnv, release: chart.Release) -> None:
    # docs/helm.md, "Order with Helm": the CLI with the operator running, then the release, then the CLI again.
    cli = [sys.executable, "-m", "agentid", "uninstall", f"--kubeconfig={node_env.local.kubeconfig}"]
    env = dict(os.environ, KUBECONFIG=str(node_env.local.kubeconfig))
    first = subprocess.run([*cli, "--keep-crds"], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert node_env.kubectl("get", "agentidentities", "-A", "-o", "name").strip() == ""
    chart.helm(node_env, "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=120s")
    second = subprocess.run(cli, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    node_env.kubectl("delete", "namespace", release.namespace, "--wait=true", "--timeout=120s")

    selector = f"app.kubernetes.io/instance={release.name}"
    kinds = "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations"
    assert node_env.kubectl("get", kinds, "-l", selector, "-o", "name").strip() == ""
    assert node_env.kubectl("get", "crds", "-o", "name").count("agentid.dev") == 0
    for namespace in ("finance-agents", "platform-agents"):
        leftovers = node_env.kubectl("get", "serviceaccounts,secrets,roles,rolebindings", "-n", namespace, "-o", "name")
        made_by_operator = [line for line in leftovers.splitlines() if "-agent" in line]
        assert made_by_operator == [], made_by_operator

    def no_pods_on_node() -> bool:
        pods = json.loads(node_env.kubectl("get", "pods", "-A", "-o", "json"))["items"]
        return not pods and node_env.node.running_tasks() == []

    eventually(no_pods_on_node, timeout=60, what="no Pod and no container left on the node")
