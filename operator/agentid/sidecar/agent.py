"""The token sidecar's loop: one agent token file per audience, fresh while the agent may hold tokens, gone
within a poll interval of a suspension or revocation, back on resume.

Called by ``agentid.cli.tokenagent``. Holding tokens, it introspects one of them every ``poll_interval`` (RFC 7662
reflects the agent's live state the moment the token service's watch sees a change) and refreshes each before
``refresh_fraction`` of its life has passed. An inactive answer or a refused exchange removes every file at once
and writes why in the status file; then it retries the exchange with backoff until the agent is resumed. While the
token service is unreachable, tokens are kept until they expire (never past). Tokens never reach a log line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentid.client import environment as env
from agentid.client import errors, protocol, tokenfiles
from agentid.client.aio import AsyncAgentClient
from agentid.client.protocol import Issued

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    poll_interval: float = 0.5  # introspection of a held token: how fast a suspension is noticed
    refresh_fraction: float = 0.8  # refresh after this share of a token's life...
    refresh_margin: float = 30.0  # ...and at least this many seconds before it expires
    retry_initial: float = 0.5  # backoff of refused or failed exchanges
    retry_max: float = 5.0  # while suspended (or the service is down): how quickly a resume is picked up
    retry_max_terminal: float = 60.0  # revoked, expired: nothing will change, but keep saying so
    lifetime: int | None = None  # ask for tokens shorter than the agent's tokenTTL (seconds)


class TokenAgent:
    def __init__(
        self,
        client: AsyncAgentClient,
        *,
        tokens_dir: Path,
        audiences: tuple[str, ...],
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audiences:
            raise errors.ConfigurationError(f"no audiences: set {env.AUDIENCES} or --audience")
        self.client = client
        self.tokens_dir = tokens_dir
        self.audiences = audiences
        self.timing = timing
        self._clock = clock
        self.held: dict[str, Issued] = {}
        self._latest: tuple[str, Issued] | None = None  # in memory only: explains a later refusal (never on disk)
        self.state = tokenfiles.STARTING
        self.reason = ""

    @property
    def ready(self) -> bool:
        return self.state == tokenfiles.READY and set(self.held) == set(self.audiences)

    def status(self) -> dict[str, Any]:
        """What the health endpoint and the status file say (never a token)."""
        expiries = {
            audience: dt.datetime.fromtimestamp(issued.expires_at, dt.UTC).isoformat(timespec="seconds")
            for audience, issued in self.held.items()
        }
        return {"state": self.state, "reason": self.reason, "audiences": expiries}

    async def run(self) -> None:
        await asyncio.to_thread(self._clear_folder)
        await self._write_status({})
        delay = self.timing.retry_initial
        while True:
            try:
                if not self.ready:
                    await self._fetch(self.audiences)
                    delay = self.timing.retry_initial
                    continue
                await self._hold()
                delay = self.timing.retry_initial
            except errors.TokenRefused as refusal:
                await self._drop(refusal)
                ceiling = self.timing.retry_max
                if isinstance(refusal, errors.AgentRevoked):
                    ceiling = self.timing.retry_max_terminal
                await self._sleep(min(delay, ceiling))
                delay = min(delay * 2, ceiling)
            except errors.TokenServiceUnavailable as error:
                if self.state != tokenfiles.UNAVAILABLE:
                    logger.warning("token service unavailable (%s): keeping tokens until they expire", error)
                if not self.held:
                    self._set_state(tokenfiles.UNAVAILABLE, str(error))
                    await self._write_status({"description": str(error)})
                await self._expire()
                await self._sleep(min(delay, self.timing.retry_max))
                delay = min(delay * 2, self.timing.retry_max)
            except errors.ConfigurationError as error:  # e.g. the projected token not there (yet): say so, retry
                if self.state != tokenfiles.MISCONFIGURED:
                    logger.error("cannot get agent tokens: %s", error)
                await self._remove_all()
                self._set_state(tokenfiles.MISCONFIGURED, str(error))
                await self._write_status({"description": str(error)})
                await self._sleep(self.timing.retry_max)

    # -- holding ------------------------------------------------------------------------------------------------

    async def _hold(self) -> None:
        """One poll: refresh what is due, else ask introspection whether the agent may still hold tokens."""
        now = self._clock()
        due = [
            audience
            for audience, issued in self.held.items()
            if now >= issued.refresh_at(self.timing.refresh_fraction, self.timing.refresh_margin)
        ]
        if due:
            await self._fetch(tuple(due))
            return
        await self._sleep(self.timing.poll_interval)
        audience = self.audiences[0]
        issued = self.held.get(audience)
        if issued is None:
            return
        answer = await self.client.introspect(issued.token)
        if answer.get("active") is not True:
            logger.info("introspection says the agent's tokens are no longer honoured: removing them")
            await self._remove_all()
            self._set_state(tokenfiles.STARTING, "TokensInactive")
            await self._write_status({"description": "the agent's tokens are no longer honoured"})
            # the next exchange, at once, says why (suspended, revoked...) and writes the status file

    async def _fetch(self, audiences: tuple[str, ...]) -> None:
        proof = await self.client.own_proof()
        try:
            issued = await asyncio.gather(
                *(
                    self.client.issue(protocol.own_token_form(proof, [audience], self.timing.lifetime))
                    for audience in audiences
                )
            )
        except errors.InvalidCredentials as refused:
            # a revoked agent's ServiceAccount is deleted: its last agent token still says why
            audience, latest = self._latest or (audiences[0], None)
            raise await self.client.explain(refused, latest, audience) from None
        for audience, token in zip(audiences, issued, strict=True):
            await asyncio.to_thread(tokenfiles.write_atomically, self._path(audience), token.token)
            self.held[audience] = token
            self._latest = (audience, token)
        if self.state != tokenfiles.READY and set(self.held) == set(self.audiences):
            self._set_state(tokenfiles.READY, "")
            logger.info("holding agent tokens for %d audience(s)", len(self.held))
        await self._write_status({})

    # -- losing ---------------------------------------------------------------------------------------------------

    async def _drop(self, refusal: errors.TokenRefused) -> None:
        await self._remove_all()
        state = errors.STATE_OF.get(type(refusal), "refused")
        if state != self.state:
            logger.warning("no agent tokens: %s (%s: %s)", state, refusal.error, refusal.description)
        self._set_state(state, refusal.reason or refusal.error)
        await self._write_status({"status": refusal.status, "error": refusal.error, "description": refusal.description})

    async def _remove_all(self) -> None:
        self.held.clear()
        await asyncio.to_thread(self._remove_files)

    async def _expire(self) -> None:
        """Never leave a token on disk past its expiry (the service may be down for longer than its life)."""
        now = self._clock()
        for audience, issued in list(self.held.items()):
            if now >= issued.expires_at:
                del self.held[audience]
                await asyncio.to_thread(tokenfiles.remove, self._path(audience))

    def _remove_files(self) -> None:
        for audience in self.audiences:
            tokenfiles.remove(self._path(audience))

    def _clear_folder(self) -> None:
        """A restarted sidecar starts clean: files left by its predecessor may belong to a suspended agent."""
        self._remove_files()
        for leftover in self.tokens_dir.glob(".*.tmp"):
            tokenfiles.remove(leftover)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _path(self, audience: str) -> Path:
        return tokenfiles.token_path(self.tokens_dir, audience)

    def _set_state(self, state: str, reason: str) -> None:
        self.state = state
        self.reason = reason

    async def _write_status(self, extra: dict[str, Any]) -> None:
        await asyncio.to_thread(tokenfiles.write_status, self.tokens_dir, {**self.status(), **extra})

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0))
