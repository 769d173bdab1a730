"""The agent SDK, blocking flavour: agent tokens for an agent's own code (threads welcome).

``AgentClient.from_environment()`` in a Pod labelled ``agentid.dev/agent``; then ``token(audience)`` wherever a
bearer token is needed. With the token sidecar the token is read from its file (the sidecar keeps it fresh);
otherwise the ServiceAccount token (or an assertion signed with the mounted agent key) is exchanged and the agent
token cached until most of its life has passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentid.client import errors, protocol, tokenfiles, transport
from agentid.client.credentials import Credentials
from agentid.client.errors import ConfigurationError
from agentid.client.protocol import Issued, Proof, TokenCache


class AgentClient:
    def __init__(
        self,
        credentials: Credentials,
        *,
        clock: Callable[[], float] = time.time,
        refresh_fraction: float = 0.8,
        refresh_margin: float = 30.0,
        timeout: float = transport.TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self._clock = clock
        self._timeout = timeout
        self._cache = TokenCache(fraction=refresh_fraction, margin=refresh_margin)
        self._lock = threading.Lock()
        self._context = transport.ssl_context(credentials.ca_file) if credentials.token_url else None

    @classmethod
    def from_environment(cls, **options: Any) -> AgentClient:
        return cls(Credentials.from_environment(), **options)

    # -- tokens -----------------------------------------------------------------------------------------------

    def token(self, audience: str, *, lifetime: int | None = None) -> str:
        """A valid agent token for ``audience`` (cached; refreshed once most of its lifetime has passed).

        Raises ``AgentSuspended``, ``AgentRevoked``, ``AudienceRefused``... (``agentid.client.errors``)."""
        if self.credentials.tokens_dir:
            return tokenfiles.read_token(self.credentials.tokens_dir, audience, self.credentials.sidecar_audiences)
        key = protocol.cache_key([audience])
        with self._lock:
            cached = self._cache.get(key, self._clock())
            if cached is not None:
                return cached
            try:
                issued = self._issue(protocol.own_token_form(self._proof(), [audience], lifetime))
            except errors.InvalidCredentials as refused:
                raise self._explained(refused, key, audience) from None
            self._cache.put(key, issued)
            return issued.token

    def on_behalf_of(
        self,
        subject_token: str,
        audience: str,
        *,
        subject_token_type: str = protocol.TOKEN_TYPE_ACCESS_TOKEN,
        lifetime: int | None = None,
    ) -> str:
        """A token for ``subject_token``'s agent with this agent as its actor (the ``act`` chain grows by us).

        Allowed only when this agent is in the subject's ``delegation.allowedActors`` (else
        ``DelegationRefused``); the audience must be within the subject token's."""
        form = protocol.delegation_form(
            subject_token, self._actor_proof(), [audience], subject_token_type=subject_token_type, lifetime=lifetime
        )
        return self._issue(form).token

    def assertion(self, audience: str | None = None) -> str:
        """An RFC 7523 assertion signed with the mounted agent key (``aud`` defaults to the issuer)."""
        from agentid.client import assertions  # noqa: PLC0415 - pyjwt only when the key is used

        credentials = self.credentials
        if not (credentials.key_dir and credentials.agent_id and credentials.issuer):
            raise ConfigurationError("assertions need the agent key mounted (agentid.dev/mount-agent-key)")
        key = assertions.AgentKey.load(credentials.key_dir)
        return assertions.sign(key, agent_id=credentials.agent_id, audience=audience or credentials.issuer)

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the token's live state (``{"active": false}`` once the agent is suspended or revoked)."""
        if self.credentials.introspection_url is None or self._context is None:
            raise ConfigurationError("no introspection endpoint configured")
        form, headers = protocol.introspection_request(self._proof(), token)
        return transport.post(
            self.credentials.introspection_url, form, self._context, timeout=self._timeout, headers=headers
        )

    def invalidate(self, audience: str | None = None) -> None:
        """Stop handing out cached tokens (e.g. after a resource server answered 401): the next call exchanges."""
        with self._lock:
            self._cache.invalidate(protocol.cache_key([audience]) if audience is not None else None)

    def auth(self, audience: str) -> BearerAuth:
        """``requests`` auth: ``session.get(url, auth=client.auth("https://mcp.example.com"))``."""
        return BearerAuth(self, audience)

    # -- internals ------------------------------------------------------------------------------------------

    def _issue(self, form: protocol.Form) -> Issued:
        if self.credentials.token_url is None or self._context is None:
            raise ConfigurationError("no token endpoint configured")
        body = transport.post(self.credentials.token_url, form, self._context, timeout=self._timeout)
        return Issued.of(body, self._clock())

    def _explained(self, refused: errors.InvalidCredentials, key: str, audience: str) -> errors.TokenRefused:
        latest = self._cache.latest(key, self._clock())
        if latest is None:
            return refused
        try:
            self._issue(protocol.explanation_form(latest, audience))
        except errors.InvalidCredentials:
            return refused
        except errors.TokenRefused as precise:
            return precise
        return refused

    def _proof(self) -> Proof:
        credentials = self.credentials
        if credentials.service_account_token_file:
            try:
                return Proof(Path(credentials.service_account_token_file).read_text().strip())
            except OSError as error:
                raise ConfigurationError(f"cannot read the ServiceAccount token: {error.strerror}") from None
        if credentials.key_dir:
            return Proof(self.assertion(), assertion=True)
        raise ConfigurationError("no ServiceAccount token or agent key to exchange")

    def _actor_proof(self) -> Proof:
        credentials = self.credentials
        if credentials.service_account_token_file or credentials.key_dir:
            return self._proof()
        if credentials.tokens_dir and credentials.issuer:
            token = tokenfiles.read_token(credentials.tokens_dir, credentials.issuer)
            return Proof(token, protocol.TOKEN_TYPE_ACCESS_TOKEN)
        raise ConfigurationError("delegation through the sidecar needs the issuer among agentid.dev/token-audiences")


class BearerAuth:
    """A ``requests`` auth callable: sets ``Authorization: Bearer <agent token>`` on each request."""

    def __init__(self, client: AgentClient, audience: str) -> None:
        self.client = client
        self.audience = audience

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.client.token(self.audience)}"
        return request
