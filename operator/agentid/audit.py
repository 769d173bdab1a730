"""Structured audit records: one JSON line per security-relevant action, on the ``agentid.audit`` logger.

Called by the reconciler (provisioned, mode changed, rotated, revoked, expired), the token service (exchange
granted/refused, introspection of revoked tokens) and the admission webhook (denied). Records carry identifiers
(agent ID, jti, key ID), never tokens or keys: callers pass only the fields listed in ``ALLOWED_FIELDS``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

LOGGER_NAME = "agentid.audit"
_logger = logging.getLogger(LOGGER_NAME)
_ENCODER = json.JSONEncoder(default=str)  # one for every record (json.dumps with an option builds one per call)

ALLOWED_FIELDS = frozenset(
    {
        "agent_id", "namespace", "name", "uid", "owner", "actor", "actor_groups", "reason", "outcome", "jti",
        "key_id", "audience", "supervision", "previous_supervision", "act_chain", "client", "correlation_id",
        "message", "request_uid",
    }
)  # fmt: skip


def record(action: str, **fields: Any) -> dict[str, Any]:
    """Emit one audit line and return it (the caller may also attach it to an Event or a metric)."""
    unknown = set(fields) - ALLOWED_FIELDS
    if unknown:
        raise ValueError(f"audit fields not allowed (could carry secrets): {sorted(unknown)}")
    entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "audit": action}
    entry.update({key: value for key, value in fields.items() if value is not None})
    _logger.info(_ENCODER.encode(entry))
    return entry


def configure(path: str | None = None) -> None:
    """Send audit records as bare JSON lines to stdout (or a file), whatever format the other logs use.

    They do not propagate to the root logger, so a JSON log formatter never wraps (and escapes) them.
    """
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.handlers[:] = [handler]
    _logger.setLevel(logging.INFO)
    _logger.propagate = False
