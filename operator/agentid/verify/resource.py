"""RFC 9728 protected-resource metadata and RFC 6750 challenges: how a tool tells a client where to get a token.

Pure helpers shared by the ASGI middleware and the MCP example. The metadata lives at
``/.well-known/oauth-protected-resource`` plus the resource's path (RFC 9728 §3.1); every 401 names it in
``WWW-Authenticate: Bearer resource_metadata="..."`` (§5.1) so a client (the MCP SDK's among them) can discover the
authorization server, and a 403 for a tool the agent may not use says ``error="insufficient_scope"``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN + path, "", ""))


def metadata_path(resource: str) -> str:
    return urlsplit(metadata_url(resource)).path


def protected_resource_metadata(resource: str, issuer: str, *, name: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    }
    if name:
        document["resource_name"] = name
    return document


def challenge(resource: str, error: str | None = None, description: str | None = None) -> str:
    """The ``WWW-Authenticate`` value; no ``error`` when the request carried no token at all (RFC 6750 §3.1)."""
    parts = [f'resource_metadata="{metadata_url(resource)}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quoted(description)}"')
    return "Bearer " + ", ".join(parts)


def _quoted(text: str) -> str:
    return "".join(char for char in text if char.isprintable() and char not in '"\\')[:200]
