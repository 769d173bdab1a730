"""The admission webhook configurations for agentid, as manifests.

Used to register the webhook on the embedded control plane (tests, demo); the Helm chart renders the same
shape with a Service reference. AgentIdentity writes fail closed: if the webhook cannot answer, nobody can
create or change an agent (and nothing else in the cluster is affected).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from agentid.api import v1alpha1

VALIDATE_AGENT_PATH = "validate-agentidentity"
MUTATE_AGENT_PATH = "mutate-agentidentity"
VALIDATE_POLICY_PATH = "validate-agentpolicy"
MUTATE_POD_PATH = "mutate-pod-identity"
NAME = "agentid.dev"
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
                }
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
