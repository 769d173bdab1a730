"""`agentid uninstall` on a real API server: access first, then the agents' own objects, then what the installation
leaves (issuer keys, webhook configurations, CRDs) — with the operator running, and with it gone.

Uninstalling is cluster-wide by nature (every agent, every policy, agentid's webhook configurations, the CRDs), so
it runs on a second embedded control plane of its own: on the session cluster it would take the CRDs, the
webhook and the agents of every other test with it. The CLI runs as users run it (a process, a kubeconfig), the
operator as ``agentid run`` runs it (``OperatorThread``, long resyncs: what it does promptly it does on events),
serving its admission webhook registered by URL, as on a developer's cluster; and the chart, installed and
uninstalled with Helm (no Pod runs here, so its operator Deployment is never ready), for the order "after
`helm uninstall`".
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from agentid.api import crdgen, v1alpha1
from agentid.cli import agents as exit_codes
from agentid.domain import naming
from agentid.domain.issuer_keys import RotationPolicy
from agentid.handlers.runtime import WebhookConfig
from agentid.kube.client import KubeClient
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.settings import KEYRING_SECRET_TYPE
from agentid.webhooks.configuration import webhook_configurations
from tests.integration.test_chart import CHART, helm
from tests.support.agents import Agent, create_agent
from tests.support.cluster_setup import reserved_port
from tests.support.clusters import ClusterHandle, second_cluster, status_of
from tests.support.operator import OperatorThread
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
ENFORCED = {"agentid.dev/admission": "enforced"}
FOREIGN_FINALIZER = "example.com/hold"
RELEASE_NAMESPACE = "agentid-system"
ISSUER_SECRET = "agentid-token-issuer"


# -- the cluster and its pieces ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teardown_cluster(cluster: ClusterHandle) -> Iterator[ClusterHandle]:
    """A control plane of its own (with the controller manager: namespaces, garbage collection)."""
    with second_cluster(cluster, "a second cluster to uninstall from") as own:
        yield own


@pytest.fixture
def installed(teardown_cluster: ClusterHandle) -> ClusterHandle:
    """The CRDs, Established (an earlier test may have uninstalled them)."""
    teardown_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for definition in crdgen.DEFINITIONS:
        teardown_cluster.kubectl("wait", "--for=condition=Established", f"crd/{definition.name}", "--timeout=60s")
    return teardown_cluster


def start_operator(cluster: ClusterHandle, namespace: str) -> OperatorThread:
    """The operator with its webhook, registered by URL for namespaces labelled like ``namespace``."""
    assert cluster.local is not None
    serving = cluster.local.ca.serving(f"webhook-{uuid.uuid4().hex[:6]}", "127.0.0.1")
    webhook = WebhookConfig(
        port=reserved_port(), certfile=str(serving.cert), keyfile=str(serving.key), addr="127.0.0.1"
    )
    operator = OperatorThread(cluster.kubeconfig, namespaces=[namespace], webhook=webhook).start()
    registered = webhook_configurations(
        base_url=f"https://127.0.0.1:{webhook.port}",
        ca_bundle=cluster.local.ca.pem,
        namespace_selector={"matchLabels": ENFORCED},
    )
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(registered))
    return operator


def make_namespace(cluster: ClusterHandle, stem: str) -> str:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(cluster.admin()).create_namespace({"metadata": {"name": name, "labels": ENFORCED}})
    return name


def issuer_keys(cluster: ClusterHandle) -> None:
    """The token service's keyring Secret, written by its own code (what `helm uninstall` leaves behind)."""
    core = kubernetes.client.CoreV1Api(cluster.admin())
    if status_of(core.read_namespace, RELEASE_NAMESPACE) == 404:
        core.create_namespace({"metadata": {"name": RELEASE_NAMESPACE}})

    async def write() -> None:
        client = await KubeClient.connect(str(cluster.kubeconfig), field_manager="agentid-tokens")
        try:
            keyring = IssuerKeyring(
                client, namespace=RELEASE_NAMESPACE, secret_name=ISSUER_SECRET, policy=RotationPolicy()
            )
            await keyring.refresh()
        finally:
            await client.close()

    asyncio.run(write())
    assert core.read_namespaced_secret(ISSUER_SECRET, RELEASE_NAMESPACE).type == KEYRING_SECRET_TYPE


def policy(cluster: ClusterHandle, name: str) -> None:
    kubernetes.client.CustomObjectsApi(cluster.admin()).create_cluster_custom_object(
        v1alpha1.GROUP,
        v1alpha1.VERSION,
        v1alpha1.POLICY_PLURAL,
        {
            "apiVersion": v1alpha1.API_VERSION,
            "kind": v1alpha1.POLICY_KIND,
            "metadata": {"name": name},
            "spec": {"namespaceSelector": {"matchLabels": {"agentid.dev/uninstall-test": name}}},
        },
    )


