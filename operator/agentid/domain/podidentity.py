"""Pod identity injection: what a Pod labelled ``agentid.dev/agent: <name>`` becomes, or why it is refused.

Called by the Pod admission webhook (``agentid.webhooks.pods``) with the Pod and the live agent. Pure: the Pod
arrives as a dict, the agent parsed; the result is the mutated Pod (a copy) or ``Refusal``. Idempotent: a Pod
that already carries the injection passes through unchanged (re-invocation, re-admission).

What a labelled Pod gets (README "Run a workload as an agent" documents it for users):
- ``serviceAccountName: <the agent's ServiceAccount>``; empty or ``default`` is replaced, any other name refused;
- the automatically mounted Kubernetes API token is removed (``automountServiceAccountToken: false``) unless the
  Pod asks for it explicitly with ``automountServiceAccountToken: true``: agents call the apiserver with agent
  tokens, which suspension cuts at once and the audit log attributes to the agent;
- a projected ServiceAccount token for the token service's audience (short-lived), the token service's CA (from a
  Pod annotation, through the downward API: nothing to copy into every namespace), and the environment of
  ``agentid.client.environment``;
- with ``agentid.dev/token-audiences: "a,b"``: the token sidecar (a native sidecar) holding one agent token per
  audience in a memory-backed volume; only the sidecar mounts the ServiceAccount token then;
- with ``agentid.dev/mount-agent-key: "true"``: the agent's key Secret, for RFC 7523 assertions.

A Suspended agent's Pod is admitted (with a warning) but powerless: the exchange is refused until the agent is
resumed, so a suspension can be lifted without restarting workloads. Revoked, expired or deleted agents' Pods are
refused, as are Pods of agents not provisioned yet (their ServiceAccount does not exist).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentid.api import v1alpha1
from agentid.api.v1alpha1 import AgentIdentity, Phase
from agentid.client import environment as env
from agentid.domain import claims, naming

LABEL = naming.AGENT_LABEL
AUDIENCES_ANNOTATION = f"{v1alpha1.GROUP}/token-audiences"
MOUNT_KEY_ANNOTATION = f"{v1alpha1.GROUP}/mount-agent-key"
CA_ANNOTATION = f"{v1alpha1.GROUP}/token-service-ca"

SA_TOKEN_VOLUME = "agentid-token"  # noqa: S105 - a volume name
CA_VOLUME = "agentid-ca"
TOKENS_VOLUME = "agentid-tokens"
KEY_VOLUME = "agentid-key"
SIDECAR = "agentid-token-agent"
KUBE_API_ACCESS_PREFIX = "kube-api-access-"  # the ServiceAccount admission plugin's automatic API token volume
DEFAULT_MODE = 0o644  # what the apiserver defaults projected and downward API volumes to (kept exact: idempotence)


class Refusal(Exception):
    """The Pod is refused; the message is what ``kubectl`` (or the ReplicaSet's events) shows."""


@dataclass(frozen=True)
class SidecarSettings:
    image: str
    health_port: int = env.DEFAULT_HEALTH_PORT
    resources: Mapping[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "64Mi"}}
    )


@dataclass(frozen=True)
class InjectionSettings:
    """Where agent Pods reach the token service, and how their credentials are shaped. Built by ``agentid run``."""

    issuer: str  # the token service's issuer (the audience of RFC 7523 assertions)
    url: str  # the token service as Pods reach it (often the in-cluster Service; may differ from the issuer)
    audience: str  # the audience ServiceAccount tokens are minted for (the token service's subject audience)
    ca_pem: str  # the token service's CA bundle
    token_expiration_seconds: int = 600  # the kubelet's minimum: the projected token is short-lived
    sidecar: SidecarSettings | None = None  # None: Pods asking for the sidecar are refused with a clear message

    @property
    def token_url(self) -> str:
        return f"{self.url.rstrip('/')}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url.rstrip('/')}/introspect"


@dataclass(frozen=True)
class Injection:
    pod: dict[str, Any]
    warnings: list[str]


def agent_name(pod: Mapping[str, Any]) -> str | None:
    """The agent a Pod asks to run as (its label), or None for Pods injection leaves alone."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(LABEL)
    return value if isinstance(value, str) else None


def inject(
    pod: Mapping[str, Any], agent: AgentIdentity | None, *, namespace: str, settings: InjectionSettings
) -> Injection:
    """The Pod as it must run for ``agent``, or ``Refusal``. ``agent`` is the live AgentIdentity the label names
    in the Pod's namespace (None: there is none)."""
    name = agent_name(pod) or ""
    if agent is None:
        raise Refusal(f"label {LABEL}={name}: there is no AgentIdentity {name!r} in namespace {namespace}")
    _check_agent(agent)
    service_account = naming.service_account(agent.name)
    spec = pod.get("spec") or {}
    for key in ("serviceAccountName", "serviceAccount"):
        named = spec.get(key)
        if named not in (None, "", "default", service_account):
            raise Refusal(
                f"spec.{key}: a Pod of agent {agent.name} runs as the agent's ServiceAccount {service_account}, "
                f"not {named!r} (remove {key} or the {LABEL} label)"
            )
    audiences = _requested_audiences(pod, agent, settings)
    if audiences and settings.sidecar is None:
        raise Refusal(f"annotation {AUDIENCES_ANNOTATION}: the token sidecar is not enabled on this cluster")
    mutated = copy.deepcopy(dict(pod))
    _Injector(mutated, agent, settings, audiences, _wants_key(pod)).apply(service_account)
    warnings = []
    if claims.effective_supervision(agent) is v1alpha1.SupervisionMode.SUSPENDED:
        warnings.append(
            f"agent {agent.name} is Suspended: the Pod is admitted but gets no agent token until it is resumed"
        )
    return Injection(pod=mutated, warnings=warnings)


