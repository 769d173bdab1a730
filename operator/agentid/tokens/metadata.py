"""Discovery documents: RFC 8414 metadata (read by OAuth clients such as the MCP SDK) and the OpenID configuration
(read by kube-apiserver).

Called by the HTTP layer. interop.md: ``issuer`` must equal the configured URL exactly. Every member says what
the service really does:
- ``authorization_endpoint`` names a real endpoint (``/authorize``) that refuses every request with
  ``unsupported_response_type``: agents never log in interactively, so ``response_types_supported`` is empty in
  the RFC 8414 document. RFC 8414 would let us omit the endpoint, but the MCP SDK's ``OAuthMetadata`` model (and
  OpenID Discovery) require it, and a client that discards our metadata guesses endpoints instead.
- ``private_key_jwt`` (an agent's own key) is the one client authentication method besides ``none``, so the
  signing algorithms listed next to it are the agent key algorithms.
- The OpenID configuration mirrors kube-apiserver's own ServiceAccount issuer (``response_types_supported:
  ["id_token"]``, ``subject_types_supported: ["public"]``): agent tokens are what the apiserver validates as ID
  tokens. ``id_token_signing_alg_values_supported`` lists the algorithms of the issuer keys and nothing else, so
  with the default ES256 keys a validator insisting on RS256 (OpenID Discovery §3; idpyoidc) rejects the document:
  listing RS256 without an RS256 key would be a lie. Run the issuer with RS256 keys where that validator matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentid.api.v1alpha1 import KeyAlgorithm
from agentid.domain import claims, keys

GRANT_TYPES = [claims.GRANT_TOKEN_EXCHANGE, claims.GRANT_JWT_BEARER, claims.GRANT_CLIENT_CREDENTIALS]
CLIENT_AUTH_METHODS = ["none", "private_key_jwt"]
AGENT_KEY_ALGORITHMS = sorted(keys.JWS_ALGORITHM[algorithm] for algorithm in KeyAlgorithm)
CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "agent", "act"]


def oauth_authorization_server(issuer: str, algorithms: Sequence[str]) -> dict[str, Any]:
    """RFC 8414 metadata."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "introspection_endpoint": f"{issuer}/introspect",
        "response_types_supported": [],
        "grant_types_supported": GRANT_TYPES,
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": AGENT_KEY_ALGORITHMS,
        # A ServiceAccount token as Bearer also works (TokenReview); it has no registered method name to list.
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": AGENT_KEY_ALGORITHMS,
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
        "claims_supported": CLAIMS,
    }
