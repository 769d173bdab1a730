"""Condition types, reasons and Event reasons: constants in one module, used by status, Events and docs.

Every reason agentid writes is one of these (``tests/unit/test_reasons.py`` rejects a literal reason anywhere else),
and ``MEANINGS`` says what each means: docs/reference.md is generated from it.
"""

from __future__ import annotations

# Condition types
READY = "Ready"
CREDENTIALS_READY = "CredentialsReady"
ACCESS_READY = "AccessReady"
REVOKED = "Revoked"

# Condition reasons
PROVISIONED = "Provisioned"
SUSPENDED = "Suspended"
REVOKED_BY_USER = "Revoked"
EXPIRED = "Expired"
KEY_ACTIVE = "KeyActive"
KEYS_REMOVED = "KeysRemoved"
GRANTED = "Granted"
NOT_REVOKED = "NotRevoked"
CLUSTER_ROLE_NOT_FOUND = "ClusterRoleNotFound"
CLUSTER_ROLE_NOT_ADMITTED = "ClusterRoleNotAdmitted"
CLUSTER_ROLE_NOT_READ_ONLY = "ClusterRoleNotReadOnly"
POLICY_VIOLATION = "PolicyViolation"
NAME_CONFLICT = "NameConflict"
OWNER_CEILING = "OwnerCeiling"
APPLY_FAILED = "ApplyFailed"
# AgentPolicy Ready reasons: the policy is in force either way; the second says some agents are held by it
POLICY_ENFORCED = "Enforced"
AGENTS_OUT_OF_BOUNDS = "AgentsOutOfBounds"
INVALID_SPEC = "InvalidSpec"

# Event reasons (besides the failing Ready reason, which is also posted as a Warning Event)
EVENT_PROVISIONED = "Provisioned"
EVENT_SUPERVISION_CHANGED = "SupervisionChanged"
EVENT_SUSPENDED = "Suspended"
EVENT_RESUMED = "Resumed"
EVENT_KEY_ROTATED = "KeyRotated"
EVENT_KEY_REGENERATED = "KeyRegenerated"
EVENT_REVOKED = "Revoked"
EVENT_EXPIRED = "Expired"
EVENT_DRIFT_REPAIRED = "DriftRepaired"
EVENT_DELETED = "Deleted"
EVENT_RECONCILE_FAILED = "ReconcileFailed"

CONDITION_TYPES = {
    READY: "Identity, keys and the declared access (as policies and supervision allow) are in place.",
    CREDENTIALS_READY: "The agent's signing key exists and is published in status.",
    ACCESS_READY: "The agent's RBAC matches what it may hold now.",
    REVOKED: "The agent is revoked or expired (terminal).",
}
CONDITION_REASONS = {
    PROVISIONED: "Ready: everything is in place.",
    SUSPENDED: "Ready/AccessReady: suspended on purpose; nothing is granted until resumed.",
    REVOKED_BY_USER: "Revoked by `spec.revoked`; bindings, keys and ServiceAccount removed.",
    EXPIRED: "Past `spec.expiresAt`; bindings, keys and ServiceAccount removed.",
    KEY_ACTIVE: "CredentialsReady: the active key and its next rotation.",
    KEYS_REMOVED: "CredentialsReady: keys deleted (terminal).",
    GRANTED: "AccessReady: the declared access is bound.",
    NOT_REVOKED: "Revoked=False.",
    CLUSTER_ROLE_NOT_FOUND: "A referenced ClusterRole does not exist; nothing of it is bound until it does.",
    CLUSTER_ROLE_NOT_READ_ONLY: "Supervised: a ClusterRole that writes is withheld (not a failure).",
    CLUSTER_ROLE_NOT_ADMITTED: "A referenced ClusterRole was created or re-created after admission checked the agent "
    "(its UID differs from the one admission recorded): it is withheld until a spec write outside supervision and "
    "revocation has it checked again.",
    POLICY_VIOLATION: "An AgentPolicy (or the baseline) forbids part of the declared access; the message names the "
    "rule. What it forbids is withdrawn at once when a policy tightens or a namespace is relabelled.",
    NAME_CONFLICT: "One of the agent's derived names is held by an object it did not create; agentid changes "
    "nothing of it and grants nothing until the name is free.",
    OWNER_CEILING: "Under an `ownerCeiling` policy, the owner does not hold part of the agent's access (checked "
    "with SubjectAccessReviews as the owner); that part is withdrawn, and given back when the owner regains it.",
    APPLY_FAILED: "The apiserver refused a write (the message is its answer); retried with backoff.",
    INVALID_SPEC: (
        "The spec cannot be read by this operator version; nothing new is granted. Deleting the agent still removes "
        "everything it owns."
    ),
    POLICY_ENFORCED: "AgentPolicy Ready: the policy is in force and every agent it selects is within it.",
    AGENTS_OUT_OF_BOUNDS: "AgentPolicy Ready: the policy is in force; the message names agents it holds back.",
}
EVENT_REASONS = {
    EVENT_PROVISIONED: "Normal: ServiceAccount, key and access created.",
    EVENT_SUPERVISION_CHANGED: "Normal: Autonomous <-> Supervised, naming who changed it.",
    EVENT_SUSPENDED: "Warning: suspended, naming who did it and why.",
    EVENT_RESUMED: "Normal: resumed from Suspended.",
    EVENT_KEY_ROTATED: "Normal: a new key is active; the old one retires after the overlap.",
    EVENT_KEY_REGENERATED: "Warning: the key Secret was missing or unusable; a new key was generated.",
    EVENT_REVOKED: "Warning: revoked; bindings, keys and ServiceAccount removed.",
    EVENT_EXPIRED: "Warning: expired; bindings, keys and ServiceAccount removed.",
    EVENT_DRIFT_REPAIRED: "Warning: an owned object was changed or deleted by someone else and was put back.",
    EVENT_DELETED: "Normal: the agent was deleted; everything it owned is removed (one Event per deletion).",
    EVENT_RECONCILE_FAILED: "Warning: the apiserver refused a write (once per distinct message).",
}
