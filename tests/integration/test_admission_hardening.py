"""Admission that cannot be bypassed or exhausted (security.md, "lessons from the adversarial review"):
ClusterRoles that do not exist yet, permissions added while Suspended, manifests that would expand into
millions of checks, the kill switch with the webhook down, oversized or stalled requests, huge durations."""

from __future__ import annotations

import json
import socket
import ssl
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from agentid.api import v1alpha1
from agentid.domain import admitted
from agentid.webhooks.configuration import webhook_configurations
from tests.conftest import ADMISSION_LABEL
from tests.support.agents import Agent, agent_manifest, create_agent
from tests.support.cluster_setup import reserved_port
from tests.support.clusters import ClusterHandle
from tests.support.operator import OperatorThread
from tests.support.polling import eventually
from tests.support.rbac import bind_user

pytestmark = [pytest.mark.cluster, pytest.mark.existing_cluster]
READER = "rita@example.com"  # may read configmaps and write agents in the test namespace, nothing else


@pytest.fixture
def local_webhook(cluster: ClusterHandle) -> None:
    if cluster.local is None:
        pytest.skip("the test session registers its in-process admission webhook on the embedded control plane only")


@pytest.fixture
def reader(cluster: ClusterHandle, agent_namespace: str, admission_webhook: None) -> str:
    """A namespace member who may read configmaps and write AgentIdentities, nothing else."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [v1alpha1.GROUP], "resources": [v1alpha1.PLURAL], "verbs": ["get", "create", "update", "patch"]},
    ]
    rbac.create_namespaced_role(agent_namespace, {"metadata": {"name": "reader"}, "rules": rules})
    bind_user(cluster, agent_namespace, READER, "Role", "reader", name="reader")
    return READER


def _custom(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


def _create(client: kubernetes.client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    namespace = body["metadata"]["namespace"]
    return _custom(client).create_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, body
    )


def _patch(client: kubernetes.client.ApiClient, agent: Agent, patch: dict[str, Any], **kwargs: Any) -> Any:
    return _custom(client).patch_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, agent.namespace, v1alpha1.PLURAL, agent.name, patch, **kwargs
    )


def _denial(call: Any) -> str:
    with pytest.raises(kubernetes.client.ApiException) as refused:
        call()
    assert refused.value.status in (400, 403, 422, 500), refused.value.body
    return str(json.loads(refused.value.body)["message"])


def _cluster_role(cluster: ClusterHandle, name: str, verbs: list[str]) -> None:
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}
    kubernetes.client.RbacAuthorizationV1Api(cluster.admin()).create_cluster_role(
        {"metadata": {"name": name}, "rules": [rule]}
    )


@pytest.fixture
def cluster_roles(cluster: ClusterHandle) -> Iterator[list[str]]:
    """Names of ClusterRoles a test creates, deleted afterwards."""
    names: list[str] = []
    yield names
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    for name in names:
        try:
            rbac.delete_cluster_role(name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise


# -- 2: a ClusterRole referenced before it exists -----------------------------------------------------------------


def test_a_clusterrole_that_does_not_exist_yet_is_refused_to_whoever_may_not_bind_it(
    cluster: ClusterHandle, agent_namespace: str, reader: str, cluster_roles: list[str]
) -> None:
    later = f"later-{uuid.uuid4().hex[:6]}"
    cluster_roles.append(later)
    body = agent_manifest("early", agent_namespace, permissions=[], clusterRoleRefs=[later])
    message = _denial(lambda: _create(cluster.as_user(reader), body))
    assert f"{reader} may not grant ClusterRole {later!r}, which does not exist" in message

    # Created later by an admin, it still grants the reader nothing: no such agent was ever admitted.
    _cluster_role(cluster, later, ["get", "list", "watch", "update", "delete"])
    with pytest.raises(kubernetes.client.ApiException) as missing:
        Agent(cluster, agent_namespace, "early").body()
    assert missing.value.status == 404


def test_an_admin_may_reference_a_clusterrole_before_it_exists_and_the_agent_gets_it_once_created(
    cluster: ClusterHandle, agent_namespace: str, admission_webhook: None, cluster_roles: list[str]
) -> None:
    later = f"later-{uuid.uuid4().hex[:6]}"
    cluster_roles.append(later)
    agent = create_agent(cluster, agent_namespace, "prepared", permissions=[], clusterRoleRefs=[later])
    eventually(lambda: agent.condition("Ready").get("reason") == "ClusterRoleNotFound", what="waits for the role")
    assert admitted.parse(agent.body()["metadata"]["annotations"]) == {later: admitted.ABSENT}

    _cluster_role(cluster, later, ["get", "list"])
    assert eventually(agent.wait_ready)["grantedClusterRoles"] == [later]


def test_a_recreated_clusterrole_is_withheld_until_admission_checks_it_again(
    cluster: ClusterHandle, agent_namespace: str, admission_webhook: None, cluster_roles: list[str]
) -> None:
    role = f"recreated-{uuid.uuid4().hex[:6]}"
    cluster_roles.append(role)
    _cluster_role(cluster, role, ["get"])
    agent = create_agent(cluster, agent_namespace, "bound", permissions=[], clusterRoleRefs=[role])
    assert agent.wait_ready()["grantedClusterRoles"] == [role]

    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rbac.delete_cluster_role(role)
    _cluster_role(cluster, role, ["get", "list", "watch", "create", "update", "delete"])
    eventually(lambda: agent.condition("Ready").get("reason") == "ClusterRoleNotAdmitted", what="withheld")
    assert "re-created after admission checked this agent" in agent.condition("AccessReady")["message"]
    assert agent.status().get("grantedClusterRoles", []) == []

    agent.patch_spec({"displayName": "Checked again"})  # any change outside supervision/revocation re-checks
    assert eventually(agent.wait_ready)["grantedClusterRoles"] == [role]


def test_the_clusterrole_proof_cannot_be_forged_by_the_writer(
    cluster: ClusterHandle, agent_namespace: str, reader: str, cluster_roles: list[str]
) -> None:
    role = f"readable-{uuid.uuid4().hex[:6]}"
    cluster_roles.append(role)
    _cluster_role(cluster, role, ["get"])
    body = agent_manifest("honest", agent_namespace, permissions=[], clusterRoleRefs=[role])
    body["metadata"]["annotations"] = {admitted.ANNOTATION: json.dumps({"cluster-admin": admitted.ABSENT})}
    created = _create(cluster.as_user(reader), body)
    proof = admitted.parse(created["metadata"]["annotations"])
    assert proof is not None
    assert set(proof) == {role}
    assert proof[role].startswith("uid:")

    agent = Agent(cluster, agent_namespace, "honest")
    forged = {"metadata": {"annotations": {admitted.ANNOTATION: json.dumps({role: admitted.ABSENT})}}}
    patched = _patch(cluster.as_user(reader), agent, forged)
    assert admitted.parse(patched["metadata"]["annotations"]) == proof, "admission restores its own record"


# -- 3: admission work is bounded by the input size ---------------------------------------------------------------


def _widest_rule(index: int) -> dict[str, Any]:
    """One rule at every list's schema limit: 16 groups x 32 resources x 16 verbs x 64 names."""
    return {
        "apiGroups": [f"g{index}-{g}.example.com" for g in range(16)],
        "resources": [f"r{r}" for r in range(32)],
        "verbs": [f"verb{chr(ord('a') + v)}" for v in range(16)],
        "resourceNames": [f"n{n}" for n in range(64)],
    }


