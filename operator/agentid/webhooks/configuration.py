"""The admission webhook configurations for agentid, as manifests.

Used to register the webhook on the embedded control plane (tests, demo); the Helm chart renders the same
shape with a Service reference, and reads the kill-switch condition from the file ``write_chart_files`` makes
(``make crds``). AgentIdentity writes fail closed: if the webhook cannot answer, nobody can create or change
an agent (and nothing else in the cluster is affected) — except the kill switch. A write that only suspends,
supervises or revokes, or that leaves the spec alone (the operator removing its finalizer), and that leaves
the annotations alone (so attribution and the ClusterRole proof cannot be forged on the way), is matched by a
``matchConditions`` expression instead: it goes to a mutating webhook that fails *open* (attribution when it
answers) and skips validation, so an agent can be switched off while the webhook is down. The CRD's CEL rule
keeps ``revoked`` terminal on that path.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentid.api import v1alpha1
from agentid.webhooks.admission import KILL_SWITCH_FIELDS

VALIDATE_AGENT_PATH = "validate-agentidentity"
MUTATE_AGENT_PATH = "mutate-agentidentity"
VALIDATE_POLICY_PATH = "validate-agentpolicy"
NAME = "agentid.dev"
KILL_SWITCH_FILE = "kill-switch.cel"  # in the chart's files/, generated
KILL_SWITCH_TIMEOUT = 3  # seconds: a kill switch waits at most this long for a webhook that does not answer


def _unchanged(path: str) -> str:
    new, old = f"object.{path}", f"oldObject.{path}"
    parent, _, field = path.rpartition(".")
    return (
        f"(has(object.{parent}.{field}) == has(oldObject.{parent}.{field}) && "
        f"(!has(object.{parent}.{field}) || {new} == {old}))"
    )


def kill_switch_expression() -> str:
    """CEL, true for an UPDATE that can only take access away: nothing but supervision and revocation changes
    in the spec, towards less access (or the spec is unchanged), and the annotations are untouched."""
    others = [
        field.alias or name
        for name, field in v1alpha1.AgentIdentitySpec.model_fields.items()
        if (field.alias or name) not in KILL_SWITCH_FIELDS
    ]
    mode, old_mode = "object.spec.supervision.mode", "oldObject.spec.supervision.mode"
    has_mode = "has(object.spec.supervision) && has(object.spec.supervision.mode)"
    has_old_mode = "has(oldObject.spec.supervision) && has(oldObject.spec.supervision.mode)"
    less_access = (
        "(object.spec == oldObject.spec"
        " || (has(object.spec.revoked) && object.spec.revoked == true)"
        f" || ({has_mode} && {mode} == 'Suspended')"
        f" || ({has_mode} && {mode} == 'Supervised' && {has_old_mode} && {old_mode} == 'Autonomous'))"
    )
    return " && ".join(
        [
            "request.operation == 'UPDATE'",
            _unchanged("metadata.annotations"),
            *(_unchanged(f"spec.{field}") for field in others),
            less_access,
        ]
    )


def write_chart_files(directory: Path) -> Path:
    """The chart's copy of the kill-switch condition (a test fails when it is stale)."""
    path = directory / KILL_SWITCH_FILE
    path.write_text(kill_switch_expression() + "\n")
    return path


def _client_config(base_url: str, path: str, ca_bundle: bytes) -> dict[str, Any]:
    return {"url": f"{base_url.rstrip('/')}/{path}", "caBundle": base64.b64encode(ca_bundle).decode()}


def _rule(plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiGroups": [v1alpha1.GROUP],
        "apiVersions": [v1alpha1.VERSION],
        "operations": ["CREATE", "UPDATE"],
        "resources": [plural],
        "scope": scope,
    }


def webhook_configurations(
    *,
    base_url: str,
    ca_bundle: bytes,
    namespace_selector: Mapping[str, Any] | None = None,
    name: str = NAME,
    include_policies: bool = True,
) -> list[dict[str, Any]]:
    """Validating (agents, policies) and mutating (attribution) configurations calling ``base_url``."""
    common = {"sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10, "failurePolicy": "Fail"}
    selector = {"namespaceSelector": dict(namespace_selector)} if namespace_selector else {}
    kill_switch = kill_switch_expression()
    not_kill_switch = {"matchConditions": [{"name": "not-kill-switch", "expression": f"!({kill_switch})"}]}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"agentidentities.mutate.{NAME}",
                    "clientConfig": _client_config(base_url, MUTATE_AGENT_PATH, ca_bundle),
                    "rules": [_rule(v1alpha1.PLURAL, "Namespaced")],
                    "reinvocationPolicy": "Never",
                    **common,
                    **selector,
                    **not_kill_switch,
                },
                {
                    "name": f"kill-switch.agentidentities.mutate.{NAME}",
                    "clientConfig": _client_config(base_url, MUTATE_AGENT_PATH, ca_bundle),
                    "rules": [_rule(v1alpha1.PLURAL, "Namespaced")],
                    "reinvocationPolicy": "Never",
                    **common,
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": KILL_SWITCH_TIMEOUT,
                    **selector,
                    "matchConditions": [{"name": "kill-switch", "expression": kill_switch}],
                },
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"agentidentities.validate.{NAME}",
                    "clientConfig": _client_config(base_url, VALIDATE_AGENT_PATH, ca_bundle),
                    "rules": [_rule(v1alpha1.PLURAL, "Namespaced")],
                    **common,
                    **selector,
                    **not_kill_switch,
                },
                *(
                    [
                        {
                            "name": f"agentpolicies.validate.{NAME}",
                            "clientConfig": _client_config(base_url, VALIDATE_POLICY_PATH, ca_bundle),
                            "rules": [_rule(v1alpha1.POLICY_PLURAL, "Cluster")],
                            **common,
                        }
                    ]
                    if include_policies
                    else []
                ),
            ],
        },
    ]


if __name__ == "__main__":
    print(write_chart_files(Path(sys.argv[1] if len(sys.argv) > 1 else "charts/agentid-operator/files")))
