"""The token service's configuration: built once by ``agentid serve`` (or a test fixture), passed explicitly.

Nothing here reads the environment; the CLI maps flags to these fields.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from agentid.domain.issuer_keys import RotationPolicy
from agentid.tokens.defaults import DEFAULT_NAMESPACE, DEFAULT_SECRET

KEYRING_SECRET_TYPE = "agentid.dev/issuer-keys"  # noqa: S105 - a Secret type
KEYRING_DATA_KEY = "keyring.json"


@dataclass(frozen=True)
class Limits:
    """Bounds on what a client may send: everything larger is refused before it is parsed."""

    max_body_bytes: int = 64 * 1024
    max_token_bytes: int = 16 * 1024  # a ServiceAccount token is ~1 KiB; an agent token with 32 attributes ~10 KiB
    max_audiences: int = 16
    max_assertion_lifetime_seconds: int = 3600  # RFC 7523 assertions are short-lived proofs, not credentials


@dataclass(frozen=True)
class TLS:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class TokenServiceSettings:
    issuer: str  # exact `iss` and discovery URL; https (http only on loopback)
    host: str = "127.0.0.1"
    port: int = 8443
    tls: TLS | None = None
    namespace: str = DEFAULT_NAMESPACE  # where the issuer's key Secret lives
    secret_name: str = DEFAULT_SECRET
    # ServiceAccount tokens presented as subject tokens must carry one of these audiences (checked by TokenReview);
    # empty means "the issuer URL", so a token minted for the apiserver cannot be exchanged.
    subject_audiences: tuple[str, ...] = ()
    rotation: RotationPolicy = field(default_factory=RotationPolicy)
    review_cache_seconds: float = 10.0  # docs/security.md: TokenReview results cached at most 10 s
    review_cache_entries: int = 10_000
    keyring_refresh_seconds: float = 30.0  # re-read the Secret (other replicas may have rotated) and plan
    limits: Limits = field(default_factory=Limits)
    trust_domain: str = "cluster.local"  # agent IDs are computed from it, never taken from status
    # Audiences (resource servers such as MCP tools) whose tokens are minted as RFC 9068 access tokens
    # (``typ: at+jwt``, ``client_id``); every other audience (the kube-apiserver's among them) gets ``typ: JWT``.
    access_token_audiences: tuple[str, ...] = ()

    def tls_problem(self) -> str | None:
        """Why this configuration may not serve (an issuer other than loopback needs TLS), or None."""
        host = urllib.parse.urlsplit(self.issuer).hostname or ""
        if self.tls is None and host not in ("127.0.0.1", "localhost", "::1"):
            return "refusing to serve a non-loopback issuer without a TLS certificate and key"
        return None

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/introspect"

    @property
    def accepted_subject_audiences(self) -> tuple[str, ...]:
        return self.subject_audiences or (self.issuer,)