def lookalikes(cluster: ClusterHandle, namespace: str, elsewhere: str, agent: str) -> list[tuple[str, str, str]]:
    """Objects that look like the agent's (names, agentid's labels) but are not: no controller reference to it.
    Returned as (kind, namespace, name)."""
    core = kubernetes.client.CoreV1Api(cluster.admin())
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    labels = naming.labels(agent, "identity")
    meta = {"labels": labels}
    core.create_namespaced_service_account(namespace, {"metadata": {"name": f"{agent}-agent-2", **meta}})
    core.create_namespaced_service_account(elsewhere, {"metadata": {"name": naming.service_account(agent), **meta}})
    core.create_namespaced_secret(
        elsewhere, {"metadata": {"name": naming.key_secret(agent), **meta}, "stringData": {"x": "y"}}
    )
    rbac.create_namespaced_role_binding(
        elsewhere,
        {
            "metadata": {"name": naming.role_binding(agent), **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": naming.service_account(agent), "namespace": elsewhere}],
        },
    )
    return [
        ("ServiceAccount", namespace, f"{agent}-agent-2"),
        ("ServiceAccount", elsewhere, naming.service_account(agent)),
        ("Secret", elsewhere, naming.key_secret(agent)),
        ("RoleBinding", elsewhere, naming.role_binding(agent)),
    ]


def read_status(cluster: ClusterHandle, kind: str, namespace: str, name: str) -> int:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    read = {
        "ServiceAccount": core.read_namespaced_service_account,
        "Secret": core.read_namespaced_secret,
        "Role": rbac.read_namespaced_role,
        "RoleBinding": rbac.read_namespaced_role_binding,
    }[kind]
    return status_of(read, name, namespace)


def owned_objects(agent: str, namespace: str, cluster_roles: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    return [(kind, namespace, name) for kind, name in naming.derived(agent, cluster_roles)]


def agent_exists(agent: Agent) -> bool:
    return status_of(agent.body) == 200


def agentid(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "agentid", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines()


def index(lines: list[str], prefix: str) -> int:
    found = [number for number, line in enumerate(lines) if line.startswith(prefix)]
    assert found, f"no line starting with {prefix!r} in:\n" + "\n".join(lines)
    return found[0]


def webhook_names(cluster: ClusterHandle) -> set[str]:
    api = kubernetes.client.AdmissionregistrationV1Api(cluster.admin())
    return {item.metadata.name for item in api.list_validating_webhook_configuration().items} | {
        item.metadata.name for item in api.list_mutating_webhook_configuration().items
    }


def crds_present(cluster: ClusterHandle) -> list[str]:
    api = kubernetes.client.ApiextensionsV1Api(cluster.admin())
    return [d.name for d in crdgen.DEFINITIONS if status_of(api.read_custom_resource_definition, d.name) == 200]


def event_reasons(cluster: ClusterHandle, namespace: str, name: str) -> list[str]:
    events = kubernetes.client.EventsV1Api(cluster.admin()).list_namespaced_event(
        namespace, field_selector=f"regarding.name={name}"
    )
    return [event.reason for event in events.items]


# -- with the operator running ----------------------------------------------------------------------------------------


def test_with_the_operator_running_access_goes_first_then_its_objects_then_what_is_left(
    installed: ClusterHandle,
) -> None:
    cluster = installed
    namespace, elsewhere = make_namespace(cluster, "team"), make_namespace(cluster, "other")
    operator = start_operator(cluster, namespace)
    try:
        bot = create_agent(cluster, namespace, "bot", clusterRoleRefs=["view"])
        helper = create_agent(cluster, namespace, "helper")
        bot.wait_ready()
        helper.wait_ready()
        policy(cluster, "uninstall-running")
        foreign = lookalikes(cluster, namespace, elsewhere, "bot")
        issuer_keys(cluster)

        result = agentid("uninstall", "--keep-crds", "--timeout", "60", kubeconfig=cluster.kubeconfig)
        lines = lines_of(result)
        assert result.returncode == exit_codes.EXIT_OK, result.stdout + result.stderr
    finally:
        operator.stop()

    # In order: the running operator was waited for; access went (reported by the operator) before any agent was
    # deleted, and the operator removed the objects; then the issuer keys; the webhook it served stays.
    assert lines[0].startswith("operator running"), lines
    for agent in (bot, helper):
        suspended = index(lines, f"suspend agentidentity {namespace}/{agent.name}")
        removed = index(lines, f"access removed: agentidentity {namespace}/{agent.name} is Suspended")
        deleted = index(lines, f"delete agentidentity {namespace}/{agent.name}")
        assert suspended < removed < deleted
        # ("access removed" is the operator's status for the suspended spec, read before the delete was sent.)
        # The operator's own record: it suspended the agent, and it cleaned up after the deletion.
        assert {"Suspended", "Deleted"} <= set(event_reasons(cluster, namespace, agent.name))
    assert index(lines, "the operator removed every agent's objects") > index(lines, "delete agentidentity")
    assert index(lines, "delete agentpolicy uninstall-running") < index(lines, "delete agentidentity")
    assert f"delete secret {RELEASE_NAMESPACE}/{ISSUER_SECRET} (token issuer keys)" in lines
    assert any(line.startswith("kept validatingwebhookconfiguration") for line in lines), lines
    assert lines[-2:] == ["kept the CRDs (--keep-crds)", "uninstalled"]

    assert not agent_exists(bot)
    assert not agent_exists(helper)
    for kind, where, name in owned_objects("bot", namespace, ("view",)) + owned_objects("helper", namespace):
        assert read_status(cluster, kind, where, name) == 404, (kind, name)
    for kind, where, name in foreign:
        assert read_status(cluster, kind, where, name) == 200, (kind, where, name)
    core = kubernetes.client.CoreV1Api(cluster.admin())
    assert status_of(core.read_namespaced_secret, ISSUER_SECRET, RELEASE_NAMESPACE) == 404
    assert crds_present(cluster) == [d.name for d in crdgen.DEFINITIONS]

    # `helm uninstall` stopped the operator: a second run (nothing to wait for) removes the webhook configurations
    # and the CRDs; a third finds nothing left and still succeeds.
    registered = webhook_names(cluster) & {"agentid.dev"}
    assert registered
    result = agentid("uninstall", "--operator-gone", "--timeout", "60", kubeconfig=cluster.kubeconfig)
    lines = lines_of(result)
    assert result.returncode == exit_codes.EXIT_OK, result.stdout + result.stderr
    assert "delete validatingwebhookconfiguration agentid.dev" in lines
    assert "delete mutatingwebhookconfiguration agentid.dev" in lines
    for definition in crdgen.DEFINITIONS:
        assert f"delete customresourcedefinition {definition.name}" in lines
    assert crds_present(cluster) == []
    assert not webhook_names(cluster) & registered
    for kind, where, name in foreign:
        assert read_status(cluster, kind, where, name) == 200, (kind, where, name)

    again = agentid("uninstall", kubeconfig=cluster.kubeconfig)
    assert again.returncode == exit_codes.EXIT_OK, again.stdout + again.stderr
    assert lines_of(again)[1:] == [
        f"no agents: {v1alpha1.API_VERSION} is not served (the CRDs are gone)",
        "uninstalled",
    ]


# -- with the operator gone -------------------------------------------------------------------------------------------


def test_with_the_operator_gone_it_does_not_hang_removes_only_owned_objects_and_only_its_finalizer(
    installed: ClusterHandle,
) -> None:
    cluster = installed
    namespace, elsewhere = make_namespace(cluster, "team"), make_namespace(cluster, "other")
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    operator = start_operator(cluster, namespace)
    try:
        bot = create_agent(cluster, namespace, "bot", clusterRoleRefs=["view"])
        held = create_agent(cluster, namespace, "held")
        bot.wait_ready()
        held.wait_ready()
        custom.patch_namespaced_custom_object(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            "held",
            {"metadata": {"finalizers": [naming.FINALIZER, FOREIGN_FINALIZER]}},
        )
    finally:
        operator.stop()  # its webhook stays registered, and nobody answers it
    foreign = lookalikes(cluster, namespace, elsewhere, "bot")
    owned = owned_objects("bot", namespace, ("view",)) + owned_objects("held", namespace)
    for kind, where, name in owned:
        assert read_status(cluster, kind, where, name) == 200, (kind, name)

    # A dry run changes nothing, and says what it would do.
    before = {agent.name: agent.body()["metadata"]["resourceVersion"] for agent in (bot, held)}
    dry = agentid("uninstall", "--dry-run", "--operator-gone", kubeconfig=cluster.kubeconfig)
    dry_lines = lines_of(dry)
    assert dry.returncode == exit_codes.EXIT_OK, dry.stdout + dry.stderr
    assert f"would delete rolebinding {namespace}/bot-agent (agentidentity {namespace}/bot's)" in dry_lines
    assert f"would remove finalizer {naming.FINALIZER} from agentidentity {namespace}/held" in dry_lines
    assert dry_lines[-1] == "dry run: nothing was changed"
    assert {agent.name: agent.body()["metadata"]["resourceVersion"] for agent in (bot, held)} == before
    for kind, where, name in owned:
        assert read_status(cluster, kind, where, name) == 200, (kind, name)

    # Not told the operator is gone: its webhook is still registered, so it is waited for, up to the deadline.
    result = agentid("uninstall", "--keep-crds", "--timeout", "5", kubeconfig=cluster.kubeconfig)
    lines = lines_of(result)
    assert result.returncode == exit_codes.EXIT_ERROR, result.stdout + result.stderr
    assert lines[0].startswith("operator running"), lines
    assert any(line.startswith("the operator did not suspend") for line in lines), lines
    for agent in (bot, held):
        assert f"suspend agentidentity {namespace}/{agent.name}" in lines
        mine = [line for line in lines if line.endswith(f"(agentidentity {namespace}/{agent.name}'s)")]
        kinds = [line.split()[1] for line in mine]
        assert kinds == sorted(kinds, key=["rolebinding", "role", "secret", "serviceaccount"].index), mine
        assert kinds[0] == "rolebinding"
        assert index(lines, f"remove finalizer {naming.FINALIZER} from agentidentity {namespace}/{agent.name}") > (
            lines.index(mine[-1])
        )
    assert lines[-1] == (
        f"not finished: agentidentity {namespace}/held (held by {FOREIGN_FINALIZER}). Another controller's "
        "finalizer is its to remove; run this command again once they are gone"
    )

    for kind, where, name in owned:
        assert read_status(cluster, kind, where, name) == 404, (kind, name)
    for kind, where, name in foreign:
        assert read_status(cluster, kind, where, name) == 200, (kind, where, name)
    assert not agent_exists(bot)
    remaining: dict[str, Any] = held.body()["metadata"]
    assert remaining["finalizers"] == [FOREIGN_FINALIZER]
    assert remaining["deletionTimestamp"]
    assert crds_present(cluster) == [d.name for d in crdgen.DEFINITIONS]

    # Its controller lets go; the same command, again, finishes (and removes the webhook nobody serves).
    custom.patch_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, "held", {"metadata": {"finalizers": []}}
    )
    eventually(lambda: not agent_exists(held), timeout=30, what="held agent gone")
    result = agentid("uninstall", "--keep-crds", "--operator-gone", kubeconfig=cluster.kubeconfig)
    lines = lines_of(result)
    assert result.returncode == exit_codes.EXIT_OK, result.stdout + result.stderr
    assert "delete validatingwebhookconfiguration agentid.dev" in lines
    assert lines[-1] == "uninstalled"


# -- after `helm uninstall` -------------------------------------------------------------------------------------------


def test_after_helm_uninstall_one_run_finishes_without_waiting(installed: ClusterHandle, tmp_path: Path) -> None:
    """The chart's release (no Pod runs here: its operator Deployment never gets ready), agents an operator
    provisioned, then `helm uninstall`: it leaves the agents with their finalizer, their objects, the issuer key
    Secret and the CRDs. One run of the command, with no flag, finds nothing of the release and removes them all."""
    cluster = installed
    namespace = make_namespace(cluster, "team")
    operator = OperatorThread(cluster.kubeconfig, namespaces=[namespace]).start()
    try:
        bot = create_agent(cluster, namespace, "bot", clusterRoleRefs=["view"])
        bot.wait_ready()
    finally:
        operator.stop()
    release = f"agentid-{uuid.uuid4().hex[:4]}"
    values = tmp_path / "values.yaml"
    # The chart's webhooks select no namespace of this test (no Pod serves them here).
    values.write_text(yaml.safe_dump({"webhook": {"namespaceSelector": {"matchLabels": {"none": release}}}}))
    helm(
        "install", release, str(CHART), f"--kubeconfig={cluster.kubeconfig}", "--namespace", RELEASE_NAMESPACE,
        "--create-namespace", f"--values={values}", "--skip-crds",
    )  # fmt: skip
    issuer_keys(cluster)

    # With the release installed and its operator never ready, a dry run finds it gone (nothing will finalise).
    dry = agentid("uninstall", "--dry-run", kubeconfig=cluster.kubeconfig)
    assert dry.returncode == exit_codes.EXIT_OK, dry.stdout + dry.stderr
    assert lines_of(dry)[0] == (
        f"operator gone: this command cleans up (Deployment {RELEASE_NAMESPACE}/{release}-operator has no ready Pods)"
    )

    helm("uninstall", release, f"--kubeconfig={cluster.kubeconfig}", "--namespace", RELEASE_NAMESPACE, "--wait")
    assert bot.body()["metadata"]["finalizers"] == [naming.FINALIZER]
    result = agentid("uninstall", kubeconfig=cluster.kubeconfig)
    lines = lines_of(result)
    assert result.returncode == exit_codes.EXIT_OK, result.stdout + result.stderr
    assert lines[0] == (
        "operator gone: this command cleans up (no operator Deployment and no agentid webhook configuration found)"
    )
    assert not [line for line in lines if line.startswith("the operator did not")]  # nothing was waited for
    assert f"delete rolebinding {namespace}/bot-agent:view (agentidentity {namespace}/bot's)" in lines
    assert f"remove finalizer {naming.FINALIZER} from agentidentity {namespace}/bot" in lines
    assert f"delete secret {RELEASE_NAMESPACE}/{ISSUER_SECRET} (token issuer keys)" in lines
    assert lines[-1] == "uninstalled"
    assert not agent_exists(bot)
    for kind, where, name in owned_objects("bot", namespace, ("view",)):
        assert read_status(cluster, kind, where, name) == 404, (kind, name)
    assert crds_present(cluster) == []


# -- refused --------------------------------------------------------------------------------------------------------


def test_without_the_rights_it_is_one_line_saying_what_it_needs(
    teardown_cluster: ClusterHandle, tmp_path: Path
) -> None:
    assert teardown_cluster.local is not None
    nobody = teardown_cluster.local.client_kubeconfig(tmp_path / "nobody.kubeconfig", "nobody")
    result = agentid("uninstall", "--operator-gone", kubeconfig=nobody)
    assert result.returncode == exit_codes.EXIT_ERROR
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: not allowed: ")
    assert 'User "nobody" cannot' in errors[0]
    assert errors[0].endswith("run it as a cluster administrator)")


# -- is an operator there? --------------------------------------------------------------------------------------------


def test_the_operator_is_found_gone_or_running_from_its_webhook_services_endpoints(
    teardown_cluster: ClusterHandle,
) -> None:
    cluster = teardown_cluster
    core = kubernetes.client.CoreV1Api(cluster.admin())
    if status_of(core.read_namespace, RELEASE_NAMESPACE) == 404:
        core.create_namespace({"metadata": {"name": RELEASE_NAMESPACE}})
    admission = kubernetes.client.AdmissionregistrationV1Api(cluster.admin())
    discovery = kubernetes.client.DiscoveryV1Api(cluster.admin())
    service = {"namespace": RELEASE_NAMESPACE, "name": "agentid-webhook", "path": "/validate-agentidentity"}
    admission.create_validating_webhook_configuration(
        {
            "metadata": {"name": "agentid-by-service"},
            "webhooks": [
                {
                    "name": "agentidentities.validate.agentid.dev",
                    "clientConfig": {"service": service},
                    "rules": [
                        {
                            "apiGroups": [v1alpha1.GROUP],
                            "apiVersions": [v1alpha1.VERSION],
                            "operations": ["CREATE"],
                            "resources": [v1alpha1.PLURAL],
                        }
                    ],
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                }
            ],
        }
    )

    def endpoints(ready: bool) -> dict[str, Any]:
        return {
            "metadata": {"name": "agentid-webhook-x", "labels": {"kubernetes.io/service-name": "agentid-webhook"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}],
            "ports": [{"name": "https", "port": 9443, "protocol": "TCP"}],
        }

    def first_line() -> str:
        result = agentid("uninstall", "--dry-run", "--keep-crds", kubeconfig=cluster.kubeconfig)
        assert result.returncode == exit_codes.EXIT_OK, result.stdout + result.stderr
        return lines_of(result)[0]

    webhook = f"{RELEASE_NAMESPACE}/agentid-webhook"
    try:
        discovery.create_namespaced_endpoint_slice(RELEASE_NAMESPACE, endpoints(ready=False))
        assert first_line().endswith(f"(webhook Service {webhook} has no ready endpoints)")
        assert first_line().startswith("operator gone")
        discovery.replace_namespaced_endpoint_slice("agentid-webhook-x", RELEASE_NAMESPACE, endpoints(ready=True))
        assert first_line() == (
            f"operator running: it cleans up, within --timeout (webhook Service {webhook} has ready endpoints)"
        )
    finally:
        admission.delete_validating_webhook_configuration("agentid-by-service")
        status_of(discovery.delete_namespaced_endpoint_slice, "agentid-webhook-x", RELEASE_NAMESPACE)
