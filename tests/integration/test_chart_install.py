"""The chart installed on the real API server: what its ServiceAccounts may and may not do (``kubectl auth can-i``
as the operator and the token service), that those rights are enough (both components run as a process with their
ServiceAccount's token and do their job), that the webhook fails closed, and that ``helm uninstall`` leaves nothing
cluster-scoped behind but the CRDs.

No Pod runs here (the local control plane has no scheduler or kubelet): the components run as local processes
with exactly the credentials their Pods would have.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import requests
import yaml
from cryptography import x509

from agentid.devcluster.ports import free_port
from agentid.devcluster.processes import ManagedProcess
from agentid.domain import naming
from tests.integration.test_chart import CHART, helm
from tests.support.agents import CONFIGMAP_RULE, create_agent
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.existing_cluster]
WEBHOOK_LABEL = "agentid.dev/chart-test-webhook"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str

    @property
    def operator(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-operator"

    @property
    def token_service(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-tokens"


def _install(cluster: ClusterHandle, *, values: dict[str, object], tmp: Path) -> Release:
    name = f"chart-{uuid.uuid4().hex[:6]}"
    release = Release(name=name, namespace=f"{name}-system", fullname=f"{name}-agentid")
    values_file = tmp / f"{name}-values.yaml"
    # The webhook only admits AgentIdentities in namespaces carrying this release's label (no Pod serves it here),
    # and policies fail open: other tests in this session keep creating agents and policies.
    base = {
        "webhook": {"namespaceSelector": {"matchLabels": {WEBHOOK_LABEL: name}}, "agentPolicyFailurePolicy": "Ignore"}
    }
    values_file.write_text(yaml.safe_dump({**base, **values}))
    helm(
        "install", name, str(CHART), f"--kubeconfig={cluster.kubeconfig}", "--namespace", release.namespace,
        "--create-namespace", f"--values={values_file}", "--skip-crds",
    )  # fmt: skip
    return release


def _uninstall(cluster: ClusterHandle, release: Release) -> None:
    helm("uninstall", release.name, f"--kubeconfig={cluster.kubeconfig}", "--namespace", release.namespace, "--wait")
    cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", "--ignore-not-found")


def can(cluster: ClusterHandle, user: str, verb: str, resource: str, *scope: str) -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, f"--as={user}", *scope, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def _ensure_namespace(cluster: ClusterHandle, name: str, labels: dict[str, str] | None = None) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    cluster.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(manifest))


@pytest.fixture(scope="module")
def release(cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart with default values (every namespace watched)."""
    installed = _install(cluster, values={}, tmp=tmp_path_factory.mktemp("chart"))
    yield installed
    _uninstall(cluster, installed)


@pytest.fixture(scope="module")
def namespaced_release(
    cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Release, list[str]]]:
    """The chart watching two exact namespaces: the operator's namespaced rights exist only there."""
    suffix = uuid.uuid4().hex[:6]
    watched = [f"chart-agents-{suffix}-a", f"chart-agents-{suffix}-b"]
    for name in watched:
        _ensure_namespace(cluster, name)
    installed = _install(cluster, values={"watchNamespaces": watched}, tmp=tmp_path_factory.mktemp("chart"))
    yield installed, watched
    _uninstall(cluster, installed)
    for name in watched:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


# -- what the operator may do ---------------------------------------------------------------------------------------

