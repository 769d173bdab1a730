"""Discovery documents: OpenID configuration (read by kube-apiserver) and RFC 8414 metadata (read by OAuth clients).

Called by the HTTP layer. interop.md: ``issuer`` must equal the configured URL exactly; strict OIDC validators
want ``authorization_endpoint``, which a token-exchange service does not have, hence the RFC 8414 document too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentid.domain import claims


def oauth_authorization_server(issuer: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """RFC 8414 metadata."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "introspection_endpoint": f"{issuer}/introspect",
        "grant_types_supported": [claims.GRANT_TOKEN_EXCHANGE, claims.GRANT_JWT_BEARER],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["none"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256", "RS256"],
        "response_types_supported": [],
        "scopes_supported": [],
        "token_types_supported": [claims.TOKEN_TYPE_ACCESS_TOKEN, claims.TOKEN_TYPE_JWT],
        "access_token_signing_alg_values_supported": list(algorithms),
    }


def openid_configuration(issuer: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """What kube-apiserver's JWT authenticator reads (``issuer``, ``jwks_uri``), shaped like its own SA issuer's."""
    return {
        **oauth_authorization_server(issuer, algorithms),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(algorithms),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "agent", "act"],
    }
