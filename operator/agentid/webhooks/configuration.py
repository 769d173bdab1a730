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
MUTATE_POD_PATH = "mutate-pod-identity"
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


POD_IDENTITY_NAME = "agentid.dev-pod-identity"
POD_LABEL_POLICY_NAME = "agentid.dev-pod-agent-label"
# Only Pods carrying this label are ever sent to the webhook: every other Pod's admission never depends on agentid.
POD_OBJECT_SELECTOR = {"matchExpressions": [{"key": "agentid.dev/agent", "operator": "Exists"}]}


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


def pod_identity_configuration(
    *,
    base_url: str,
    ca_bundle: bytes,
    namespace_selector: Mapping[str, Any] | None = None,
    name: str = POD_IDENTITY_NAME,
) -> dict[str, Any]:
    """The mutating configuration of Pod identity injection (``agentid.domain.podidentity``).

    objectSelector: only Pods labelled ``agentid.dev/agent`` are sent, so no other Pod waits on or fails with the
    webhook. Those labelled fail closed (``Fail``): a Pod asking to run as an agent must never start without its
    identity (it would run as another ServiceAccount) or despite a revocation. ``IfNeeded``: if a later webhook
    adds a container, injection runs again (it is idempotent) and gives that container its environment too.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"pods.identity.{NAME}",
                "clientConfig": _client_config(base_url, MUTATE_POD_PATH, ca_bundle),
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": POD_OBJECT_SELECTOR,
                "namespaceSelector": dict(namespace_selector or {}),
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }


# The label is read once, at creation (identity injection): changing it later would make a Pod look like another
# agent's (to NetworkPolicies, dashboards, audits) without running as it. CEL in the apiserver, so no webhook
# outage can ever block updates of labelled Pods.
def _agent_label_of(variable: str) -> str:
    labels = f"{variable}.metadata.labels"
    return f"(has({labels}) && 'agentid.dev/agent' in {labels} ? {labels}['agentid.dev/agent'] : '')"


POD_LABEL_MESSAGE = (
    "the agentid.dev/agent label of a Pod is fixed when the Pod is created (its identity is injected then); "
    "create a new Pod instead"
)


def pod_label_policy(
    *, namespace_selector: Mapping[str, Any] | None = None, name: str = POD_LABEL_POLICY_NAME
) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy (and its binding) refusing to add, change or remove a Pod's agent label."""
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]}
                    ]
                },
                "validations": [
                    {
                        "expression": f"{_agent_label_of('oldObject')} == {_agent_label_of('object')}",
                        "message": POD_LABEL_MESSAGE,
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": dict(namespace_selector or {})},
            },
        },
    ]


if __name__ == "__main__":
    print(write_chart_files(Path(sys.argv[1] if len(sys.argv) > 1 else "charts/agentid-operator/files")))
