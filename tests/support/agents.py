"""One factory for AgentIdentity test objects, and a handle to act on an agent as a test would."""

from __future__ import annotations

import base64
import copy
import uuid
from dataclasses import dataclass
from typing import Any

import kubernetes

from agentid.api import v1alpha1
from tests.support.clusters import ClusterHandle, status_of
from tests.support.polling import eventually

CONFIGMAP_RULE = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update"]}


def agent_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A valid AgentIdentity; keyword arguments replace top-level spec fields (camelCase, as in YAML)."""
    base: dict[str, Any] = {
        "purpose": "Classifies incoming invoices",
        "owner": {"kind": "User", "name": "alice@example.com"},
        "supervision": {"mode": "Autonomous"},
        "permissions": [copy.deepcopy(CONFIGMAP_RULE)],
    }
    base.update(spec)
    return {
        "apiVersion": v1alpha1.API_VERSION,
        "kind": v1alpha1.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


@dataclass
class Agent:
    cluster: ClusterHandle
    namespace: str
    name: str

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.cluster.admin())

    def body(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, self.namespace, v1alpha1.PLURAL, self.name
        )

    def status(self) -> dict[str, Any]:
        return self.body().get("status") or {}

    def condition(self, type_: str) -> dict[str, Any]:
        return next((c for c in self.status().get("conditions", []) if c["type"] == type_), {})

    def patch_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            v1alpha1.GROUP, v1alpha1.VERSION, self.namespace, v1alpha1.PLURAL, self.name, {"spec": spec}
        )

    def wait_phase(self, phase: str, *, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.body()
            status = body.get("status") or {}
            current = status.get("observedGeneration") == body["metadata"]["generation"]
            return status if current and status.get("phase") == phase else None

        return eventually(reached, timeout=timeout, what=f"{self.namespace}/{self.name} phase {phase}")

    def wait_ready(self, *, timeout: float = 30) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.body()
            status = body.get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            ok = conditions.get("Ready", {}).get("status") == "True"
            current = conditions.get("Ready", {}).get("observedGeneration") == body["metadata"]["generation"]
            return status if ok and current else None

        return eventually(ready, timeout=timeout, what=f"{self.namespace}/{self.name} Ready")

    def service_account_token(self, seconds: int = 600) -> str:
        core = kubernetes.client.CoreV1Api(self.cluster.admin())
        request = {"spec": {"expirationSeconds": seconds}}
        return str(
            core.create_namespaced_service_account_token(f"{self.name}-agent", self.namespace, request).status.token
        )

    def as_agent(self, token: str) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.cluster.with_token(token))

    def can(self, token: str, verb: str) -> int:
        """HTTP status of a configmap call made with ``token`` (200 allowed, 403 denied, 401 unauthenticated)."""
        api = self.as_agent(token)
        if verb == "list":
            return status_of(api.list_namespaced_config_map, self.namespace)
        if verb == "create":
            body = {"metadata": {"name": f"probe-{uuid.uuid4().hex[:8]}"}}
            return status_of(api.create_namespaced_config_map, self.namespace, body)
        raise ValueError(verb)

    def private_key_pems(self) -> list[bytes]:
        core = kubernetes.client.CoreV1Api(self.cluster.admin())
        secret = core.read_namespaced_secret(f"{self.name}-agent-key", self.namespace)
        return [base64.b64decode(value) for key, value in (secret.data or {}).items() if key.endswith(".pem")]


def create_agent(cluster: ClusterHandle, namespace: str, name: str, **spec: Any) -> Agent:
    custom = kubernetes.client.CustomObjectsApi(cluster.admin())
    custom.create_namespaced_custom_object(
        v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, agent_manifest(name, namespace, **spec)
    )
    return Agent(cluster, namespace, name)
