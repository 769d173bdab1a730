"""The local control plane is a real Kubernetes: version, CRDs, RBAC that denies, GC, namespace deletion."""

from __future__ import annotations

import json
import threading
import uuid

import kubernetes
import pytest

from agentid.devcluster import assets
from agentid.devcluster.cluster import LocalCluster
from agentid.devcluster.processes import pid_alive, wait_dead
from tests.support.clusters import ClusterHandle, status_of
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.agentid.dev"},
    "spec": {
        "group": "test.agentid.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
                    }
                },
            }
        ],
    },
}


def test_version_reports_the_pinned_kubernetes_release(local_cluster: LocalCluster, cluster: ClusterHandle) -> None:
    info = kubernetes.client.VersionApi(cluster.admin()).get_code()
    assert info.git_version == assets.pinned_versions().kubernetes
    assert info.git_version != "v0.0.0"


def test_a_crd_becomes_established_and_its_objects_can_be_created_listed_and_watched(
    cluster: ClusterHandle, namespace: str
) -> None:
    client = cluster.admin()
    extensions = kubernetes.client.ApiextensionsV1Api(client)
    try:
        extensions.create_custom_resource_definition(WIDGET_CRD)
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition("widgets.test.agentid.dev")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established, what="Widget CRD Established")
    custom = kubernetes.client.CustomObjectsApi(client)
    body = {"apiVersion": "test.agentid.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    eventually(
        lambda: (
            status_of(custom.create_namespaced_custom_object, "test.agentid.dev", "v1", namespace, "widgets", body)
            == 200
        ),
        what="create Widget (CRD served)",
    )
    listed = custom.list_namespaced_custom_object("test.agentid.dev", "v1", namespace, "widgets")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["w1"]

    seen: list[str] = []
    watch = kubernetes.watch.Watch()

    def watch_for_w2() -> None:
        for event in watch.stream(
            custom.list_namespaced_custom_object,
            "test.agentid.dev",
            "v1",
            namespace,
            "widgets",
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=20,
        ):
            seen.append(f"{event['type']} {event['object']['metadata']['name']}")
            if event["object"]["metadata"]["name"] == "w2":
                watch.stop()

    watcher = threading.Thread(target=watch_for_w2)
    watcher.start()
    custom.create_namespaced_custom_object(
        "test.agentid.dev", "v1", namespace, "widgets", {**body, "metadata": {"name": "w2"}}
    )
    watcher.join(timeout=30)
    assert "ADDED w2" in seen


def test_rbac_denies_a_service_account_until_a_rolebinding_grants_and_again_after_it_is_deleted(
    cluster: ClusterHandle, namespace: str
) -> None:
    client = cluster.admin()
    core = kubernetes.client.CoreV1Api(client)
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "probe"}})
    token = core.create_namespaced_service_account_token(
        "probe", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    as_probe = kubernetes.client.CoreV1Api(cluster.with_token(token))

    assert status_of(as_probe.list_namespaced_config_map, namespace) == 403

    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "probe-reads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": namespace}],
        },
    )
    eventually(lambda: status_of(as_probe.list_namespaced_config_map, namespace) == 200, what="granted")

    rbac.delete_namespaced_role_binding("probe-reads", namespace)
    eventually(lambda: status_of(as_probe.list_namespaced_config_map, namespace) == 403, what="denied again")


def test_an_object_whose_owner_is_deleted_is_garbage_collected(cluster: ClusterHandle, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace)
    eventually(
        lambda: status_of(core.read_namespaced_config_map, "dependent", namespace) == 404,
        what="dependent garbage-collected",
    )


def test_namespace_deletion_completes(cluster: ClusterHandle) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    name = f"t-ns-delete-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})
    core.delete_namespace(name)
    eventually(lambda: status_of(core.read_namespace, name) == 404, timeout=60, what="namespace gone")


def test_service_accounts_get_their_root_ca_configmap(cluster: ClusterHandle, namespace: str) -> None:
    core = kubernetes.client.CoreV1Api(cluster.admin())
    configmap = eventually(
        lambda: (
            core.read_namespaced_config_map("kube-root-ca.crt", namespace)
            if status_of(core.read_namespaced_config_map, "kube-root-ca.crt", namespace) == 200
            else None
        ),
        what="kube-root-ca.crt published",
    )
    assert "BEGIN CERTIFICATE" in configmap.data["ca.crt"]


def test_two_clusters_run_side_by_side_and_teardown_leaves_no_process(local_cluster: LocalCluster) -> None:
    first, second = LocalCluster(audit=False), LocalCluster(audit=False)
    started: list[int] = []
    try:
        first.start()
        started += first.pids
        second.start()
        started += second.pids
        assert first.port != second.port
        assert len(started) == 6
        for cluster in (first, second):
            with_cluster = ClusterHandle(kubeconfig=cluster.kubeconfig)
            info = json.loads(with_cluster.kubectl("version", "-o", "json").stdout)
            assert info["serverVersion"]["gitVersion"] == assets.pinned_versions().kubernetes
    finally:
        first.stop()
        second.stop()
    assert wait_dead(started, timeout=10) == []
    assert not any(pid_alive(pid) for pid in started)
    assert not first.workdir.exists()
    assert not second.workdir.exists()