def _check_agent(agent: AgentIdentity) -> None:
    what = f"agent {agent.name}"
    if agent.spec.revoked or agent.status.phase is Phase.REVOKED:
        raise Refusal(f"{what} is revoked: no Pod may run as it")
    if agent.status.phase is Phase.EXPIRED:
        raise Refusal(f"{what} has expired: no Pod may run as it")
    if agent.metadata.deletion_timestamp is not None:
        raise Refusal(f"{what} is being deleted: no Pod may run as it")
    if not agent.status.service_account_uid:
        raise Refusal(f"{what} is not provisioned yet (no ServiceAccount): retry once it is Ready")


def _requested_audiences(pod: Mapping[str, Any], agent: AgentIdentity, settings: InjectionSettings) -> list[str]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    audiences = env.parse_audiences(str(annotations.get(AUDIENCES_ANNOTATION) or ""))
    allowed = claims.permitted_audiences(agent, settings.issuer)
    refused = [audience for audience in audiences if audience not in allowed]
    if refused:
        raise Refusal(
            f"annotation {AUDIENCES_ANNOTATION}: {refused[0]!r} is not an audience of agent {agent.name} "
            "(declare it in spec.credentials.audiences)"
        )
    clashes = env.file_name_clashes(audiences)
    if clashes:
        first, second = clashes[0]
        raise Refusal(f"annotation {AUDIENCES_ANNOTATION}: {first!r} and {second!r} would share one token file")
    return audiences


def _wants_key(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(MOUNT_KEY_ANNOTATION, "")).lower() == "true"


