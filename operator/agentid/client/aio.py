"""The agent SDK, asyncio flavour: the same as ``agentid.client.sync`` without blocking the event loop.

File reads go to a worker thread; HTTP goes through one aiohttp client session. Concurrent ``token()`` calls for
one audience share one exchange. ``async with AsyncAgentClient.from_environment() as client: ...``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from agentid.client import errors, protocol, tokenfiles, transport
from agentid.client.credentials import Credentials
from agentid.client.errors import ConfigurationError
from agentid.client.protocol import Issued, Proof, TokenCache


class AsyncAgentClient:
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
        self._locks: dict[str, asyncio.Lock] = {}
        self._transport: transport.AsyncTransport | None = None

    @classmethod
    def from_environment(cls, **options: Any) -> AsyncAgentClient:
        return cls(Credentials.from_environment(), **options)

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    # -- tokens -----------------------------------------------------------------------------------------------

    async def token(self, audience: str, *, lifetime: int | None = None) -> str:
        """See ``AgentClient.token``."""
        if self.credentials.tokens_dir:
            return await asyncio.to_thread(
                tokenfiles.read_token, self.credentials.tokens_dir, audience, self.credentials.sidecar_audiences
            )
        key = protocol.cache_key([audience])
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key, self._clock())
            if cached is not None:
                return cached
            try:
                issued = await self.issue(protocol.own_token_form(await self._proof(), [audience], lifetime))
            except errors.InvalidCredentials as refused:
                raise await self.explain(refused, self._cache.latest(key, self._clock()), audience) from None
            self._cache.put(key, issued)
            return issued.token

    async def on_behalf_of(
        self,
        subject_token: str,
        audience: str,
        *,
        subject_token_type: str = protocol.TOKEN_TYPE_ACCESS_TOKEN,
        lifetime: int | None = None,
    ) -> str:
        """See ``AgentClient.on_behalf_of``."""
        form = protocol.delegation_form(
            subject_token,
            await self._actor_proof(),
            [audience],
            subject_token_type=subject_token_type,
            lifetime=lifetime,
        )
        return (await self.issue(form)).token

    async def assertion(self, audience: str | None = None) -> str:
        """See ``AgentClient.assertion``."""
        from agentid.client import assertions  # noqa: PLC0415 - pyjwt only when the key is used

        credentials = self.credentials
        if not (credentials.key_dir and credentials.agent_id and credentials.issuer):
            raise ConfigurationError("assertions need the agent key mounted (agentid.dev/mount-agent-key)")
        key = await asyncio.to_thread(assertions.AgentKey.load, credentials.key_dir)
        return assertions.sign(key, agent_id=credentials.agent_id, audience=audience or credentials.issuer)

    def invalidate(self, audience: str | None = None) -> None:
        """Stop handing out cached tokens: the next call exchanges."""
        self._cache.invalidate(protocol.cache_key([audience]) if audience is not None else None)

    async def explain(self, refused: errors.TokenRefused, latest: Issued | None, audience: str) -> errors.TokenRefused:
        """Why the own credential was refused, asked with the last agent token (``protocol.explanation_form``)."""
        if not isinstance(refused, errors.InvalidCredentials) or latest is None or self._clock() >= latest.expires_at:
            return refused
        try:
            await self.issue(protocol.explanation_form(latest, audience))
        except errors.InvalidCredentials:
            return refused
        except errors.TokenRefused as precise:
            return precise
        return refused

    async def issue(self, form: protocol.Form) -> Issued:
        """POST one request form to the token endpoint (the token sidecar uses this directly)."""
        if self.credentials.token_url is None:
            raise ConfigurationError("no token endpoint configured")
        return Issued.of(await self._post(self.credentials.token_url, form), self._clock())

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the token's live state (``{"active": false}`` once the agent is suspended or revoked)."""
        if self.credentials.introspection_url is None:
            raise ConfigurationError("no introspection endpoint configured")
        form, headers = protocol.introspection_request(await self._proof(), token)
        return await self._post(self.credentials.introspection_url, form, headers)

    async def own_proof(self) -> Proof:
        """The agent's own credential, read fresh (the kubelet rotates the ServiceAccount token)."""
        return await self._proof()

    # -- internals ------------------------------------------------------------------------------------------

    async def _post(self, url: str, form: protocol.Form, headers: Mapping[str, str] = {}) -> dict[str, Any]:
        if self._transport is None:
            context = await asyncio.to_thread(transport.ssl_context, self.credentials.ca_file)
            self._transport = transport.AsyncTransport(context, timeout=self._timeout)
        return await self._transport.post(url, form, headers)

    async def _proof(self) -> Proof:
        credentials = self.credentials
        if credentials.service_account_token_file:
            try:
                token = await asyncio.to_thread(Path(credentials.service_account_token_file).read_text)
            except OSError as error:
                raise ConfigurationError(f"cannot read the ServiceAccount token: {error.strerror}") from None
            return Proof(token.strip())
        if credentials.key_dir:
            return Proof(await self.assertion(), assertion=True)
        raise ConfigurationError("no ServiceAccount token or agent key to exchange")

    async def _actor_proof(self) -> Proof:
        credentials = self.credentials
        if credentials.service_account_token_file or credentials.key_dir:
            return await self._proof()
        if credentials.tokens_dir and credentials.issuer:
            token = await asyncio.to_thread(tokenfiles.read_token, credentials.tokens_dir, credentials.issuer)
            return Proof(token, protocol.TOKEN_TYPE_ACCESS_TOKEN)
        raise ConfigurationError("delegation through the sidecar needs the issuer among agentid.dev/token-audiences")
