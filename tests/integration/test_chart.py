"""The Helm chart offline and against the API server: lint, schema, CRDs in sync, renders applied with server-side
dry-run, least-privilege and pod-security invariants of the rendered manifests, and checkov's verdict.

Installation, RBAC as the operator sees it, and uninstallation are in ``test_chart_install.py``.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentid.devcluster import assets
from agentid.webhooks import configuration
from tests.support.clusters import ClusterHandle

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentid-operator"
CI = CHART / "ci"
RELEASE_NAMESPACE = "chart-ci-system"
# Kinds whose CRDs the test cluster does not have (cert-manager, Prometheus Operator): checked structurally.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}
CHECKOV_SKIPS = {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_38"}


def helm_binary() -> str:
    return str(assets.find_binary("helm"))


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=check, timeout=180)


def render(*values: str, namespace: str = RELEASE_NAMESPACE, release: str = "agentid", crds: bool = False) -> str:
    """``helm template`` (the pinned Kubernetes version: a helm built from source defaults to v1.20)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    args += ["--kube-version", assets.pinned_versions().kubernetes.removeprefix("v")]
    args += [f"--values={CI / name}" for name in values]
    if crds:
        args.append("--include-crds")
    return helm(*args).stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name)


def checkov_binary() -> Path:
    """checkov lives in its own virtualenv (its pins would constrain the project's): `make checkov` builds it."""
    configured = os.environ.get("AGENTID_CHECKOV")
    path = Path(configured) if configured else REPO / ".venv" / "tools" / "checkov" / "bin" / "checkov"
    if not path.exists():
        pytest.fail(f"checkov not found at {path}: run `make checkov` (or set AGENTID_CHECKOV)")
    return path


@pytest.fixture(scope="module")
def chart_namespaces(cluster: ClusterHandle) -> Iterator[None]:
    """The namespaces the renders name must exist for a server-side dry-run of namespaced objects."""
    names = [RELEASE_NAMESPACE, "chart-ci-agents-a", "chart-ci-agents-b"]
    created = [name for name in names if cluster.kubectl("create", "namespace", name, check=False).returncode == 0]
    yield
    for name in created:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


# -- offline --------------------------------------------------------------------------------------------------------


def test_helm_lint_passes_with_default_and_ci_values() -> None:
    for values in ([], ["full-values.yaml"], ["minimal-values.yaml"]):
        args = ["lint", str(CHART), "--strict", "--kube-version", assets.pinned_versions().kubernetes.removeprefix("v")]
        result = helm(*args, *(f"--values={CI / v}" for v in values), check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_are_identical_to_the_generated_crds() -> None:
    generated = sorted(path.name for path in (REPO / "crds").glob("*.yaml"))
    shipped = sorted(path.name for path in (CHART / "crds").glob("*.yaml"))
    assert shipped == generated, "run `make crds`: the chart's crds/ must hold exactly crds/"
    _, mismatch, errors = filecmp.cmpfiles(REPO / "crds", CHART / "crds", generated, shallow=False)
    assert mismatch + errors == [], "stale chart CRDs: run `make crds`"


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("operator.replicas=0", "replicas"),
        ("operator.leaderElection.renewDeadlineSeconds=20", "must be shorter than leaseDurationSeconds"),
        ("operator.leaderElection.retryPeriodSeconds=9", "must be longer than 1.2 x retryPeriodSeconds"),
        ("grantableClusterRoles={cluster-admin}", "grantableClusterRoles"),
        ("tls.mode=none", "/tls/mode"),
        ("webhook.agentPolicyFailurePolicy=Maybe", "agentPolicyFailurePolicy"),
        ("securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
        ("tokenService.issuer=http://insecure.example.com", "issuer"),
    ],
    ids=["at-least-one-operator-replica", "leader-stops-before-its-lease-expires", "renews-before-its-deadline",
         "cluster-admin-never-grantable", "unknown-tls-mode", "unknown-failure-policy",
         "privilege-escalation-refused", "issuer-must-be-https"],
)  # fmt: skip
def test_values_schema_refuses(override: str, complaint: str) -> None:
    result = helm("template", "x", str(CHART), "--set", override, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"]},
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
    ],
    ids=["wildcard-group", "wildcard-resource", "wildcard-verb", "escalate", "bind", "impersonate"],
)
def test_values_schema_refuses_wildcards_and_rbac_verbs_in_agent_permissions(
    rule: dict[str, Any], tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"agentPermissions": [rule]}))
    result = helm("template", "x", str(CHART), f"--values={values}", check=False)
    assert result.returncode != 0
    assert "agentPermissions" in result.stderr


