"""Typed errors of the agent SDK: what an agent's code can catch and act on.

Raised by ``agentid.client`` (and read by ``agentid token-agent``). A refusal of the token service maps to one
class by its RFC 6749 ``error`` and agentid's ``reason`` extension member; messages never contain a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AgentIdError(Exception):
    """Anything the SDK raises."""


class ConfigurationError(AgentIdError):
    """The environment does not say how to get tokens (not an injected Pod, or a missing file)."""


class TokenServiceUnavailable(AgentIdError):
    """The token service could not be reached or answered 5xx: retry later (credentials are not the problem)."""


class TokenRefused(AgentIdError):
    """The token service refused the request (RFC 6749 §5.2 error response)."""

    def __init__(self, status: int, error: str, description: str = "", reason: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.status = status
        self.error = error
        self.description = description
        self.reason = reason


class AgentSuspended(TokenRefused):
    """The agent is Suspended: no token until a human resumes it (reversible)."""


class AgentRevoked(TokenRefused):
    """The agent is revoked, expired or deleted: it will never get a token again (``reason`` says which)."""


class AgentNotReady(TokenRefused):
    """The agent is not provisioned (yet), or its provisioning failed."""


class AudienceRefused(TokenRefused):
    """The audience is not one the agent declares (``spec.credentials.audiences``), or wider than allowed."""


class DelegationRefused(TokenRefused):
    """The actor may not act for the subject (not in ``allowedActors``, chain too deep, delegated actor token)."""


class InvalidCredentials(TokenRefused):
    """The presented ServiceAccount token, agent token or assertion does not verify (expired, wrong audience...)."""


_BY_REASON: dict[str, type[TokenRefused]] = {
    "Suspended": AgentSuspended,
    "Revoked": AgentRevoked,
    "Expired": AgentRevoked,
    "Deleting": AgentRevoked,
    "NotProvisioned": AgentNotReady,
    "Failed": AgentNotReady,
    "NoAudience": AudienceRefused,
    "AudienceNotAllowed": AudienceRefused,
    "AudienceWidened": AudienceRefused,
    "ActorNotAllowed": DelegationRefused,
    "ActorDelegated": DelegationRefused,
    "ChainTooDeep": DelegationRefused,
    "InvalidToken": InvalidCredentials,
}

# The state a token sidecar reports in its status file, by error class (and back).
STATE_OF: dict[type[TokenRefused], str] = {
    AgentSuspended: "suspended",
    AgentRevoked: "revoked",
    AgentNotReady: "not-ready",
    AudienceRefused: "audience-refused",
    DelegationRefused: "refused",
    InvalidCredentials: "invalid-credentials",
    TokenRefused: "refused",
}
CLASS_OF_STATE = {state: cls for cls, state in STATE_OF.items()}


def refusal(status: int, body: Mapping[str, Any]) -> TokenRefused:
    """The typed error for an error response of the token service."""
    error = str(body.get("error") or "invalid_request")
    description = str(body.get("error_description") or "")[:300]
    reason = str(body.get("reason") or "")
    cls = _BY_REASON.get(reason)
    if cls is None:
        cls = {"invalid_target": AudienceRefused}.get(error, InvalidCredentials if status == 401 else TokenRefused)
    return cls(status, error, description, reason)