def test_a_manifest_that_would_expand_into_millions_of_checks_is_refused_within_a_memory_budget(
    cluster: ClusterHandle, agent_namespace: str, reader: str, local_webhook: None
) -> None:
    rules = [_widest_rule(index) for index in range(v1alpha1.RULES_MAX)]
    body = agent_manifest("exhausting", agent_namespace, permissions=rules)
    tracemalloc.start()
    try:
        message = _denial(lambda: _create(cluster.as_user(reader), body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "spec.permissions: the rules expand to 33554432 distinct" in message
    assert "at most 1024 can be verified" in message
    # The whole process (operator, webhook and this test's client) allocated less than this at its peak; the
    # expansion the review found cost 120 MiB for one such rule and ran out of memory for 64.
    assert peak < 64 * 1024 * 1024, f"admission peaked at {peak / 2**20:.0f} MiB"


# -- 4: the ceiling applies to what the spec declares, whatever the mode --------------------------------------------


def test_permissions_added_while_suspended_are_checked_against_the_requester(
    cluster: ClusterHandle, agent_namespace: str, reader: str
) -> None:
    reads = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    body = agent_manifest("dormant", agent_namespace, permissions=reads, supervision={"mode": "Suspended"})
    _create(cluster.as_user(reader), body)
    agent = Agent(cluster, agent_namespace, "dormant")

    writes = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "update", "delete"]}]
    message = _denial(lambda: _patch(cluster.as_user(reader), agent, {"spec": {"permissions": writes}}))
    assert f"{reader} may not grant 'update configmaps'" in message
    assert agent.body()["spec"]["permissions"] == reads

    # What the reader holds stays theirs to give while Suspended.
    more_reads = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    _patch(cluster.as_user(reader), agent, {"spec": {"permissions": more_reads}})


# -- 7: the kill switch with the webhook down ---------------------------------------------------------------------