def test_operator_replicas_elect_a_leader_roll_without_downtime_and_run_restricted_pods() -> None:
    for values, replicas in (([], 2), (["full-values.yaml"], 3), (["minimal-values.yaml"], 1)):
        docs = documents(render(*values))
        operator = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator"))
        assert operator["spec"]["replicas"] == replicas
        # Every replica serves admission: a rollout keeps one serving (no Recreate gap for the fail-closed webhook).
        assert operator["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
        container = operator["spec"]["template"]["spec"]["containers"][0]
        assert "--leader-election" in container["args"]
        assert "--leader-election-name=agentid-operator" in container["args"]
        assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # serving, not leadership
        # A terminating replica keeps admitting while its endpoint is withdrawn, then releases its Leases.
        assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        budgets = [b["metadata"]["name"] for b in by_kind(docs, "PodDisruptionBudget")]
        assert ("agentid-operator" in budgets) == (replicas > 1)
        for deployment in by_kind(docs, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False
                assert security["readOnlyRootFilesystem"] is True
                assert security["capabilities"]["drop"] == ["ALL"]
                assert {"requests", "limits"} <= set(container["resources"])
                assert container["livenessProbe"]
                assert container["readinessProbe"]


def test_leader_election_timings_shards_and_lease_rights_in_the_release_namespace_only() -> None:
    docs = documents(render())
    args = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--shards=1", "--lease-duration=15", "--renew-deadline=10", "--retry-period=2"} <= set(args)
    role = named(docs, "Role", "agentid-operator-leader-election")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "update"],
            "resourceNames": ["agentid-operator"],
        },
    ]
    assert named(docs, "RoleBinding", "agentid-operator-leader-election")["roleRef"]["name"] == role["metadata"]["name"]

    sharded = documents(render("full-values.yaml"))
    args = named(sharded, "Deployment", "agentid-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--shards=3", "--lease-duration=20", "--renew-deadline=15", "--retry-period=3"} <= set(args)
    rules = named(sharded, "Role", "agentid-operator-leader-election")["rules"]
    assert rules[1] == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "list", "watch", "update", "delete"],
    }


def test_replicas_spread_over_nodes_by_default_and_the_spread_can_be_replaced() -> None:
    docs = documents(render())
    for name, component in (("agentid-operator", "operator"), ("agentid-tokens", "token-service")):
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # one node still runs every replica
        assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
    full = named(documents(render("full-values.yaml")), "Deployment", "agentid-operator")["spec"]["template"]["spec"]
    assert [c["topologyKey"] for c in full["topologySpreadConstraints"]] == ["topology.kubernetes.io/zone"]
    minimal = named(documents(render("minimal-values.yaml")), "Deployment", "agentid-operator")
    assert "topologySpreadConstraints" not in minimal["spec"]["template"]["spec"]


def test_operator_bind_is_limited_to_grantable_cluster_roles_and_nothing_escalates() -> None:
    for values, grantable in (([], ["view"]), (["full-values.yaml"], ["view", "edit"]), (["minimal-values.yaml"], [])):
        docs = documents(render(*values))
        rules = [rule for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for rule in role["rules"]]
        binds = [rule for rule in rules if "bind" in rule["verbs"]]
        assert [rule.get("resourceNames") for rule in binds] == ([grantable] if grantable else [])
        assert all(rule["resources"] == ["clusterroles"] for rule in binds)
        for rule in rules:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"escalate", "impersonate"} & set(rule["verbs"])
        bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
        assert not [b for b in bindings if b["roleRef"]["name"] in ("cluster-admin", "admin", "edit")]


def test_exact_watch_namespaces_turn_namespaced_rights_into_roles_there() -> None:
    docs = documents(render("full-values.yaml"))
    operator_role = named(docs, "ClusterRole", "agentid-operator")
    cluster_resources = {r for rule in operator_role["rules"] for r in rule["resources"]}
    assert not {"secrets", "serviceaccounts", "roles", "rolebindings", "agentidentities"} & cluster_resources
    roles = by_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles if r["metadata"]["name"] == "agentid-operator"} == {
        "chart-ci-agents-a",
        "chart-ci-agents-b",
    }
    assert not [b for b in by_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == "agentid-operator-grants"]
    args = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=chart-ci-agents-a" in args
    assert "--namespace=chart-ci-agents-b" in args
    assert "--all-namespaces" not in args


