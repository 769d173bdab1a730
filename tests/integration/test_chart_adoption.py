"""What a platform team adds to the chart on day 2, rendered and checked: values errors that say what is wrong,
validated namespaces and quantities, bring-your-own ServiceAccounts, extra env/volumes/objects, the issuer exposed
through a Service type and an Ingress, alerts and a dashboard on the metric names the code really exports, one JSON
log format for both components."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from agentid import metrics
from agentid.devcluster import assets
from tests.integration.test_chart import CHART, by_kind, documents, helm, named
from tests.support.clusters import ClusterHandle

ADOPTION = CHART / "ci" / "adoption-values.yaml"
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}


def render(*args: str) -> list[dict[str, Any]]:
    kube = assets.pinned_versions().kubernetes.removeprefix("v")
    return documents(
        helm("template", "agentid", str(CHART), "-n", "agentid-system", "--kube-version", kube, *args).stdout
    )


def refused(*args: str) -> str:
    result = helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert "'not' failed" not in result.stderr
    return result.stderr


# -- messages instead of 'not' failed -------------------------------------------------------------------------------


def test_a_forbidden_grantable_cluster_role_is_refused_with_a_sentence() -> None:
    stderr = refused("--set", "grantableClusterRoles={view,cluster-admin}")
    assert 'grantableClusterRoles must not contain "cluster-admin"' in stderr


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, "agentPermissions[0].apiGroups must not"),
        ({"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}, "agentPermissions[0].resources must not"),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["escalate"]},
         'agentPermissions[0].verbs must not contain "escalate"'),
    ],
    ids=["wildcard-group", "wildcard-subresource", "escalate"],
)  # fmt: skip
def test_forbidden_agent_permissions_are_refused_with_the_index_and_the_value(
    rule: dict[str, Any], message: str, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"agentPermissions": [rule]}))
    assert message in refused(f"--values={values}")


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("watchNamespaces={Team_A}", "watchNamespaces"),
        ("watchNamespaces={a b}", "watchNamespaces"),
        ("operator.resources.limits.memory=lots", "memory"),
        ("tokenService.resources.requests.cpu=-1", "cpu"),
        ("tokenService.service.type=ExternalName", "type"),
    ],
    ids=["namespace-with-capitals", "namespace-with-space", "memory-not-a-quantity", "negative-cpu",
         "unsupported-service-type"],
)  # fmt: skip
def test_values_schema_validates_namespaces_quantities_and_service_types(override: str, where: str) -> None:
    assert where in refused("--set", override)


def test_namespace_globs_and_quantities_in_every_spelling_are_accepted() -> None:
    docs = render(
        "--set", "watchNamespaces={team-*,!team-sandbox,payments}",
        "--set", "operator.resources.limits.cpu=1500m",
        "--set-string", "operator.resources.limits.memory=1.5Gi",
    )  # fmt: skip
    operator = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-*" in operator["args"]
    assert operator["resources"]["limits"] == {"cpu": "1500m", "memory": "1.5Gi"}


# -- what the adoption values render --------------------------------------------------------------------------------


def test_bring_your_own_service_account_is_used_and_bound_not_created() -> None:
    docs = render(f"--values={ADOPTION}")
    accounts = {doc["metadata"]["name"] for doc in by_kind(docs, "ServiceAccount")}
    assert "platform-agentid-operator" not in accounts
    assert "agentid-tokens" in accounts
    operator = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]
    assert operator["serviceAccountName"] == "platform-agentid-operator"
    bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    operator_subjects = {s["name"] for b in bindings if b["metadata"]["name"].startswith("agentid-operator")
                         for s in b["subjects"]}  # fmt: skip
    assert operator_subjects == {"platform-agentid-operator"}
    stderr = refused("--set", "operator.serviceAccount.create=false")
    assert "operator.serviceAccount.name is required" in stderr


def test_extra_env_volumes_and_mounts_reach_the_containers() -> None:
    docs = render(f"--values={ADOPTION}")
    operator = named(docs, "Deployment", "agentid-operator")["spec"]["template"]["spec"]
    container = operator["containers"][0]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"} in container["env"]
    assert any(env["name"] == "POD_NAME" for env in container["env"]), "the chart's own env stays"
    assert {"name": "corporate-ca", "mountPath": "/etc/corporate-ca", "readOnly": True} in container["volumeMounts"]
    assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca"}} in operator["volumes"]
    tokens = named(docs, "Deployment", "agentid-tokens")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "TZ", "value": "UTC"} in tokens["env"]


def test_the_issuer_is_exposed_by_service_type_and_ingress() -> None:
    docs = render(f"--values={ADOPTION}")
    service = named(docs, "Service", "agentid-tokens")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    ingress = named(docs, "Ingress", "agentid-tokens")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "issuer.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "agentid-tokens", "port": {"name": "https"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "tokenService.ingress.host is required" in refused("--set", "tokenService.ingress.enabled=true")


def test_extra_objects_are_rendered_with_tpl() -> None:
    docs = render(f"--values={ADOPTION}")
    assert named(docs, "ConfigMap", "corporate-ca")["metadata"]["namespace"] == "agentid-system"
    assert named(docs, "ConfigMap", "agentid-notes")["data"]["issuer"] == "https://issuer.example.com"


def test_both_components_log_json_by_default() -> None:
    docs = render()
    for name in ("agentid-operator", "agentid-tokens"):
        args = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--log-format=json" in args, name


# -- alerts and dashboard on real metric names ----------------------------------------------------------------------


def exported_series() -> set[str]:
    """Every series name agentid.metrics registers (counters as _total, histograms as _bucket/_sum/_count)."""
    assert metrics.RECONCILES is not None
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("agentid_"):
            continue
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_alerts_and_dashboard_use_only_metric_names_the_code_exports() -> None:
    docs = render(f"--values={ADOPTION}")
    rules = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} >= {
        "AgentidRevocationSlow",
        "AgentidReconcileErrors",
        "AgentidTokenRefusals",
    }
    assert "> 1.5" in next(r for r in rules if r["alert"] == "AgentidRevocationSlow")["expr"]
    dashboard = json.loads(named(docs, "ConfigMap", "agentid-dashboard")["data"]["agentid.json"])
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]
    used = {name for expr in expressions for name in re.findall(r"\bagentid_[a-z_]+", expr)}
    exported = exported_series()
    assert used, "the queries name metrics"
    assert used <= exported, f"unknown metrics: {used - exported}"
    assert {
        "agentid_revocation_latency_seconds_bucket",
        "agentid_reconcile_total",
        "agentid_token_exchanges_total",
    } <= used


# -- against the API server -----------------------------------------------------------------------------------------


@pytest.mark.existing_cluster
def test_the_adoption_render_passes_lint_and_a_server_side_dry_run(
    cluster: ClusterHandle, crds: None, tmp_path: Path
) -> None:
    kube = assets.pinned_versions().kubernetes.removeprefix("v")
    lint = helm("lint", str(CHART), "--strict", "--kube-version", kube, f"--values={ADOPTION}", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    cluster.kubectl("create", "namespace", "agentid-system", check=False)
    native = [doc for doc in render(f"--values={ADOPTION}") if doc["kind"] not in FOREIGN_KINDS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(native))
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", str(path), check=False
    )
    assert result.returncode == 0, result.stderr