@pytest.fixture
def webhook_down_namespace(
    cluster: ClusterHandle, operator: OperatorThread, local_webhook: None, request: pytest.FixtureRequest
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A namespace the session operator watches, whose admission webhook points at a port nobody serves.
    The configurations are returned unregistered: the test registers them once its agent exists."""
    suffix = uuid.uuid4().hex[:6]
    name = f"a-down-{suffix}"
    core = kubernetes.client.CoreV1Api(cluster.admin())
    labels = {"agentid.dev/test": "true", ADMISSION_LABEL: f"down-{suffix}"}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    assert cluster.local is not None
    configurations = webhook_configurations(
        base_url=f"https://127.0.0.1:{reserved_port()}",
        ca_bundle=cluster.local.ca.pem,
        namespace_selector={"matchLabels": {ADMISSION_LABEL: f"down-{suffix}"}},
        name=f"agentid-down-{suffix}",
        include_policies=False,
    )
    yield name, configurations
    for configuration in configurations:
        cluster.kubectl("delete", configuration["kind"], configuration["metadata"]["name"], "--ignore-not-found")
    core.delete_namespace(name)


def test_the_kill_switch_and_cleanup_work_while_the_webhook_is_down(
    cluster: ClusterHandle, webhook_down_namespace: tuple[str, list[dict[str, Any]]]
) -> None:
    namespace, configurations = webhook_down_namespace
    agent = create_agent(cluster, namespace, "runaway")
    agent.wait_ready()
    token = agent.service_account_token()
    eventually(lambda: agent.can(token, "create") == 200, what="write access before")
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(configurations))

    admin = cluster.admin()
    widen = {"spec": {"permissions": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]}]}}

    def refused_while_down() -> bool:
        try:
            _patch(admin, agent, widen, dry_run="All")
        except kubernetes.client.ApiException as error:
            return "failed calling webhook" in str(error.body)
        return False

    eventually(refused_while_down, what="writes that may add access fail closed")

    _patch(admin, agent, {"spec": {"supervision": {"mode": "Suspended", "reason": "incident 42"}}})
    eventually(lambda: agent.can(token, "create") == 403, what="suspended while the webhook is down")
    assert "failed calling webhook" in _denial(
        lambda: _patch(admin, agent, {"spec": {"supervision": {"mode": "Autonomous"}}})
    ), "resuming adds access: it waits for the webhook"
    forged = {"metadata": {"annotations": {"agentid.dev/last-changed-by": "{}"}}, "spec": {"revoked": True}}
    assert "failed calling webhook" in _denial(lambda: _patch(admin, agent, forged)), "annotations stay guarded"

    _patch(admin, agent, {"spec": {"revoked": True, "revocationReason": "incident 42"}})
    agent.wait_phase("Revoked")
    assert "revoked is terminal" in _denial(lambda: _patch(admin, agent, {"spec": {"revoked": False}}))

    _custom(admin).delete_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, "runaway"
    )

    def gone() -> bool:
        try:
            agent.body()
        except kubernetes.client.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, what="the operator's finalizer removal is not blocked by the webhook")


# -- 8: oversized and stalled requests -----------------------------------------------------------------------------


def _raw_request(port: int, ca_pem: bytes, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (+ part of a body) over TLS, then wait (bounded) for whatever the server answers."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(head + body)
        return tls.recv(4096)


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _ports(cluster: ClusterHandle, operator: OperatorThread, token_service: Any) -> list[tuple[str, int]]:
    assert operator.config.webhook is not None
    return [("/token", token_service.endpoint.port), ("/mutate", operator.config.webhook.port)]


def test_an_announced_oversized_body_is_refused_before_it_is_read(
    cluster: ClusterHandle, operator: OperatorThread, token_service: Any, local_webhook: None
) -> None:
    assert cluster.local is not None
    for path, port in _ports(cluster, operator, token_service):
        answer = _raw_request(port, cluster.local.ca.pem, _head(path, 99_000_000))
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:80])


def test_a_stalled_body_is_given_up_on(
    cluster: ClusterHandle, operator: OperatorThread, token_service: Any, local_webhook: None
) -> None:
    assert cluster.local is not None
    for path, port in _ports(cluster, operator, token_service):
        answer = _raw_request(port, cluster.local.ca.pem, _head(path, 1000), b"grant_type=")
        assert answer.startswith(b"HTTP/1.1 408"), (path, answer[:80])


# -- 9: durations with a clear maximum -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"rotationPeriod": "99999999999999h"}, "must be a Go duration such as 720h"),
        ({"rotationPeriod": "9000h"}, "must be at most 8784h"),
        ({"tokenTTL": "25h"}, "must be at most 24h"),
    ],
    ids=["overflowing", "over-the-maximum", "token-ttl"],
)
def test_durations_are_bounded_with_a_clear_message(
    cluster: ClusterHandle, namespace: str, crds: None, credentials: dict[str, str], message: str
) -> None:
    body = agent_manifest("durable", namespace, credentials=credentials)
    denied = _denial(lambda: _create(cluster.admin(), body))
    assert message in denied
    assert "evaluation error" not in denied
