"""Session fixtures: one cluster for the whole run (local control plane by default), namespaces per test."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from agentid.devcluster.cluster import LocalCluster
from agentid.domain.podidentity import InjectionSettings, SidecarSettings
from agentid.handlers.runtime import WebhookConfig
from agentid.webhooks.configuration import pod_identity_configuration, pod_label_policy, webhook_configurations
from tests.support.cluster_setup import configure_local_cluster, reserved_port
from tests.support.clusters import ClusterHandle, external_kubeconfig
from tests.support.operator import LogCapture, OperatorThread

pytest_plugins = ["tests.support.tokens"]  # its session fixtures, registered once for every module

REPO = Path(__file__).resolve().parent.parent
ADMISSION_LABEL = "agentid.dev/admission"
SIDECAR_IMAGE = "localhost/agentid:test"  # never pulled: no test here runs a Pod
AGENT_NAMESPACE_PATTERN = "a-*"  # namespaces the session operator watches


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    kubeconfig = external_kubeconfig()
    if kubeconfig is not None:
        yield ClusterHandle(kubeconfig=kubeconfig)
        return
    local = LocalCluster()
    configure_local_cluster(local)
    local.start()
    try:
        yield ClusterHandle(kubeconfig=local.kubeconfig, local=local)
    finally:
        local.stop()


@pytest.fixture
def local_cluster(cluster: ClusterHandle) -> LocalCluster:
    """Tests about the embedded control plane itself are skipped on an external cluster."""
    if cluster.local is None:
        pytest.skip("needs the embedded local control plane (AGENTID_TEST_KUBECONFIG is set)")
    return cluster.local


def _fresh_namespace(
    cluster: ClusterHandle, request: pytest.FixtureRequest, prefix: str, labels: dict[str, str] | None = None
) -> Iterator[str]:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"{prefix}-{stem}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespace({"metadata": {"name": name, "labels": {"agentid.dev/test": "true", **(labels or {})}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def own_operator_namespace(cluster: ClusterHandle, crds: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace the session operator does NOT watch (``o-*``): for tests that run their own operator."""
    yield from _fresh_namespace(cluster, request, "o")


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the namespace controller finishes the job)."""
    yield from _fresh_namespace(cluster, request, "t")


@pytest.fixture(scope="session")
def crds(cluster: ClusterHandle) -> None:
    """The generated CRDs, applied server-side to the cluster and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for path in sorted((REPO / "crds").glob("*.yaml")):
        name = path.name.split("_", 1)[1].removesuffix(".yaml") + "." + path.name.split("_", 1)[0]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="session")
def operator_logs() -> Iterator[LogCapture]:
    """Every log line of the in-process operator, for the no-key-material scans."""
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    previous = root.level
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(previous)
    assert capture.errors == [], "operator handlers failed during the session:\n" + "\n".join(capture.errors[:5])


@pytest.fixture(scope="session")
def operator(cluster: ClusterHandle, crds: None, operator_logs: LogCapture) -> Iterator[OperatorThread]:
    """The operator, in-process, watching the agent test namespaces (``agent_namespace``).

    On the embedded control plane it also serves the admission webhook, registered for namespaces labelled
    ``agentid.dev/admission=enforced`` (every ``agent_namespace``) and for AgentPolicies, and injects agent
    identity into labelled Pods there (pointing them at the session's token service).
    """
    webhook = None
    pod_identity = None
    if cluster.local is not None:
        serving = cluster.local.ca.serving("webhook", "127.0.0.1")
        webhook = WebhookConfig(
            port=reserved_port(), certfile=str(serving.cert), keyfile=str(serving.key), addr="127.0.0.1"
        )
        from tests.support.tokens import session_endpoint  # noqa: PLC0415 - a pytest plugin: imported by pytest first

        tokens = session_endpoint(cluster)
        pod_identity = InjectionSettings(
            issuer=tokens.issuer,
            url=tokens.issuer,
            audience=tokens.issuer,
            ca_pem=Path(tokens.ca).read_text(),
            sidecar=SidecarSettings(image=SIDECAR_IMAGE),
        )
    running = OperatorThread(
        cluster.kubeconfig, namespaces=[AGENT_NAMESPACE_PATTERN], webhook=webhook, pod_identity=pod_identity
    ).start()
    registered = []
    if webhook is not None and cluster.local is not None:
        enforced = {"matchLabels": {ADMISSION_LABEL: "enforced"}}
        base_url = f"https://127.0.0.1:{webhook.port}"
        registered = webhook_configurations(
            base_url=base_url, ca_bundle=cluster.local.ca.pem, namespace_selector=enforced
        )
        registered.append(
            pod_identity_configuration(base_url=base_url, ca_bundle=cluster.local.ca.pem, namespace_selector=enforced)
        )
        registered += pod_label_policy(namespace_selector=enforced)
        cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(registered))
    yield running
    for configuration in registered:
        cluster.kubectl("delete", configuration["kind"], configuration["metadata"]["name"], "--ignore-not-found")
    running.stop()


@pytest.fixture(scope="session")
def configmap_editor(cluster: ClusterHandle) -> Iterator[str]:
    """A ClusterRole that writes configmaps and nothing the baseline forbids (unlike edit/admin, which reach
    Secrets and therefore the keys of the other agents in a namespace)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    name = f"configmap-editor-{uuid.uuid4().hex[:6]}"
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "update", "patch"]}
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [rule]})
    yield name
    rbac.delete_cluster_role(name)


@pytest.fixture
def admission_webhook(cluster: ClusterHandle, agent_namespace: str) -> None:
    """Skips unless an agentid admission webhook serves ``agent_namespace``: the session operator's on the
    embedded control plane, or an installed release's whose namespaceSelector selects it on an existing cluster."""
    if cluster.local is not None:
        return
    labels = kubernetes.client.CoreV1Api(cluster.admin()).read_namespace(agent_namespace).metadata.labels or {}
    api = kubernetes.client.AdmissionregistrationV1Api(cluster.admin())
    for configuration in api.list_validating_webhook_configuration().items:
        for webhook in configuration.webhooks or []:
            selector = webhook.namespace_selector
            wanted = (selector.match_labels or {}) if selector is not None else {}
            exact = selector is None or not selector.match_expressions
            if webhook.name == "agentidentities.validate.agentid.dev" and exact and wanted.items() <= labels.items():
                return
    pytest.skip("no agentid admission webhook serves this namespace (install the chart for it to run admission tests)")


@pytest.fixture
def agent_namespace(cluster: ClusterHandle, operator: OperatorThread, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that the session operator watches (and, locally, whose agents pass admission)."""
    yield from _fresh_namespace(cluster, request, "a", labels={ADMISSION_LABEL: "enforced"})


@pytest.fixture
def unguarded_agent_namespace(
    cluster: ClusterHandle, operator: OperatorThread, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace the session operator watches but no admission webhook serves: what is stored there is
    what the CRD's schema admits, as wherever the webhook is not in the path (its namespaceSelector, or down)."""
    yield from _fresh_namespace(cluster, request, "a")