def test_webhooks_fail_closed_for_agents_and_carry_a_ca() -> None:
    docs = documents(render())
    validating = by_kind(docs, "ValidatingWebhookConfiguration")[0]
    mutating = by_kind(docs, "MutatingWebhookConfiguration")[0]
    hooks = {hook["name"]: hook for hook in validating["webhooks"] + mutating["webhooks"]}
    paths = {name: hook["clientConfig"]["service"]["path"] for name, hook in hooks.items()}
    assert paths == {
        "agentidentities.validate.agentid.dev": "/validate-agentidentity",
        "agentpolicies.validate.agentid.dev": "/validate-agentpolicy",
        "agentidentities.mutate.agentid.dev": "/mutate-agentidentity",
        "kill-switch.agentidentities.mutate.agentid.dev": "/mutate-agentidentity",
        "pods.identity.agentid.dev": "/mutate-pod-identity",
    }
    kill_switch = configuration.kill_switch_expression()
    for name, hook in hooks.items():
        assert hook["rules"][0]["apiGroups"] == ([""] if name.startswith("pods") else ["agentid.dev"])
        assert hook["clientConfig"]["caBundle"]
        if name.startswith("agentidentities"):
            assert hook["failurePolicy"] == "Fail"
            assert hook["matchConditions"] == [{"name": "not-kill-switch", "expression": f"!({kill_switch})"}]
    # Suspend and revoke (and the operator's finalizer removal) never wait for the webhook.
    killer = hooks["kill-switch.agentidentities.mutate.agentid.dev"]
    assert killer["failurePolicy"] == "Ignore"
    assert killer["matchConditions"] == [{"name": "kill-switch", "expression": kill_switch}]
    secret = named(docs, "Secret", "agentid-webhook-tls")
    assert secret["data"]["ca.crt"] == validating["webhooks"][0]["clientConfig"]["caBundle"]


def test_cert_manager_mode_requests_certificates_for_the_service_names_and_injects_the_ca() -> None:
    docs = documents(render("full-values.yaml"))
    assert not by_kind(docs, "Secret"), "cert-manager writes the TLS Secrets; the chart must not"
    webhook_cert = named(docs, "Certificate", "agentid-webhook-tls")
    assert "agentid-webhook.chart-ci-system.svc" in webhook_cert["spec"]["dnsNames"]
    assert webhook_cert["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "platform-ca"}
    tokens_cert = named(docs, "Certificate", "agentid-tokens-tls")
    assert {"agents.example.com", "agentid-tokens.chart-ci-system.svc", "agentid-tokens.internal.example.com"} <= set(
        tokens_cert["spec"]["dnsNames"]
    )
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        configuration = by_kind(docs, kind)[0]
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            "chart-ci-system/agentid-webhook-tls"
        )
        assert all("caBundle" not in hook["clientConfig"] for hook in configuration["webhooks"])
    minimal = documents(render("minimal-values.yaml"))
    assert {d["metadata"]["name"] for d in by_kind(minimal, "Issuer")} == {"agentid-selfsigned", "agentid-ca"}


