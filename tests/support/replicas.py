"""Several operator replicas under test: who holds a Lease, who wrote an agent's objects (the audit log, by the
instance in the User-Agent), and a clean end (agents deleted while a replica still runs its cleanup)."""

from __future__ import annotations

import datetime as dt

import kubernetes

from agentid.api import v1alpha1
from agentid.domain.shards import DEFAULT_LEASE
from tests.support import audit_log
from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually


def lease_holder(cluster: ClusterHandle, namespace: str, name: str = DEFAULT_LEASE) -> str:
    try:
        lease = kubernetes.client.CoordinationV1Api(cluster.admin()).read_namespaced_lease(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def operator_writes(cluster: ClusterHandle, namespace: str, since: dt.datetime) -> dict[str, set[str]]:
    """user agent -> writes of the agent objects in ``namespace`` by agentid operators."""
    assert cluster.local is not None
    assert cluster.local.audit_log is not None
    found = audit_log.writers(cluster.local.audit_log, since=since, namespaces={namespace}).get(namespace, {})
    return {agent: writes for agent, writes in found.items() if agent.startswith("agentid-operator")}


def delete_agents(cluster: ClusterHandle, namespace: str) -> None:
    """While a replica still runs: its cleanup removes the finalizer, so the namespace can go afterwards."""
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    args = (v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL)
    custom.delete_collection_namespaced_custom_object(*args)
    eventually(lambda: not custom.list_namespaced_custom_object(*args)["items"], timeout=60, what="agents deleted")


def writer_instances(cluster: ClusterHandle, namespace: str, since: dt.datetime) -> set[str]:
    """The instances (from ``agentid-operator/<version> (<instance>)``) that wrote agent objects in ``namespace``."""
    return {agent.rsplit("(", 1)[1].rstrip(")") for agent in operator_writes(cluster, namespace, since)}
