"""Pod identity injection on the real apiserver: labelled Pods are mutated exactly as documented, other Pods are
never sent to the webhook, every refusal says why, and Deployment and Job templates come out right (dry-run).

The session operator serves the Pod webhook for namespaces labelled ``agentid.dev/admission=enforced`` (see
``tests/conftest.py``), pointing Pods at the session's token service.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from prometheus_client import REGISTRY

from agentid.client import environment as env
from agentid.domain import naming, podidentity
from agentid.webhooks import configuration
from tests.conftest import SIDECAR_IMAGE
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually
from tests.support.tokens import MCP, TokenServiceHandle, provision

pytestmark = pytest.mark.cluster
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoice-triage-workload.yaml"
SPEC: dict[str, Any] = {"credentials": {"audiences": [MCP]}}


@pytest.fixture(autouse=True)
def _needs_the_webhook(cluster: ClusterHandle) -> None:
    if cluster.local is None:
        pytest.skip("the Pod webhook is registered on the embedded control plane only")


def pod_manifest(agent: str | None, *, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app": "demo", **({podidentity.LABEL: agent} if agent else {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}", "labels": labels, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}], **spec},
    }


def create(cluster: ClusterHandle, namespace: str, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    created = core.api_client.sanitize_for_serialization(
        core.create_namespaced_pod(namespace, body, dry_run="All" if dry_run else None)
    )
    assert isinstance(created, dict)
    return created


def refusal(cluster: ClusterHandle, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(kubernetes.client.ApiException) as raised:
        create(cluster, namespace, body)
    assert raised.value.status == 403, raised.value.body
    return str(raised.value.body)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def test_a_labelled_pod_is_mutated_exactly_as_documented(
    cluster: ClusterHandle, agent_namespace: str, token_service: TokenServiceHandle
) -> None:
    agent = provision(cluster, agent_namespace, "triage", **SPEC)
    pod = create(cluster, agent_namespace, pod_manifest("triage"))
    spec = pod["spec"]
    assert spec["serviceAccountName"] == naming.service_account("triage")
    assert spec["automountServiceAccountToken"] is False
    assert names(spec["volumes"]) == ["agentid-token", "agentid-ca"]  # the API token volume is gone
    projected = spec["volumes"][0]["projected"]["sources"]
    assert projected == [
        {"serviceAccountToken": {"audience": token_service.issuer, "expirationSeconds": 600, "path": "token"}}
    ]
    ca = Path(token_service.endpoint.ca).read_text()
    assert pod["metadata"]["annotations"][podidentity.CA_ANNOTATION] == ca
    items = spec["volumes"][1]["downwardAPI"]["items"]
    assert items == [
        {
            "path": "ca.crt",
            "fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{podidentity.CA_ANNOTATION}']"},
        }
    ]
    (app,) = spec["containers"]
    assert [(m["name"], m["mountPath"], m.get("readOnly")) for m in app["volumeMounts"]] == [
        ("agentid-ca", env.CA_DIR, True),
        ("agentid-token", env.SA_TOKEN_DIR, True),
    ]
    assert env_of(app) == {
        env.AGENT: f"{agent_namespace}/triage",
        env.AGENT_ID: agent.agent_id,
        env.ISSUER: token_service.issuer,
        env.TOKEN_URL: f"{token_service.issuer}/token",
        env.INTROSPECTION_URL: f"{token_service.issuer}/introspect",
        env.CA_FILE: env.CA_PATH,
        env.SA_TOKEN_FILE: env.SA_TOKEN_PATH,
    }
    assert not spec.get("initContainers")


def test_re_admitting_an_injected_pod_adds_nothing_twice(cluster: ClusterHandle, agent_namespace: str) -> None:
    provision(cluster, agent_namespace, "triage", **SPEC)
    annotations = {podidentity.AUDIENCES_ANNOTATION: MCP}
    first = create(cluster, agent_namespace, pod_manifest("triage", annotations=annotations))
    again = copy.deepcopy(first)
    again["metadata"] = {
        "name": f"{first['metadata']['name']}-again",
        "labels": first["metadata"]["labels"],
        "annotations": first["metadata"]["annotations"],
    }
    again.pop("status", None)
    second = create(cluster, agent_namespace, again)
    for key in ("volumes", "initContainers", "containers"):
        assert second["spec"][key] == first["spec"][key], key


def test_a_pod_without_the_label_is_never_touched(cluster: ClusterHandle, agent_namespace: str) -> None:
    provision(cluster, agent_namespace, "triage", **SPEC)
    pod = create(cluster, agent_namespace, pod_manifest(None))
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "default"
    assert [name for name in names(spec["volumes"]) if name.startswith("kube-api-access-")]
    assert not [name for name in names(spec["volumes"]) if name.startswith("agentid")]
    assert podidentity.CA_ANNOTATION not in (pod["metadata"].get("annotations") or {})
    assert "env" not in spec["containers"][0] or not env_of(spec["containers"][0])


def test_the_sidecar_is_injected_and_only_it_sees_the_service_account_token(
    cluster: ClusterHandle, agent_namespace: str, token_service: TokenServiceHandle
) -> None:
    provision(cluster, agent_namespace, "triage", **SPEC)
    audiences = f"{MCP},{token_service.issuer}"
    pod = create(
        cluster, agent_namespace, pod_manifest("triage", annotations={podidentity.AUDIENCES_ANNOTATION: audiences})
    )
    spec = pod["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == podidentity.SIDECAR
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env_of(sidecar)[env.AUDIENCES] == audiences
    assert {m["name"] for m in sidecar["volumeMounts"]} == {"agentid-token", "agentid-ca", "agentid-tokens"}
    (app,) = spec["containers"]
    assert {m["name"] for m in app["volumeMounts"]} == {"agentid-ca", "agentid-tokens"}
    assert all(m["readOnly"] for m in app["volumeMounts"])
    assert env.SA_TOKEN_FILE not in env_of(app)
    assert env_of(app)[env.TOKENS_DIR] == env.TOKENS_PATH
    tokens_volume = next(v for v in spec["volumes"] if v["name"] == "agentid-tokens")
    assert tokens_volume["emptyDir"]["medium"] == "Memory"


def test_a_suspended_agents_pod_is_admitted_with_a_warning_but_a_revoked_agents_is_refused(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    agent = provision(cluster, agent_namespace, "triage", **SPEC)
    agent.patch_spec({"supervision": {"mode": "Suspended", "reason": "incident"}})
    created = cluster.kubectl(
        "create", "-n", agent_namespace, "-o", "yaml", "-f", "-", input_text=yaml.safe_dump(pod_manifest("triage"))
    )
    assert yaml.safe_load(created.stdout)["spec"]["serviceAccountName"] == naming.service_account("triage")
    assert "agent triage is Suspended: the Pod is admitted but gets no agent token" in created.stderr
    agent.patch_spec({"revoked": True, "revocationReason": "compromised"})
    assert "agent triage is revoked: no Pod may run as it" in refusal(cluster, agent_namespace, pod_manifest("triage"))


def refused_count() -> float:
    return REGISTRY.get_sample_value("agentid_pod_injections_total", {"outcome": "refused"}) or 0.0


def test_refusals_name_the_problem(cluster: ClusterHandle, agent_namespace: str) -> None:
    provision(cluster, agent_namespace, "triage", **SPEC)
    before = refused_count()
    core = kubernetes.client.CoreV1Api(cluster.admin())
    core.create_namespaced_service_account(agent_namespace, {"metadata": {"name": "builder"}})
    other_account = refusal(cluster, agent_namespace, pod_manifest("triage", serviceAccountName="builder"))
    assert f"runs as the agent's ServiceAccount {naming.service_account('triage')}, not 'builder'" in other_account
    missing = refusal(cluster, agent_namespace, pod_manifest("nobody"))
    assert f"there is no AgentIdentity 'nobody' in namespace {agent_namespace}" in missing
    undeclared = pod_manifest("triage", annotations={podidentity.AUDIENCES_ANNOTATION: "https://elsewhere.example"})
    assert "'https://elsewhere.example' is not an audience of agent triage" in refusal(
        cluster, agent_namespace, undeclared
    )
    assert refused_count() - before == 3  # the operator's metric (in this process: the session operator's)


def test_deployment_and_job_templates_become_agent_pods(cluster: ClusterHandle, agent_namespace: str) -> None:
    """The example Deployment and a Job, dry-run on the server: the workloads are accepted, and their Pod
    templates come out of admission as the agent's Pods (no kubelet or controllers needed)."""
    deployment = yaml.safe_load(EXAMPLE.read_text())
    wanted = deployment["spec"]["template"]["metadata"]["annotations"][podidentity.AUDIENCES_ANNOTATION]
    provision(cluster, agent_namespace, "invoice-triage", credentials={"audiences": wanted.split(",")})
    deployment["metadata"]["namespace"] = agent_namespace
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "month-end", "namespace": agent_namespace},
        "spec": {
            "template": {
                "metadata": {"labels": {podidentity.LABEL: "invoice-triage"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "run", "image": "busybox:1.36", "command": ["true"]}],
                },
            }
        },
    }
    for workload in (deployment, job):
        applied = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "yaml", "-f", "-", input_text=yaml.safe_dump(workload)
        )
        template = yaml.safe_load(applied.stdout)["spec"]["template"]
        pod = create(
            cluster,
            agent_namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**template["metadata"], "generateName": "w-"},
                "spec": template["spec"],
            },
            dry_run=True,
        )
        assert pod["spec"]["serviceAccountName"] == naming.service_account("invoice-triage"), workload["kind"]
        assert "agentid-token" in names(pod["spec"]["volumes"])
    example_pod = create(
        cluster,
        agent_namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**deployment["spec"]["template"]["metadata"], "generateName": "d-"},
            "spec": deployment["spec"]["template"]["spec"],
        },
        dry_run=True,
    )
    assert example_pod["spec"]["initContainers"][0]["name"] == podidentity.SIDECAR
    assert {m["name"] for m in example_pod["spec"]["containers"][0]["volumeMounts"]} >= {"agentid-tokens", "agentid-ca"}


