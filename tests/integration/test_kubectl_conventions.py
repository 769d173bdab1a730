"""The CRDs as kubectl users meet them: `kubectl explain` describes every level, `kubectl get agentid-all` lists
both kinds, `-o wide` shows more, and an AgentPolicy reports Ready (so `kubectl wait --for=condition=Ready` works)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from agentid.api import crdgen, v1alpha1
from agentid.domain import reasons
from tests.support.agents import create_agent
from tests.support.clusters import ClusterHandle

pytestmark = [pytest.mark.cluster, pytest.mark.existing_cluster]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("agentidentities", "gives one AI agent its own Kubernetes identity"),
        ("agentidentities.spec", "The agent as its owner declares it"),
        ("agentidentities.spec.credentials", "Key algorithm, key rotation, token lifetime and audiences"),
        ("agentidentities.spec.agent.model", "Model the agent runs on"),
        ("agentidentities.status", "What the operator has put in force"),
        ("agentidentities.status.keys.state", "Retiring is still published for verifiers"),
        ("agentidentities.status.conditions.reason", "one CamelCase word for programs"),
        ("agentpolicies.spec.namespaceSelector.matchExpressions.operator", "How the key's value is tested"),
        ("agentpolicies.status.conditions", "the policy is in force"),
    ],
)
def test_kubectl_explain_describes_every_level(cluster: ClusterHandle, crds: None, path: str, expected: str) -> None:
    explained = cluster.kubectl("explain", path).stdout
    assert expected in " ".join(explained.split())


def test_the_category_lists_both_kinds_and_wide_shows_more(
    cluster: ClusterHandle, crds: None, agent_namespace: str
) -> None:
    agent = create_agent(cluster, agent_namespace, "conventional")
    agent.wait_ready()
    listed = cluster.kubectl("get", crdgen.CATEGORY, "-n", agent_namespace, "-o", "name").stdout.split()
    assert "agentidentity.agentid.dev/conventional" in listed
    wide = cluster.kubectl("get", "agentidentities", "-n", agent_namespace, "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert header[:6] == ["NAME", "OWNER", "MODE", "PHASE", "READY", "AGE"]
    assert header[6:] == ["AGENT-ID", "TOKEN-TTL", "EXPIRES", "PURPOSE"]
    assert f"spiffe://cluster.local/ns/{agent_namespace}/agent/conventional" in wide[1]


@pytest.fixture
def policy_name(cluster: ClusterHandle, crds: None) -> Iterator[str]:
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    name = f"ready-{uuid.uuid4().hex[:8]}"
    selector = {"matchLabels": {"agentid.dev/policy-test": name}}
    body = {"apiVersion": v1alpha1.API_VERSION, "kind": v1alpha1.POLICY_KIND, "metadata": {"name": name},
            "spec": {"namespaceSelector": selector}}  # fmt: skip
    custom.create_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, body)
    yield name
    custom.delete_cluster_custom_object(v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, name)


def test_an_agent_policy_becomes_ready_and_kubectl_wait_sees_it(
    cluster: ClusterHandle, operator: object, policy_name: str
) -> None:
    waited = cluster.kubectl("wait", "--for=condition=Ready", f"agentpolicy/{policy_name}", "--timeout=60s")
    assert "condition met" in waited.stdout
    reason = cluster.kubectl(
        "get", "agentpolicy", policy_name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].reason}'
    ).stdout
    assert reason == reasons.POLICY_ENFORCED
    columns = cluster.kubectl("get", "agentpolicy", policy_name).stdout.splitlines()
    assert columns[0].split()[:2] == ["NAME", "READY"]
    assert columns[1].split()[:2] == [policy_name, "True"]
