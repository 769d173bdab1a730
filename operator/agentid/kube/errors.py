"""The one place that decides what an API error means: gone, conflict, throttled (retry later), or permanent.

Every adapter in ``kube/`` raises these; callers never inspect HTTP statuses themselves. Messages carry the
apiserver's own message (which names the object and the rule), never request bodies.
"""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """An API request failed. ``status`` is the HTTP status; ``reason`` the Status reason (e.g. Forbidden)."""

    retryable = False

    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a resourceVersion or field-manager conflict, or AlreadyExists. Retry from fresh state."""

    retryable = True


class Invalid(ApiError):
    """422: the apiserver refused the object (schema, CEL, admission)."""


class Forbidden(ApiError):
    pass


class Throttled(ApiError):
    """429 (or 5xx): try again after ``retry_after`` seconds."""

    retryable = True


class Unavailable(ApiError):
    retryable = True


class Unreachable(Unavailable):
    """No HTTP answer at all: connection refused or reset (an apiserver restarting), a timeout."""


class KubeconfigError(Exception):
    """No usable credentials: the kubeconfig is missing, unreadable, malformed, or names no usable context (also
    raised outside a Pod when there is no kubeconfig at all). The message is one line for people."""


def from_response(status: int, body: bytes | str | None, headers: Any = None) -> ApiError:
    """Build the right ApiError from a failed response (Status object body when there is one)."""
    reason, message = "", ""
    try:
        document = json.loads(body) if body else {}
        if isinstance(document, dict):
            reason = str(document.get("reason") or "")
            message = str(document.get("message") or "")
    except (ValueError, TypeError):
        message = ""
    retry_after = _retry_after(headers)
    if status == 429:
        return Throttled(status, reason or "TooManyRequests", message, retry_after=retry_after or 1.0)
    if status >= 500:
        return Unavailable(status, reason or "ServerError", message, retry_after=retry_after)
    kind, default_reason = _BY_STATUS.get(status, (ApiError, "Error"))
    return kind(status, reason or default_reason, message)


_BY_STATUS: dict[int, tuple[type[ApiError], str]] = {
    403: (Forbidden, "Forbidden"),
    404: (NotFound, "NotFound"),
    409: (Conflict, "Conflict"),
    422: (Invalid, "Invalid"),
}


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