def test_service_monitor_selects_the_metrics_service_port() -> None:
    docs = documents(render("full-values.yaml"))
    monitor = by_kind(docs, "ServiceMonitor")[0]
    service = named(docs, "Service", "agentid-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_self_signed_certificates_survive_a_second_render_only_through_lookup() -> None:
    """Offline renders generate fresh material each time; installs reuse the Secret (see test_chart_install)."""
    first, second = documents(render()), documents(render())
    assert (
        named(first, "Secret", "agentid-webhook-tls")["data"] != named(second, "Secret", "agentid-webhook-tls")["data"]
    )


def test_image_digest_wins_over_the_tag() -> None:
    docs = documents(render("full-values.yaml"))
    for deployment in by_kind(docs, "Deployment"):
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.com/platform/agentid@sha256:" + "0123456789abcdef" * 4


# -- against the API server -----------------------------------------------------------------------------------------


@pytest.mark.existing_cluster
@pytest.mark.parametrize(
    "values", [[], ["full-values.yaml"], ["minimal-values.yaml"]], ids=["default", "full", "minimal"]
)
def test_renders_pass_a_server_side_dry_run(
    cluster: ClusterHandle, crds: None, chart_namespaces: None, values: list[str], tmp_path: Path
) -> None:
    docs = documents(render(*values, crds=True))
    native = [doc for doc in docs if doc["kind"] not in FOREIGN_KINDS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(native))
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", str(path), check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(native)


# -- independent scanner --------------------------------------------------------------------------------------------


def _checkov(rendered: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    return subprocess.run(
        [str(checkov_binary()), "--config-file", str(CI / "checkov.yaml"), "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "values", [[], ["full-values.yaml"], ["adoption-values.yaml"]], ids=["default", "full", "adoption"]
)
def test_checkov_finds_nothing_beyond_the_justified_skips(values: list[str], tmp_path: Path) -> None:
    config = yaml.safe_load((CI / "checkov.yaml").read_text())
    assert set(config["skip-check"]) == CHECKOV_SKIPS, "a new skip needs its justification in ci/checkov.yaml"
    result = _checkov(render(*values), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed checks:" in result.stdout


def test_checkov_gate_is_live_it_fails_pods_without_a_network_policy(tmp_path: Path) -> None:
    result = _checkov(render("minimal-values.yaml"), tmp_path)
    assert result.returncode == 1
    assert "CKV2_K8S_6" in result.stdout


def test_the_workload_example_matches_what_the_chart_installs() -> None:
    """examples/invoice-triage-workload.yaml asks a default install (release agentid in agentid-system) for its
    identity: the operator injects Pods with the token service's issuer, Service URL and CA, and the sidecar image."""
    docs = documents(render(namespace="agentid-system"))
    tokens = named(docs, "Deployment", "agentid-tokens")["spec"]["template"]["spec"]["containers"][0]
    issuer = next(arg.split("=", 1)[1] for arg in tokens["args"] if arg.startswith("--issuer="))
    operator = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]
    args = dict(arg.split("=", 1) for arg in operator["containers"][0]["args"] if "=" in arg)
    assert args["--pod-token-issuer"] == args["--pod-token-audience"] == issuer
    assert args["--pod-token-url"] == "https://agentid-tokens.agentid-system.svc"
    assert args["--pod-sidecar-image"] == operator["containers"][0]["image"]
    ca_volume = next(v for v in operator["volumes"] if v["name"] == "token-service-ca")
    assert ca_volume["secret"] == {"secretName": "agentid-tokens-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    workload = yaml.safe_load((REPO / "examples" / "invoice-triage-workload.yaml").read_text())
    template = workload["spec"]["template"]
    assert template["metadata"]["labels"]["agentid.dev/agent"] == "invoice-triage"
    assert "serviceAccountName" not in template["spec"]  # injected
    agent = yaml.safe_load((REPO / "examples" / "invoice-triage.yaml").read_text())
    wanted = template["metadata"]["annotations"]["agentid.dev/token-audiences"].split(",")
    assert set(wanted) <= set(agent["spec"]["credentials"]["audiences"])


def test_the_pod_webhook_only_sees_labelled_pods_outside_system_namespaces() -> None:
    docs = documents(render())
    mutating = by_kind(docs, "MutatingWebhookConfiguration")[0]
    hook = next(h for h in mutating["webhooks"] if h["name"] == "pods.identity.agentid.dev")
    assert hook["objectSelector"] == {"matchExpressions": [{"key": "agentid.dev/agent", "operator": "Exists"}]}
    assert hook["namespaceSelector"]["matchExpressions"][0] == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", RELEASE_NAMESPACE],
    }
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert (hook["failurePolicy"], hook["reinvocationPolicy"]) == ("Fail", "IfNeeded")
    full = documents(render("full-values.yaml"))
    scoped = next(h for h in by_kind(full, "MutatingWebhookConfiguration")[0]["webhooks"] if "pods" in h["name"])
    assert scoped["namespaceSelector"]["matchLabels"] == {"agentid.dev/agents": "true"}
    policy = named(full, "NetworkPolicy", "agentid-tokens")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchExpressions": [{"key": "agentid.dev/agent", "operator": "Exists"}]},
    } in peers
    minimal = documents(render("minimal-values.yaml"))  # no token service: no injection
    assert all("pods" not in h["name"] for h in by_kind(minimal, "MutatingWebhookConfiguration")[0]["webhooks"])
    assert not by_kind(minimal, "ValidatingAdmissionPolicy")


def test_the_pod_label_policy_is_the_one_the_tests_prove() -> None:
    """The chart's ValidatingAdmissionPolicy is ``configuration.pod_label_policy`` (tested on the apiserver in
    test_pod_identity.py), bound to the same namespaces as the Pod webhook."""
    docs = documents(render())
    policy = by_kind(docs, "ValidatingAdmissionPolicy")[0]
    expected = configuration.pod_label_policy()[0]["spec"]
    assert policy["spec"]["validations"] == expected["validations"]
    assert policy["spec"]["matchConstraints"] == expected["matchConstraints"]
    binding = by_kind(docs, "ValidatingAdmissionPolicyBinding")[0]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    hook = next(h for h in by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"] if "pods" in h["name"])
    assert binding["spec"]["matchResources"]["namespaceSelector"] == hook["namespaceSelector"]