OPERATOR_MAY = [
    ("list", "agentidentities.agentid.dev", "-A"),
    ("watch", "agentidentities.agentid.dev", "-A"),
    ("patch", "agentidentities.agentid.dev", "-n", "default"),
    ("patch", "agentidentities.agentid.dev", "--subresource=status", "-n", "default"),
    ("update", "agentidentities.agentid.dev", "--subresource=finalizers", "-n", "default"),
    ("watch", "agentpolicies.agentid.dev"),
    ("patch", "agentpolicies.agentid.dev", "--subresource=status"),
    ("create", "serviceaccounts", "-n", "default"),
    ("delete", "secrets", "-n", "default"),
    ("create", "roles.rbac.authorization.k8s.io", "-n", "default"),
    ("patch", "rolebindings.rbac.authorization.k8s.io", "-n", "default"),
    ("create", "events.events.k8s.io", "-n", "default"),
    ("watch", "clusterroles.rbac.authorization.k8s.io"),
    ("watch", "clusterrolebindings.rbac.authorization.k8s.io"),  # the owner ceiling follows who holds what
    ("watch", "namespaces"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("create", "tokenreviews.authentication.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io/view"),
    ("update", "configmaps", "-n", "default"),  # from agentPermissions: what it may hand to agents
    ("delete", "pods", "-n", "default"),
]
OPERATOR_MUST_NOT = [
    ("bind", "clusterroles.rbac.authorization.k8s.io/cluster-admin"),
    ("bind", "clusterroles.rbac.authorization.k8s.io/edit"),
    ("bind", "clusterroles.rbac.authorization.k8s.io/admin"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),  # any name
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io", "-n", "default"),
    ("impersonate", "users"),
    ("impersonate", "groups"),
    ("impersonate", "serviceaccounts", "-n", "default"),
    ("*", "*"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("delete", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "agentpolicies.agentid.dev"),  # policies are the admins' spec: read-only for the operator
    ("create", "pods", "--subresource=exec", "-n", "default"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "default"),
    ("create", "deployments.apps", "-n", "default"),
    ("get", "nodes"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
]


@pytest.mark.parametrize("request_", OPERATOR_MAY, ids=[" ".join(r) for r in OPERATOR_MAY])
def test_operator_may(cluster: ClusterHandle, release: Release, request_: tuple[str, ...]) -> None:
    assert can(cluster, release.operator, *request_)


@pytest.mark.parametrize("request_", OPERATOR_MUST_NOT, ids=[" ".join(r) for r in OPERATOR_MUST_NOT])
def test_operator_must_not(cluster: ClusterHandle, release: Release, request_: tuple[str, ...]) -> None:
    assert not can(cluster, release.operator, *request_)


def test_token_service_may_only_review_tokens_read_agents_and_keep_its_own_keyring(
    cluster: ClusterHandle, release: Release
) -> None:
    user, ns = release.token_service, release.namespace
    assert can(cluster, user, "create", "tokenreviews.authentication.k8s.io")
    assert can(cluster, user, "watch", "agentidentities.agentid.dev", "-A")
    assert can(cluster, user, "create", "secrets", "-n", ns)
    assert can(cluster, user, "get", "secrets/agentid-token-issuer", "-n", ns)
    assert can(cluster, user, "patch", "secrets/agentid-token-issuer", "-n", ns)
    assert not can(cluster, user, "get", "secrets", "-n", ns)  # any other Secret, e.g. the TLS keys
    assert not can(cluster, user, "list", "secrets", "-n", ns)
    assert not can(cluster, user, "get", f"secrets/{release.fullname}-webhook-tls", "-n", ns)
    assert not can(cluster, user, "get", "secrets", "-n", "default")  # agents' key Secrets live in their namespaces
    assert not can(cluster, user, "patch", "agentidentities.agentid.dev", "-n", "default")
    # Shared Signals: may a receiver list every agent? (asked of the apiserver, never decided by the service)
    assert can(cluster, user, "create", "subjectaccessreviews.authorization.k8s.io")
    assert not can(cluster, user, "create", "serviceaccounts", "--subresource=token", "-n", "default")
    # RFC 7009: revoked token IDs as ConfigMaps in its own namespace only.
    assert can(cluster, user, "create", "configmaps", "-n", ns)
    assert not can(cluster, user, "create", "configmaps", "-n", "default")
    # Which agent owns a ServiceAccount, and its mirrored public keys; assertion claims in its own namespace.
    assert can(cluster, user, "watch", "serviceaccounts", "-A")
    assert not can(cluster, user, "patch", "serviceaccounts", "-n", "default")
    assert can(cluster, user, "create", "leases.coordination.k8s.io", "-n", ns)
    assert not can(cluster, user, "create", "leases.coordination.k8s.io", "-n", "default")


def test_operator_replicas_may_elect_a_leader_in_the_release_namespace_only(
    cluster: ClusterHandle, release: Release
) -> None:
    user, ns, lease = release.operator, release.namespace, f"leases.coordination.k8s.io/{release.fullname}-operator"
    assert can(cluster, user, "create", "leases.coordination.k8s.io", "-n", ns)
    assert can(cluster, user, "get", lease, "-n", ns)
    assert can(cluster, user, "update", lease, "-n", ns)
    assert can(cluster, user, "watch", lease, "-n", ns)  # watched by fieldSelector metadata.name=<lease>
    assert not can(cluster, user, "update", "leases.coordination.k8s.io/kube-scheduler", "-n", ns)  # by name only
    assert not can(cluster, user, "watch", "leases.coordination.k8s.io", "-n", ns)
    assert not can(cluster, user, "delete", lease, "-n", ns)
    assert not can(cluster, user, "create", "leases.coordination.k8s.io", "-n", "kube-system")
    assert not can(cluster, user, "update", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system")


def test_namespaced_install_keeps_the_operator_out_of_other_namespaces(
    cluster: ClusterHandle, namespaced_release: tuple[Release, list[str]]
) -> None:
    release, watched = namespaced_release
    user = release.operator
    for namespace in watched:
        assert can(cluster, user, "create", "secrets", "-n", namespace)
        assert can(cluster, user, "patch", "agentidentities.agentid.dev", "-n", namespace)
        assert can(cluster, user, "update", "configmaps", "-n", namespace)
    for namespace in ("kube-system", "default", release.namespace):
        assert not can(cluster, user, "get", "secrets", "-n", namespace)
        assert not can(cluster, user, "create", "rolebindings.rbac.authorization.k8s.io", "-n", namespace)
        assert not can(cluster, user, "update", "configmaps", "-n", namespace)
    assert not can(cluster, user, "list", "secrets", "-A")
    assert not can(cluster, user, "list", "agentidentities.agentid.dev", "-A")
    assert can(cluster, user, "bind", "clusterroles.rbac.authorization.k8s.io/view")


# -- the rights are enough: the components run with their ServiceAccount's token -----------------------------------


def _service_account_kubeconfig(cluster: ClusterHandle, username: str, path: Path) -> Path:
    _, _, namespace, name = username.split(":")
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server, "certificate-authority": str(
            cluster.configuration.ssl_ca_cert)}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": name}}],
        "current-context": "c",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def chart_operator(
    cluster: ClusterHandle, namespaced_release: tuple[Release, list[str]], tmp_path: Path
) -> Iterator[str]:
    """`agentid run` with the operator ServiceAccount's token, watching the release's first namespace."""
    release, watched = namespaced_release
    kubeconfig = _service_account_kubeconfig(cluster, release.operator, tmp_path / "operator.kubeconfig")
    process = ManagedProcess(
        "chart-operator",
        [sys.executable, "-m", "agentid", "run", f"--kubeconfig={kubeconfig}", f"--namespace={watched[0]}",
         "--log-format=plain", "--resync-seconds=3600", "--leader-election",
         f"--leader-election-namespace={release.namespace}", f"--leader-election-name={release.fullname}-operator"],
        log_path=tmp_path / "operator.log",
    )  # fmt: skip
    yield watched[0]
    process.stop()
    log = (tmp_path / "operator.log").read_text(errors="replace")
    assert "Not enough permissions" not in log, "Kopf met a 403 the chart's RBAC should allow"
    assert "could not post Event" not in log
    assert "lease round" not in log, "leader election met an error the chart's RBAC should prevent"
    assert "watch of leases broke" not in log, "the elector's watch met an error the chart's RBAC should prevent"
    assert f"acquired Lease {release.namespace}/{release.fullname}-operator" in log


def test_the_operator_reconciles_with_exactly_the_charts_rights(cluster: ClusterHandle, chart_operator: str) -> None:
    namespace = chart_operator
    agent = create_agent(cluster, namespace, "chart-rbac", clusterRoleRefs=["view"])
    status = agent.wait_ready(timeout=60)
    assert status["phase"] == "Active"
    assert status["grantedClusterRoles"] == ["view"]
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    agent.wait_phase("Suspended", timeout=60)
    agent.patch_spec({"revoked": True})
    agent.wait_phase("Revoked", timeout=60)
    audit = subprocess.run(
        [sys.executable, "-m", "agentid", "audit", "chart-rbac", "-n", namespace, "-o", "json",
         f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    reasons = [entry["reason"] for entry in json.loads(audit.stdout)]
    assert reasons[0] == "Provisioned"
    assert {"Suspended", "Revoked"} <= set(reasons)


def test_kubernetes_refuses_what_the_chart_did_not_make_grantable(cluster: ClusterHandle, chart_operator: str) -> None:
    """The confused-deputy guard from the API server's side: the operator cannot hand out what it does not hold.

    (It does hold Secrets, ServiceAccounts, Roles and RoleBindings in watched namespaces — it writes them per agent —
    so RBAC cannot keep those out of agents' hands: the built-in baseline policy, AgentPolicies and admission do.)"""
    namespace = chart_operator
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    deleter_role = f"deployment-deleter-{namespace[-6:]}"  # nothing the baseline forbids, nothing the chart grants
    rule = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "delete"]}
    rbac.create_cluster_role({"metadata": {"name": deleter_role}, "rules": [rule]})
    edit = create_agent(cluster, namespace, "wants-edit", clusterRoleRefs=[deleter_role])
    deleter = create_agent(
        cluster,
        namespace,
        "wants-delete",
        permissions=[CONFIGMAP_RULE, {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}],
    )
    for agent in (edit, deleter):
        ready = eventually(
            lambda agent=agent: agent.condition("Ready").get("status") == "False" and agent.condition("Ready"),
            timeout=60,
            what=f"{agent.name} refused",
        )
        assert ready["reason"] == "ApplyFailed"
        assert "forbidden" in ready["message"].lower()
    rolebindings = cluster.kubectl("get", "rolebindings", "-n", namespace, "-o", "name").stdout
    assert naming.cluster_role_binding("wants-edit", deleter_role) not in rolebindings
    rbac.delete_cluster_role(deleter_role)


@pytest.fixture
def chart_token_service(
    cluster: ClusterHandle, release: Release, tmp_path: Path
) -> Iterator[tuple[str, ManagedProcess]]:
    """`agentid serve` with the token service ServiceAccount's token (plain HTTP on loopback: no Pod, no TLS)."""
    kubeconfig = _service_account_kubeconfig(cluster, release.token_service, tmp_path / "tokens.kubeconfig")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        "chart-token-service",
        [sys.executable, "-m", "agentid", "serve", f"--issuer={issuer}", "--host=127.0.0.1", f"--port={port}",
         f"--namespace={release.namespace}", f"--kubeconfig={kubeconfig}"],
        log_path=tmp_path / "tokens.log",
    )  # fmt: skip
    yield issuer, process
    process.stop()


def test_the_token_service_starts_with_exactly_the_charts_rights(
    cluster: ClusterHandle, release: Release, chart_token_service: tuple[str, ManagedProcess]
) -> None:
    issuer, process = chart_token_service

    def ready() -> bool:
        assert process.alive(), process.log_tail()
        try:
            return requests.get(f"{issuer}/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    eventually(ready, timeout=60, what="token service ready")
    keyring = cluster.kubectl("get", "secret", "agentid-token-issuer", "-n", release.namespace, "-o", "json")
    assert json.loads(keyring.stdout)["type"] == "agentid.dev/issuer-keys"
    assert requests.get(f"{issuer}/jwks.json", timeout=5).json()["keys"]


# -- admission and lifecycle of the release -------------------------------------------------------------------------


def test_webhook_fails_closed_while_no_operator_answers(cluster: ClusterHandle, release: Release) -> None:
    namespace = f"{release.name}-guarded"
    _ensure_namespace(cluster, namespace, {WEBHOOK_LABEL: release.name})
    try:
        manifest = {
            "apiVersion": "agentid.dev/v1alpha1",
            "kind": "AgentIdentity",
            "metadata": {"name": "unadmitted", "namespace": namespace},
            "spec": {"purpose": "never admitted", "owner": {"kind": "User", "name": "alice@example.com"}},
        }
        result = cluster.kubectl("create", "-f", "-", input_text=json.dumps(manifest), check=False)
        assert result.returncode != 0
        assert "failed calling webhook" in result.stderr
        assert f"{release.fullname}-webhook" in result.stderr
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_self_signed_certificates_are_kept_across_upgrades(cluster: ClusterHandle, release: Release) -> None:
    def webhook_ca() -> str:
        out = cluster.kubectl("get", "validatingwebhookconfiguration", release.fullname, "-o", "json").stdout
        return str(json.loads(out)["webhooks"][0]["clientConfig"]["caBundle"])

    before = webhook_ca()
    secret_before = cluster.kubectl("get", "secret", f"{release.fullname}-webhook-tls", "-n", release.namespace,
                                    "-o", "jsonpath={.data.tls\\.crt}").stdout  # fmt: skip
    helm("upgrade", release.name, str(CHART), f"--kubeconfig={cluster.kubeconfig}", "--namespace", release.namespace,
         "--reuse-values", "--skip-crds")  # fmt: skip
    assert webhook_ca() == before
    secret_after = cluster.kubectl("get", "secret", f"{release.fullname}-webhook-tls", "-n", release.namespace,
                                   "-o", "jsonpath={.data.tls\\.crt}").stdout  # fmt: skip
    assert secret_after == secret_before


def test_a_changed_issuer_name_reissues_the_self_signed_certificate_on_upgrade(
    cluster: ClusterHandle, release: Release
) -> None:
    def served_names() -> str:
        encoded = cluster.kubectl("get", "secret", f"{release.fullname}-tokens-tls", "-n", release.namespace,
                                  "-o", "jsonpath={.data.tls\\.crt}").stdout  # fmt: skip
        certificate = x509.load_pem_x509_certificate(base64.b64decode(encoded))
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return ",".join(sorted(names.get_values_for_type(x509.DNSName)))

    assert "tokens.example.com" not in served_names()
    helm("upgrade", release.name, str(CHART), f"--kubeconfig={cluster.kubeconfig}", "--namespace", release.namespace,
         "--reuse-values", "--skip-crds", "--set", "tokenService.extraDnsNames={tokens.example.com}")  # fmt: skip
    assert "tokens.example.com" in served_names()


def _cluster_scoped(cluster: ClusterHandle) -> set[tuple[str, str]]:
    kinds = cluster.kubectl("api-resources", "--namespaced=false", "--verbs=list", "-o", "name").stdout.split()
    listed = cluster.kubectl("get", ",".join(kinds), "-o", "name", check=False).stdout.split()
    return {tuple(line.split("/", 1)) for line in listed}  # type: ignore[misc]


def test_uninstall_leaves_nothing_cluster_scoped_but_the_crds(
    cluster: ClusterHandle, crds: None, tmp_path: Path
) -> None:
    before = _cluster_scoped(cluster)
    installed = _install(cluster, values={}, tmp=tmp_path)
    during = _cluster_scoped(cluster) - before
    assert {kind for kind, _ in during} >= {
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "validatingwebhookconfiguration.admissionregistration.k8s.io",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io",
    }
    _uninstall(cluster, installed)
    left = {
        (kind, name)
        for kind, name in _cluster_scoped(cluster) - before
        if not (kind == "namespace" and name == installed.namespace)  # being deleted by the namespace controller
    }
    assert left == set()
    crds_left = cluster.kubectl("get", "crd", "agentidentities.agentid.dev", check=False)
    assert crds_left.returncode == 0, "CRDs stay (helm never deletes crds/): agents outlive a reinstall"


def test_notes_tell_how_to_check_the_install(cluster: ClusterHandle, release: Release) -> None:
    result = helm("get", "notes", release.name, f"--kubeconfig={cluster.kubeconfig}", "--namespace", release.namespace)
    assert f"rollout status deployment/{release.fullname}-operator" in result.stdout
    assert "kubectl wait --for=condition=Ready" in result.stdout