class _Injector:
    """Adds what is missing, by name: running it twice adds nothing the second time."""

    def __init__(
        self,
        pod: dict[str, Any],
        agent: AgentIdentity,
        settings: InjectionSettings,
        audiences: list[str],
        mount_key: bool,
    ) -> None:
        self.pod = pod
        self.spec: dict[str, Any] = pod.setdefault("spec", {})
        self.agent = agent
        self.settings = settings
        self.audiences = audiences
        self.mount_key = mount_key

    def apply(self, service_account: str) -> None:
        self.spec["serviceAccountName"] = service_account
        if "serviceAccount" in self.spec:
            self.spec["serviceAccount"] = service_account
        if self.spec.get("automountServiceAccountToken") is not True:
            self.spec["automountServiceAccountToken"] = False
            self._remove_kube_api_access()
        annotations = self.pod.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[CA_ANNOTATION] = self.settings.ca_pem
        for volume in self._volumes():
            _add_named(self.spec.setdefault("volumes", []), volume)
        sidecar = bool(self.audiences)
        for container in [*self.spec.get("initContainers", []), *self.spec.get("containers", [])]:
            if container.get("name") == SIDECAR:
                continue
            _add_env(container, self._environment(sidecar=sidecar))
            for mount in self._app_mounts(sidecar=sidecar):
                _add_mount(container, mount)
        if sidecar and not any(c.get("name") == SIDECAR for c in self.spec.get("initContainers", [])):
            self.spec.setdefault("initContainers", []).insert(0, self._sidecar())

    # -- what is added ------------------------------------------------------------------------------------------

    def _volumes(self) -> list[dict[str, Any]]:
        volumes: list[dict[str, Any]] = [
            {
                "name": SA_TOKEN_VOLUME,
                "projected": {
                    "defaultMode": DEFAULT_MODE,
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": self.settings.audience,
                                "expirationSeconds": self.settings.token_expiration_seconds,
                                "path": "token",
                            }
                        }
                    ],
                },
            },
            {
                "name": CA_VOLUME,
                "downwardAPI": {
                    "defaultMode": DEFAULT_MODE,
                    "items": [
                        {
                            "path": "ca.crt",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{CA_ANNOTATION}']"},
                        }
                    ],
                },
            },
        ]
        if self.audiences:
            volumes.append({"name": TOKENS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
        if self.mount_key:
            secret = naming.key_secret(self.agent.name)
            volumes.append({"name": KEY_VOLUME, "secret": {"secretName": secret, "defaultMode": DEFAULT_MODE}})
        return volumes

    def _environment(self, *, sidecar: bool) -> list[dict[str, str]]:
        values = {
            env.AGENT: f"{self.agent.namespace}/{self.agent.name}",
            env.AGENT_ID: self.agent.status.agent_id or "",
            env.ISSUER: self.settings.issuer,
            env.TOKEN_URL: self.settings.token_url,
            env.INTROSPECTION_URL: self.settings.introspection_url,
            env.CA_FILE: env.CA_PATH,
        }
        if sidecar:
            values[env.TOKENS_DIR] = env.TOKENS_PATH
            values[env.AUDIENCES] = ",".join(self.audiences)
        else:
            values[env.SA_TOKEN_FILE] = env.SA_TOKEN_PATH
        if self.mount_key:
            values[env.KEY_DIR] = env.KEY_PATH
        return [{"name": name, "value": value} for name, value in values.items() if value]

    def _app_mounts(self, *, sidecar: bool) -> list[dict[str, Any]]:
        mounts = [{"name": CA_VOLUME, "mountPath": env.CA_DIR, "readOnly": True}]
        if sidecar:
            mounts.append({"name": TOKENS_VOLUME, "mountPath": env.TOKENS_PATH, "readOnly": True})
        else:
            mounts.append({"name": SA_TOKEN_VOLUME, "mountPath": env.SA_TOKEN_DIR, "readOnly": True})
        if self.mount_key:
            mounts.append({"name": KEY_VOLUME, "mountPath": env.KEY_PATH, "readOnly": True})
        return mounts

    def _sidecar(self) -> dict[str, Any]:
        sidecar = self.settings.sidecar
        assert sidecar is not None  # noqa: S101 - inject() refuses audiences without sidecar settings
        environment = [
            {"name": env.AGENT, "value": f"{self.agent.namespace}/{self.agent.name}"},
            {"name": env.TOKEN_URL, "value": self.settings.token_url},
            {"name": env.INTROSPECTION_URL, "value": self.settings.introspection_url},
            {"name": env.CA_FILE, "value": env.CA_PATH},
            {"name": env.SA_TOKEN_FILE, "value": env.SA_TOKEN_PATH},
            {"name": env.TOKENS_DIR, "value": env.TOKENS_PATH},
            {"name": env.AUDIENCES, "value": ",".join(self.audiences)},
            {"name": env.HEALTH_PORT, "value": str(sidecar.health_port)},
        ]
        probe = {"httpGet": {"path": "/readyz", "port": sidecar.health_port}, "periodSeconds": 2}
        return {
            "name": SIDECAR,
            "image": sidecar.image,
            "args": ["token-agent"],
            "restartPolicy": "Always",
            "env": environment,
            "ports": [{"name": "agentid-health", "containerPort": sidecar.health_port, "protocol": "TCP"}],
            "readinessProbe": probe,
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": sidecar.health_port}, "periodSeconds": 10},
            "resources": copy.deepcopy(dict(sidecar.resources)),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": SA_TOKEN_VOLUME, "mountPath": env.SA_TOKEN_DIR, "readOnly": True},
                {"name": CA_VOLUME, "mountPath": env.CA_DIR, "readOnly": True},
                {"name": TOKENS_VOLUME, "mountPath": env.TOKENS_PATH},
            ],
        }

    def _remove_kube_api_access(self) -> None:
        """The ServiceAccount admission plugin ran before this webhook and mounted an API token (for the
        ServiceAccount the Pod had then): take it out again, volume and mounts."""
        removed = {
            volume.get("name")
            for volume in self.spec.get("volumes", [])
            if str(volume.get("name", "")).startswith(KUBE_API_ACCESS_PREFIX) and "projected" in volume
        }
        if not removed:
            return
        self.spec["volumes"] = [v for v in self.spec["volumes"] if v.get("name") not in removed]
        for kind in ("initContainers", "containers", "ephemeralContainers"):
            for container in self.spec.get(kind, []):
                mounts = container.get("volumeMounts")
                if mounts:
                    container["volumeMounts"] = [m for m in mounts if m.get("name") not in removed]


def _add_named(items: list[dict[str, Any]], item: dict[str, Any]) -> None:
    if not any(existing.get("name") == item["name"] for existing in items):
        items.append(item)


def _add_env(container: dict[str, Any], variables: list[dict[str, str]]) -> None:
    """A variable the container already sets keeps its value (the Pod author's choice wins)."""
    existing = {variable.get("name") for variable in container.get("env", [])}
    missing = [variable for variable in variables if variable["name"] not in existing]
    if missing:
        container.setdefault("env", []).extend(missing)


def _add_mount(container: dict[str, Any], mount: dict[str, Any]) -> None:
    mounts = container.get("volumeMounts", [])
    if any(m.get("name") == mount["name"] or m.get("mountPath") == mount["mountPath"] for m in mounts):
        return
    container.setdefault("volumeMounts", []).append(mount)