def test_the_agent_label_of_a_pod_cannot_be_added_changed_or_removed_later(
    cluster: ClusterHandle, agent_namespace: str
) -> None:
    provision(cluster, agent_namespace, "triage", **SPEC)
    core = kubernetes.client.CoreV1Api(cluster.admin())
    labelled = create(cluster, agent_namespace, pod_manifest("triage"))["metadata"]["name"]
    plain = create(cluster, agent_namespace, pod_manifest(None))["metadata"]["name"]

    def refused(name: str, label: str | None, dry_run: str | None = None) -> str:
        """The refusal's body; an AssertionError (so ``eventually`` retries) when the change was admitted."""
        patch = {"metadata": {"labels": {podidentity.LABEL: label}}}
        try:
            core.patch_namespaced_pod(name, agent_namespace, patch, dry_run=dry_run)
        except kubernetes.client.ApiException as raised:
            refusal = raised
        else:
            raise AssertionError(f"changing the agent label of {name} to {label!r} was admitted")
        assert refusal.status in (403, 422), refusal.body
        return str(refusal.body)

    # A ValidatingAdmissionPolicy takes effect once the apiserver's policy informer has it; the dry run waits for
    # that without changing the Pod while the policy is not in effect yet.
    in_effect = eventually(lambda: refused(labelled, "other", dry_run="All"), what="policy in effect")
    assert configuration.POD_LABEL_MESSAGE in in_effect
    assert configuration.POD_LABEL_MESSAGE in refused(labelled, "other")
    assert configuration.POD_LABEL_MESSAGE in refused(labelled, None)
    assert configuration.POD_LABEL_MESSAGE in refused(plain, "triage")
    core.patch_namespaced_pod(labelled, agent_namespace, {"metadata": {"labels": {"team": "finance"}}})
    assert core.read_namespaced_pod(labelled, agent_namespace).metadata.labels[podidentity.LABEL] == "triage"
