"""Two operator replicas (processes, as in a Deployment): one leader elected through a coordination.k8s.io Lease
reconciles, the follower writes nothing yet serves admission; a leader stopped gracefully hands over at once
(released Lease), a crashed one after its Lease expires. Writers are told apart in the apiserver's audit log by the
instance in their User-Agent."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from agentid.api import v1alpha1
from agentid.domain.shards import DEFAULT_LEASE, ElectionTimings
from agentid.webhooks.configuration import webhook_configurations
from tests.support import audit_log
from tests.support.agents import agent_manifest, create_agent
from tests.support.cluster_setup import reserved_port
from tests.support.clusters import ClusterHandle
from tests.support.operator import FAST_LEASES, OperatorProcess, elected_operator
from tests.support.polling import eventually
from tests.support.rbac import bind_user
from tests.support.replicas import delete_agents, lease_holder, operator_writes

pytestmark = pytest.mark.cluster


def wait_for_leader(cluster: ClusterHandle, namespace: str, among: dict[str, OperatorProcess]) -> str:
    return eventually(
        lambda: lease_holder(cluster, namespace) if lease_holder(cluster, namespace) in among else "",
        timeout=60,
        what="one of the replicas holds the Lease",
    )


def start_pair(
    cluster: ClusterHandle,
    namespace: str,
    replicas: dict[str, OperatorProcess],
    log_dir: Path,
    *,
    timings: ElectionTimings = FAST_LEASES,
    args_for: Callable[[str], list[str]] = lambda _: [],
) -> tuple[str, str]:
    """Two replicas electing in ``namespace`` (``args_for``: extra arguments per instance); (leader, follower)."""
    for role in ("first", "second"):
        instance = _instance(role)
        replicas[instance] = elected_operator(
            cluster.kubeconfig,
            namespaces=[namespace],
            lease_namespace=namespace,
            instance=instance,
            log_dir=log_dir,
            timings=timings,
            extra_args=args_for(instance),
        )
    leader = wait_for_leader(cluster, namespace, replicas)
    (follower,) = set(replicas) - {leader}
    return leader, follower


@pytest.fixture
def audited(cluster: ClusterHandle) -> None:
    if cluster.local is None or cluster.local.audit_log is None:
        pytest.skip("needs the embedded control plane's audit log (who wrote what)")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:
    """instance -> process; every process is stopped (or killed) afterwards."""
    running: dict[str, OperatorProcess] = {}
    yield running
    for process in running.values():
        process.kill()


def _instance(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:6]}"


def _probe(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except (OSError, urllib.error.HTTPError):
        return 0


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_one_leader_reconciles_and_the_follower_writes_nothing_but_serves_admission(
    cluster: ClusterHandle,
    own_operator_namespace: str,
    tmp_path: Path,
    audited: None,
    replicas: dict[str, OperatorProcess],
) -> None:
    namespace = own_operator_namespace
    assert cluster.local is not None
    serving = cluster.local.ca.serving("webhook", "127.0.0.1")
    ports: dict[str, int] = {}
    health: dict[str, int] = {}
    since = dt.datetime.now(dt.UTC)

    def webhook(instance: str) -> list[str]:
        ports[instance], health[instance] = reserved_port(), reserved_port()
        return [
            f"--webhook-port={ports[instance]}",
            f"--webhook-cert={serving.cert}",
            f"--webhook-key={serving.key}",
            f"--liveness=http://127.0.0.1:{health[instance]}/healthz",
        ]

    leader, follower = start_pair(cluster, namespace, replicas, tmp_path, args_for=webhook)

    # Admission goes to the follower only: it must answer, with the same decisions as a leader's.
    label = f"agentid.dev/ha-{uuid.uuid4().hex[:6]}"
    kubernetes.client.CoreV1Api(cluster.admin()).patch_namespace(namespace, {"metadata": {"labels": {label: "on"}}})
    eventually(lambda: _listening(ports[follower]), timeout=60, what="the follower serves its webhook")
    # Ready means serving, not leading: the follower's probe endpoint answers 200 (the chart's readinessProbe).
    eventually(lambda: _probe(health[follower]) == 200, timeout=60, what="the follower is ready")
    configurations = webhook_configurations(
        base_url=f"https://127.0.0.1:{ports[follower]}",
        ca_bundle=cluster.local.ca.pem,
        namespace_selector={"matchLabels": {label: "on"}},
        name=f"ha-{label.rsplit('-', 1)[1]}.agentid.dev",
    )
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(configurations))
    try:
        user = _agent_writer(cluster, namespace)
        missing = f"missing-{uuid.uuid4().hex[:6]}"
        bad = agent_manifest("overreach", namespace, permissions=[], clusterRoleRefs=[missing])
        custom = kubernetes.client.CustomObjectsApi(cluster.as_user(user))
        args = (v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL)
        with pytest.raises(kubernetes.client.ApiException) as refused:
            custom.create_namespaced_custom_object(*args, bad)
        assert refused.value.status == 403
        assert f"may not grant ClusterRole {missing!r}" in json.loads(refused.value.body)["message"]
        good = agent_manifest("fine", namespace, permissions=[])  # grants nothing the writer lacks
        created = custom.create_namespaced_custom_object(*args, good)
        assert created["metadata"]["annotations"]  # attributed by the follower's mutating webhook

        agents = [create_agent(cluster, namespace, f"agent-{i}", clusterRoleRefs=["view"]) for i in range(3)]
        for agent in [*agents, create_agent(cluster, namespace, "after")]:
            agent.wait_ready(timeout=60)
        eventually(lambda: _ready(cluster, namespace, "fine"), timeout=60, what="the admitted agent is Ready")
        # AgentPolicy status is the leader's too (the session operator, which does not watch this namespace,
        # would report 0 agents for it).
        policy = _policy(cluster, namespace)
        eventually(lambda: _governed(cluster, policy) == 5, timeout=60, what="the leader reports the policy")
    finally:
        for configuration in configurations:
            cluster.kubectl("delete", configuration["kind"], configuration["metadata"]["name"], "--ignore-not-found")
        cluster.kubectl("delete", f"{v1alpha1.POLICY_PLURAL}.{v1alpha1.GROUP}", f"ha-{namespace}", "--ignore-not-found")

    writes = operator_writes(cluster, namespace, since)
    by_instance = {
        instance: [w for ua, ws in writes.items() if f"({instance})" in ua for w in ws] for instance in replicas
    }
    assert by_instance[follower] == []  # not one write: no objects, no status, no Events
    assert cluster.local.audit_log is not None
    follower_anywhere = [
        (entry["verb"], entry.get("objectRef"), entry.get("responseStatus", {}).get("code"))
        for entry in audit_log.entries(cluster.local.audit_log, since=since)
        if f"({follower})" in str(entry.get("userAgent", ""))
        and entry.get("verb") in audit_log.MUTATING
        and not str(entry.get("objectRef", {}).get("resource", "")).endswith("reviews")  # asking, not writing
        and entry.get("responseStatus", {}).get("code", 0) < 400  # a lost race for the Lease (409) changed nothing
    ]
    assert follower_anywhere == []  # nothing cluster-wide either: no Lease renewals, no AgentPolicy status
    assert {"create serviceaccounts/agent-0-agent", "create secrets/agent-0-agent-key"} <= set(by_instance[leader])
    assert set(writes) == {ua for ua in writes if f"({leader})" in ua}
    assert lease_holder(cluster, namespace) == leader
    delete_agents(cluster, namespace)


def test_a_leader_stopped_gracefully_releases_its_lease_and_the_follower_takes_over_at_once(
    cluster: ClusterHandle,
    own_operator_namespace: str,
    tmp_path: Path,
    audited: None,
    replicas: dict[str, OperatorProcess],
) -> None:
    namespace = own_operator_namespace
    # A long Lease: without the release on SIGTERM the follower would wait a minute, past the deadline below.
    patient = ElectionTimings(lease_duration=60, renew_deadline=40, retry_period=0.5)
    leader, follower = start_pair(cluster, namespace, replicas, tmp_path, timings=patient)
    create_agent(cluster, namespace, "before").wait_ready(timeout=60)

    stopped = time.monotonic()
    replicas[leader].stop()  # SIGTERM: Kopf's cleanup stops the passes, then empties the Lease's holder
    assert replicas[leader].process.returncode == 0
    eventually(lambda: lease_holder(cluster, namespace) == follower, timeout=30, what="the follower leads")
    takeover = time.monotonic() - stopped
    since = dt.datetime.now(dt.UTC)
    create_agent(cluster, namespace, "after").wait_ready(timeout=60)
    writes = operator_writes(cluster, namespace, since)
    assert writes, "the new leader reconciled the new agent"
    assert all(f"({follower})" in agent for agent in writes)
    assert f"{leader} acquired Lease" in replicas[leader].output()
    assert f"{leader} lost Lease {namespace}/{DEFAULT_LEASE} (shard 0): released" in replicas[leader].output()
    print(f"graceful hand-over: {takeover:.2f}s from SIGTERM to the follower holding the Lease")
    delete_agents(cluster, namespace)


def test_a_crashed_leader_is_replaced_once_its_lease_expires(
    cluster: ClusterHandle,
    own_operator_namespace: str,
    tmp_path: Path,
    audited: None,
    replicas: dict[str, OperatorProcess],
) -> None:
    namespace = own_operator_namespace
    leader, follower = start_pair(cluster, namespace, replicas, tmp_path)
    create_agent(cluster, namespace, "before").wait_ready(timeout=60)

    killed = time.monotonic()
    replicas[leader].kill()  # no release: the Lease still names the dead leader until it expires
    assert lease_holder(cluster, namespace) == leader
    eventually(lambda: lease_holder(cluster, namespace) == follower, timeout=60, what="the follower leads")
    takeover = time.monotonic() - killed
    since = dt.datetime.now(dt.UTC)
    create_agent(cluster, namespace, "after").wait_ready(timeout=60)
    writes = operator_writes(cluster, namespace, since)
    assert writes
    assert all(f"({follower})" in agent for agent in writes)
    print(f"crash take-over: {takeover:.2f}s from SIGKILL to the follower holding the Lease")
    delete_agents(cluster, namespace)


def _ready(cluster: ClusterHandle, namespace: str, name: str) -> bool:
    body = kubernetes.client.CustomObjectsApi(cluster.admin()).get_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, name
    )
    conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
    return conditions.get("Ready", {}).get("status") == "True"


def _policy(cluster: ClusterHandle, namespace: str) -> str:
    name = f"ha-{namespace}"
    body = {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.POLICY_KIND,
        "metadata": {"name": name},
        "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
    }
    kubernetes.client.CustomObjectsApi(cluster.admin()).create_cluster_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, body
    )
    return name


def _governed(cluster: ClusterHandle, policy: str) -> int:
    body = kubernetes.client.CustomObjectsApi(cluster.admin()).get_cluster_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.POLICY_PLURAL, policy
    )
    return int((body.get("status") or {}).get("agents") or 0)


def _agent_writer(cluster: ClusterHandle, namespace: str) -> str:
    """A namespace member who may write AgentIdentities and nothing else (admission checks what they may grant)."""
    user = f"writer-{uuid.uuid4().hex[:6]}@example.com"
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rules = [{"apiGroups": [v1alpha1.GROUP], "resources": [v1alpha1.PLURAL], "verbs": ["get", "create", "patch"]}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "writer"}, "rules": rules})
    bind_user(cluster, namespace, user, "Role", "writer", name="writer")
    return user
