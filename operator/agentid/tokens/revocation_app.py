"""RFC 7009 token revocation: ``POST /revoke`` revokes one agent token and every token exchanged from it.

Installed next to the token endpoints by ``tokens.service``. The caller authenticates exactly as for
introspection (a ServiceAccount bearer token judged by TokenReview, or an agent's RFC 7523 client assertion);
holding the token is the authority to revoke it (a tool that received a token may kill it, an agent its own),
and revoking never reveals anything: a token that does not verify, or is unknown, is answered 200 like any other
(RFC 7009 §2.2). The revocation is recorded through the Kubernetes API (``tokens.revocations``), so every replica's
introspection sees it; descendants are covered because each exchanged token carries its ``ancestors``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from agentid import audit, metrics
from agentid.domain.claims import Error, Refused
from agentid.kube import errors
from agentid.tokens.clients import AmbiguousClient, IntrospectionClients
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.oauth_http import NO_STORE, BadRequest, oauth_error, read_form, single
from agentid.tokens.revocations import RevocationStore
from agentid.tokens.settings import TokenServiceSettings

logger = logging.getLogger(__name__)


class RevocationRoutes:
    def __init__(
        self,
        *,
        settings: TokenServiceSettings,
        keyring: IssuerKeyring,
        clients: IntrospectionClients,
        revocations: RevocationStore,
    ) -> None:
        self._settings = settings
        self._keyring = keyring
        self._clients = clients
        self._revocations = revocations

    def install(self, app: web.Application) -> None:
        app.router.add_post("/revoke", self.revoke)

    async def revoke(self, request: web.Request) -> web.Response:
        try:
            form = await read_form(request)
            caller = await self._clients.authenticate(request.headers.get("Authorization"), form)
            token = single(form, "token")
            if caller is None:
                return oauth_error(401, Error.INVALID_CLIENT.value, "revocation requires client authentication")
            if not token:
                raise BadRequest("token is required")
            try:
                verified = self._keyring.verify_issued(
                    token, issuer=self._settings.issuer, max_bytes=self._settings.limits.max_token_bytes
                )
            except Refused:
                return web.Response(status=200, headers=NO_STORE)  # §2.2: invalid tokens need no revocation
            jti = str(verified.claims["jti"])
            await self._revocations.revoke(jti, int(verified.claims["exp"]))
        except BadRequest as error:
            return oauth_error(400, Error.INVALID_REQUEST.value, error.description)
        except AmbiguousClient:
            return oauth_error(400, Error.INVALID_REQUEST.value, "use exactly one client authentication method")
        except errors.ApiError as error:
            logger.warning("revocation could not reach the apiserver: %s %s", error.status, error.reason)
            return oauth_error(503, "temporarily_unavailable", "the revocation could not be recorded")
        metrics.TOKEN_REVOCATIONS.inc()
        audit.record(
            "token.revoked", outcome="revoked", jti=jti, agent_id=verified.claims.get("sub"), client=caller.name
        )
        return web.Response(status=200, headers=NO_STORE)
