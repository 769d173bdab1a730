"""The verifier a tool holds: local JWT verification, optionally confirmed by live introspection.

Called by the ASGI middleware and the MCP adapter. Local verification alone honours a suspension or revocation
only when the token expires (tokens live minutes); with ``signals`` (an SSF receiver) it learns of suspensions
and revocations from pushed or long-polled security events within a second, still without a call per request;
with ``introspection`` the tool asks the token service (cached for a few seconds) and sees the live mode.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from agentid.verify.introspection import Credentials, IntrospectionClient
from agentid.verify.jwks import JWKSCache
from agentid.verify.jwt_verifier import JWTVerifier
from agentid.verify.principal import AgentPrincipal
from agentid.verify.signals import SignalReceiver

TIMEOUT = httpx.Timeout(5.0)


@dataclass
class Verifier:
    jwt: JWTVerifier
    introspection: IntrospectionClient | None = None
    signals: SignalReceiver | None = None  # Shared Signals: suspension and revocation bite within a second

    @property
    def issuer(self) -> str:
        return self.jwt.issuer

    @property
    def audience(self) -> str:
        return self.jwt.audience

    async def verify(self, token: str) -> AgentPrincipal:
        """Raises ``InvalidToken`` or ``IssuerUnavailable``."""
        principal = await self.jwt.verify(token)
        if self.signals is not None:
            principal = self.signals.check(principal)
        if self.introspection is not None:
            principal = await self.introspection.live_principal(token, principal)
        return principal


def connect(
    issuer: str,
    audience: str,
    *,
    ca_file: str | None = None,
    introspection_credentials: Credentials | None = None,
    introspection_ttl: float = 5.0,
    skew_seconds: int = 30,
) -> tuple[Verifier, httpx.AsyncClient]:
    """A verifier for ``audience`` (this tool's resource URL) trusting ``issuer``, and the HTTP client it uses
    (close it on shutdown). With ``introspection_credentials`` every token is also checked live."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    http = httpx.AsyncClient(verify=verify, timeout=TIMEOUT, trust_env=False, follow_redirects=False)
    local = JWTVerifier(issuer=issuer, audience=audience, keys=JWKSCache(issuer, http=http), skew_seconds=skew_seconds)
    live = None
    if introspection_credentials is not None:
        live = IntrospectionClient(
            f"{issuer}/introspect", http=http, credentials=introspection_credentials, ttl=introspection_ttl
        )
    return Verifier(jwt=local, introspection=live), http
