"""kube-apiserver authenticates agent tokens: SelfSubjectReview names the agent, RBAC binds its UID group.

The operator writes and removes the bindings by supervision mode; the authn → RBAC path itself is also proven with
a RoleBinding the test writes (the same subjects the operator writes).
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import kubernetes
import pytest

from agentid.domain import naming
from tests.support.cluster_setup import KUBE_AUDIENCE
from tests.support.clusters import ClusterHandle, kubectl_binary, status_of
from tests.support.polling import eventually
from tests.support.tokens import (
    TokenServiceHandle,
    provisioned,
    whoami,
)

pytestmark = [pytest.mark.cluster, pytest.mark.existing_cluster, pytest.mark.usefixtures("apiserver_trusts_issuer")]

SPEC: dict[str, Any] = {
    "supervision": {"mode": "Autonomous"},
    "owner": {"kind": "User", "name": "alice@example.com"},
    "credentials": {"audiences": [KUBE_AUDIENCE]},
}


def test_self_subject_review_with_an_agent_token_names_the_agent_its_owner_and_supervision(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    user = whoami(cluster, token)
    assert user is not None
    assert user["username"] == f"agent:{token_namespace}:triage"
    assert user["uid"] == agent.uid
    assert set(user["groups"]) >= {"agentid:agents", f"agentid:uid:{agent.uid}", "system:authenticated"}
    extra = user["extra"]
    assert extra["agentid.dev/owner"] == ["User:alice@example.com"]
    assert extra["agentid.dev/supervision"] == ["Autonomous"]
    assert extra["agentid.dev/agent-id"] == [agent.agent_id]
    assert "agentid.dev/actor" not in extra
    assert extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")


def test_kubectl_auth_whoami_shows_the_agent(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    result = subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig=/dev/null",
            f"--server={cluster.server}",
            f"--certificate-authority={cluster.configuration.ssl_ca_cert}",
            f"--token={token}",
            "auth",
            "whoami",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"agent:{token_namespace}:triage" in result.stdout


def test_a_token_for_another_audience_is_not_accepted_by_the_apiserver(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=token_service.issuer)
    assert whoami(cluster, token) is None


def test_the_agents_uid_group_carries_rbac_granted_to_it(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(cluster, token_service, token_namespace, "triage", **SPEC)
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rbac.create_namespaced_role(
        token_namespace,
        {
            "metadata": {"name": "granted-by-test"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        token_namespace,
        {
            "metadata": {"name": "granted-by-test"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "granted-by-test"},
            "subjects": [
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": naming.uid_group(agent.uid)}
            ],
        },
    )
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    core = kubernetes.client.CoreV1Api(cluster.with_token(token))
    eventually(lambda: status_of(core.list_namespaced_config_map, token_namespace) == 200, what="granted list")
    created = {"metadata": {"name": f"by-agent-{uuid.uuid4().hex[:6]}"}}
    assert status_of(core.create_namespaced_config_map, token_namespace, created) == 200
    assert status_of(core.list_namespaced_secret, token_namespace) == 403
    assert status_of(core.list_namespaced_config_map, "default") == 403


def test_rbac_follows_supervision_for_agent_tokens(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        **SPEC,
        permissions=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}],
    )
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    core = kubernetes.client.CoreV1Api(cluster.with_token(token))

    def create() -> int:
        return status_of(core.create_namespaced_config_map, token_namespace, {"metadata": {"generateName": "w-"}})

    eventually(lambda: create() == 200, what="write allowed while Autonomous")
    agent.patch_spec({"supervision": {"mode": "Supervised"}})
    agent.agent.wait_phase("Supervised")
    eventually(lambda: create() == 403, what="write denied while Supervised")
    assert status_of(core.list_namespaced_config_map, token_namespace) == 200


def test_the_token_of_a_suspended_agent_authorises_nothing(
    cluster: ClusterHandle, token_service: TokenServiceHandle, token_namespace: str
) -> None:
    agent = provisioned(
        cluster,
        token_service,
        token_namespace,
        "triage",
        **SPEC,
        permissions=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    )
    token = token_service.token(agent.service_account_token(token_service.issuer), audience=KUBE_AUDIENCE)
    core = kubernetes.client.CoreV1Api(cluster.with_token(token))
    eventually(lambda: status_of(core.list_namespaced_config_map, token_namespace) == 200, what="read allowed")
    agent.patch_spec({"supervision": {"mode": "Suspended"}})
    agent.agent.wait_phase("Suspended")
    eventually(lambda: status_of(core.list_namespaced_config_map, token_namespace) == 403, what="issued token denied")
