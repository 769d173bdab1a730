"""Pod identity injection as a pure function: what a labelled Pod becomes, idempotence, and every refusal."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentid.api.v1alpha1 import AgentIdentity
from agentid.client import environment as env
from agentid.domain import naming, podidentity
from agentid.domain.podidentity import InjectionSettings, Refusal, SidecarSettings
from tests.support.agents import agent_manifest

ISSUER = "https://tokens.example"
MCP = "https://mcp.example"
SETTINGS = InjectionSettings(
    issuer=ISSUER,
    url="https://agentid-tokens.agentid-system.svc",
    audience=ISSUER,
    ca_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    sidecar=SidecarSettings(image="registry.example/agentid:1"),
)


def agent(status: dict[str, Any] | None = None, **spec: Any) -> AgentIdentity:
    body = agent_manifest("triage", "finance", **{"credentials": {"audiences": [MCP]}, **spec})
    body["metadata"]["uid"] = "uid-triage"
    body["status"] = {
        "phase": "Active",
        "agentID": "spiffe://cluster.local/ns/finance/agent/triage",
        "serviceAccountName": naming.service_account("triage"),
        "serviceAccountUID": "sa-uid",
        **(status or {}),
    }
    return AgentIdentity.from_body(body)


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A Pod as the apiserver hands it to the webhook: the ServiceAccount plugin already ran."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "finance",
            "labels": {"agentid.dev/agent": "triage"},
            "annotations": annotations or {},
        },
        "spec": {
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "volumeMounts": [
                        {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
                    ],
                }
            ],
            "volumes": [{"name": "kube-api-access-x1", "projected": {"sources": [{"serviceAccountToken": {}}]}}],
            **spec,
        },
    }


def inject(body: dict[str, Any], the_agent: AgentIdentity | None = None) -> dict[str, Any]:
    return podidentity.inject(body, the_agent or agent(), namespace="finance", settings=SETTINGS).pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_a_labelled_pod_runs_as_the_agent_with_an_exchangeable_token_and_no_api_token() -> None:
    mutated = inject(pod())
    spec = mutated["spec"]
    assert spec["serviceAccountName"] == naming.service_account("triage")
    assert spec["automountServiceAccountToken"] is False
    assert [v["name"] for v in spec["volumes"]] == ["agentid-token", "agentid-ca"]
    token = spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": ISSUER, "expirationSeconds": 600, "path": "token"}
    assert mutated["metadata"]["annotations"][podidentity.CA_ANNOTATION] == SETTINGS.ca_pem
    app = spec["containers"][0]
    assert [m["mountPath"] for m in app["volumeMounts"]] == [env.CA_DIR, env.SA_TOKEN_DIR]
    assert env_of(app) == {
        env.AGENT: "finance/triage",
        env.AGENT_ID: "spiffe://cluster.local/ns/finance/agent/triage",
        env.ISSUER: ISSUER,
        env.TOKEN_URL: "https://agentid-tokens.agentid-system.svc/token",
        env.INTROSPECTION_URL: "https://agentid-tokens.agentid-system.svc/introspect",
        env.CA_FILE: env.CA_PATH,
        env.SA_TOKEN_FILE: env.SA_TOKEN_PATH,
    }
    assert "initContainers" not in spec


def test_injection_is_idempotent_and_leaves_the_input_alone() -> None:
    original = pod({podidentity.AUDIENCES_ANNOTATION: MCP})
    before = copy.deepcopy(original)
    once = inject(original)
    assert original == before
    assert inject(once) == once


def test_the_sidecar_holds_the_service_account_token_and_the_app_only_sees_token_files() -> None:
    mutated = inject(pod({podidentity.AUDIENCES_ANNOTATION: f"{MCP}, {ISSUER}"}))
    spec = mutated["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == podidentity.SIDECAR
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == ["token-agent"]
    assert env_of(sidecar)[env.AUDIENCES] == f"{MCP},{ISSUER}"
    assert {m["name"] for m in sidecar["volumeMounts"]} == {"agentid-token", "agentid-ca", "agentid-tokens"}
    app = spec["containers"][0]
    assert {m["name"] for m in app["volumeMounts"]} == {"agentid-ca", "agentid-tokens"}
    assert env.SA_TOKEN_FILE not in env_of(app)
    assert env_of(app)[env.TOKENS_DIR] == env.TOKENS_PATH
    assert {"name": "agentid-tokens", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in spec["volumes"]


def test_an_explicit_automount_keeps_the_api_token_and_values_the_author_set_win() -> None:
    body = pod(automountServiceAccountToken=True)
    body["spec"]["containers"][0]["env"] = [{"name": env.TOKEN_URL, "value": "https://elsewhere/token"}]
    mutated = inject(body)
    assert "kube-api-access-x1" in [v["name"] for v in mutated["spec"]["volumes"]]
    assert env_of(mutated["spec"]["containers"][0])[env.TOKEN_URL] == "https://elsewhere/token"


def test_the_agent_key_is_mounted_on_request() -> None:
    mutated = inject(pod({podidentity.MOUNT_KEY_ANNOTATION: "true"}))
    assert {
        "name": "agentid-key",
        "secret": {"secretName": naming.key_secret("triage"), "defaultMode": 0o644},
    } in mutated["spec"]["volumes"]
    assert env_of(mutated["spec"]["containers"][0])[env.KEY_DIR] == env.KEY_PATH


def test_a_suspended_agents_pod_is_admitted_with_a_warning() -> None:
    result = podidentity.inject(pod(), agent(supervision={"mode": "Suspended"}), namespace="finance", settings=SETTINGS)
    assert result.pod["spec"]["serviceAccountName"] == naming.service_account("triage")
    assert "Suspended" in result.warnings[0]


@pytest.mark.parametrize(
    ("body", "the_agent", "message"),
    [
        (
            pod(serviceAccountName="builder"),
            agent(),
            f"runs as the agent's ServiceAccount {naming.service_account('triage')}, not 'builder'",
        ),
        (pod(), agent(revoked=True), "agent triage is revoked"),
        (pod(), agent(status={"phase": "Expired"}), "agent triage has expired"),
        (pod(), agent(status={"serviceAccountUID": None}), "not provisioned yet"),
        (pod({podidentity.AUDIENCES_ANNOTATION: "https://other"}), agent(), "'https://other' is not an audience"),
        (
            pod({podidentity.AUDIENCES_ANNOTATION: "https://a.example/x,https://a.example_x"}),
            agent(credentials={"audiences": ["https://a.example/x", "https://a.example_x"]}),
            "would share one token file",
        ),
    ],
    ids=["other-service-account", "revoked", "expired", "not-provisioned", "undeclared-audience", "file-clash"],
)
def test_refusals_say_why(body: dict[str, Any], the_agent: AgentIdentity, message: str) -> None:
    with pytest.raises(Refusal, match=message.replace("(", r"\(")):
        podidentity.inject(body, the_agent, namespace="finance", settings=SETTINGS)


def test_a_missing_agent_and_a_cluster_without_sidecar_are_refused() -> None:
    with pytest.raises(Refusal, match="no AgentIdentity 'triage' in namespace finance"):
        podidentity.inject(pod(), None, namespace="finance", settings=SETTINGS)
    plain = InjectionSettings(issuer=ISSUER, url=ISSUER, audience=ISSUER, ca_pem="x")
    with pytest.raises(Refusal, match="sidecar is not enabled"):
        podidentity.inject(pod({podidentity.AUDIENCES_ANNOTATION: MCP}), agent(), namespace="finance", settings=plain)


@pytest.mark.parametrize(
    ("audience", "name"),
    [
        ("https://mcp.example.com", "mcp.example.com"),
        ("https://kubernetes.default.svc", "kubernetes.default.svc"),
        ("https://mcp.example.com/v1/mcp", "mcp.example.com_v1_mcp"),
        ("spiffe://td/ns/x", "td_ns_x"),
        ("..hidden", "hidden"),
    ],
)
def test_token_file_names_are_safe_and_readable(audience: str, name: str) -> None:
    assert env.token_file_name(audience) == name


def test_the_operator_refuses_injection_flags_it_cannot_honour(tmp_path: Any) -> None:
    from agentid.cli.main import main  # noqa: PLC0415

    with pytest.raises(SystemExit, match="--pod-token-ca /nonexistent: No such file"):
        main(["run", "--webhook-port=9443", "--pod-token-issuer=https://x", "--pod-token-ca=/nonexistent"])
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("hello")
    with pytest.raises(SystemExit, match="not a PEM certificate bundle"):
        main(["run", "--webhook-port=9443", "--pod-token-issuer=https://x", f"--pod-token-ca={not_pem}"])
    with pytest.raises(SystemExit, match="needs --pod-token-ca"):
        main(["run", "--webhook-port=9443", "--pod-token-issuer=https://x"])
