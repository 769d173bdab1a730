"""Condition types, reasons and Event reasons: constants in one module, used by status, Events and docs."""

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
NO_ACCESS = "NoAccess"
NOT_REVOKED = "NotRevoked"
CLUSTER_ROLE_NOT_FOUND = "ClusterRoleNotFound"
POLICY_VIOLATION = "PolicyViolation"
NAME_CONFLICT = "NameConflict"  # a derived name is held by an object the agent does not own
APPLY_FAILED = "ApplyFailed"

# Event reasons
EVENT_PROVISIONED = "Provisioned"
EVENT_SUPERVISION_CHANGED = "SupervisionChanged"
EVENT_SUSPENDED = "Suspended"
EVENT_RESUMED = "Resumed"
EVENT_KEY_ROTATED = "KeyRotated"
EVENT_KEY_REGENERATED = "KeyRegenerated"
EVENT_KEY_RETIRED = "KeyRetired"
EVENT_REVOKED = "Revoked"
EVENT_EXPIRED = "Expired"
EVENT_DRIFT_REPAIRED = "DriftRepaired"
EVENT_ACCESS_WITHHELD = "AccessWithheld"
EVENT_PERMISSIONS_CHANGED = "PermissionsChanged"
EVENT_DELETED = "Deleted"
EVENT_RECONCILE_FAILED = "ReconcileFailed"
