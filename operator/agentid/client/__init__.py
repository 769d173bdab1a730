"""The agent SDK: agent tokens for code running as an agent (``pip install agentid``; no Kopf, no Kubernetes client).

In a Pod labelled ``agentid.dev/agent: <name>`` everything comes from the injected environment::

    from agentid.client import AgentClient
    client = AgentClient.from_environment()
    requests.get(url, auth=client.auth("https://mcp.example.com"))

``AsyncAgentClient`` is the asyncio flavour; ``agentid.client.httpx_auth.AgentAuth`` plugs into httpx; errors are
in ``agentid.client.errors``; the environment contract in ``agentid.client.environment``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentid.client.aio import AsyncAgentClient
    from agentid.client.credentials import Credentials
    from agentid.client.errors import (
        AgentIdError,
        AgentNotReady,
        AgentRevoked,
        AgentSuspended,
        AudienceRefused,
        ConfigurationError,
        DelegationRefused,
        InvalidCredentials,
        TokenRefused,
        TokenServiceUnavailable,
    )
    from agentid.client.sync import AgentClient, BearerAuth

# Lazy (PEP 562): importing ``agentid.client.environment`` (the Pod contract) must not load HTTP clients.
_HOMES = {
    "AgentClient": "sync",
    "BearerAuth": "sync",
    "AsyncAgentClient": "aio",
    "Credentials": "credentials",
    **dict.fromkeys(
        (
            "AgentIdError",
            "AgentNotReady",
            "AgentRevoked",
            "AgentSuspended",
            "AudienceRefused",
            "ConfigurationError",
            "DelegationRefused",
            "InvalidCredentials",
            "TokenRefused",
            "TokenServiceUnavailable",
        ),
        "errors",
    ),
}
__all__ = [
    "AgentClient",
    "AgentIdError",
    "AgentNotReady",
    "AgentRevoked",
    "AgentSuspended",
    "AsyncAgentClient",
    "AudienceRefused",
    "BearerAuth",
    "ConfigurationError",
    "Credentials",
    "DelegationRefused",
    "InvalidCredentials",
    "TokenRefused",
    "TokenServiceUnavailable",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
