"""Grants a test relies on at once: create the binding, then wait until the apiserver's authorizer sees it.

The RBAC authorizer reads bindings from an informer cache, so a binding the API has just accepted may not authorize
the very next request (CI saw a 403 for a user whose RoleBinding had been created a few milliseconds before). Each
grant waits until a SubjectAccessReview for every subject allows the role's first rule.
"""

from __future__ import annotations

from typing import Any

import kubernetes

from tests.support.clusters import ClusterHandle
from tests.support.polling import eventually

RBAC_GROUP = "rbac.authorization.k8s.io"


def bind(cluster: ClusterHandle, namespace: str | None, body: dict[str, Any]) -> None:
    """Create a RoleBinding in ``namespace`` (a ClusterRoleBinding when None) and wait until it authorizes."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    if namespace is None:
        rbac.create_cluster_role_binding(body)
    else:
        rbac.create_namespaced_role_binding(namespace, body)
    wait_until_authorized(cluster, namespace, body)


def wait_until_authorized(cluster: ClusterHandle, namespace: str | None, body: dict[str, Any]) -> None:
    """Wait until the authorizer applies the binding ``body`` (already created) to each of its subjects."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.admin())
    rule = _first_resource_rule(rbac, body["roleRef"], namespace)
    for subject in body["subjects"]:
        eventually(
            lambda subject=subject: _allowed(cluster, subject, rule, namespace),
            what=f"the authorizer sees {body['metadata']['name']} for {subject['name']}",
        )


def bind_user(cluster: ClusterHandle, namespace: str, user: str, kind: str, role: str, name: str = "") -> None:
    """Bind a Role or ClusterRole (``kind``) to one user in ``namespace``."""
    bind(
        cluster,
        namespace,
        {
            "metadata": {"name": name or f"{user.split('@', maxsplit=1)[0]}-{role}"[:63]},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
        },
    )


def _first_resource_rule(
    rbac: kubernetes.client.RbacAuthorizationV1Api, role_ref: dict[str, str], namespace: str | None
) -> Any:
    if role_ref["kind"] == "Role":
        assert namespace is not None, "a Role is bound by a RoleBinding"
        role = rbac.read_namespaced_role(role_ref["name"], namespace)
    else:
        role = rbac.read_cluster_role(role_ref["name"])
    rules = [rule for rule in role.rules or [] if rule.resources]
    assert rules, f"{role_ref['kind']} {role_ref['name']} has no resource rule to check the binding with"
    return rules[0]


def _allowed(cluster: ClusterHandle, subject: dict[str, str], rule: Any, namespace: str | None) -> bool:
    user, groups = _identity(subject)
    review = {
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "namespace": namespace or "",
                "group": rule.api_groups[0],
                "resource": rule.resources[0],
                "verb": rule.verbs[0],
            },
        }
    }
    answer = kubernetes.client.AuthorizationV1Api(cluster.admin()).create_subject_access_review(review)
    return bool(answer.status.allowed)


def _identity(subject: dict[str, str]) -> tuple[str, list[str]]:
    if subject["kind"] == "User":
        return subject["name"], []
    if subject["kind"] == "Group":
        return "agentid-test-group-member", [subject["name"]]
    namespace = subject["namespace"]
    return (
        f"system:serviceaccount:{namespace}:{subject['name']}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
    )
