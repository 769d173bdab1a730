"""The token service as one object: its parts wired together, started and stopped in order.

Called by ``agentid serve`` (foreground, until a signal), by the operator process when it embeds the service, and
by the test fixtures. Startup: issuer keys first (load or create the Secret), then the agent watch and the key
maintenance loop in the background, then the listener. ``/token`` answers 503 until the first agent list is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agentid import servingcerts
from agentid.kube.client import KubeClient
from agentid.tokens.accounts import AccountCache
from agentid.tokens.agents import AgentCache
from agentid.tokens.app import AccessLogger, Routes, build_app
from agentid.tokens.clients import IntrospectionClients
from agentid.tokens.exchange import Exchanger
from agentid.tokens.introspection import Introspector
from agentid.tokens.keyring import IssuerKeyring
from agentid.tokens.replay import SharedReplayGuard
from agentid.tokens.reviews import ServiceAccountReviewer
from agentid.tokens.revocation_app import RevocationRoutes
from agentid.tokens.revocations import RevocationStore
from agentid.tokens.settings import TokenServiceSettings
from agentid.tokens.ssf import Transmitter
from agentid.tokens.ssf_app import SignalRoutes

logger = logging.getLogger(__name__)
FIELD_MANAGER = "agentid-token-service"
REVOCATION_CLEANUP_SECONDS = 300.0


class TokenService:
    def __init__(self, settings: TokenServiceSettings, client: KubeClient) -> None:
        self.settings = settings
        self.client = client
        self.agents = AgentCache(settings.trust_domain)
        self.accounts = AccountCache()
        self.keyring = IssuerKeyring(
            client, namespace=settings.namespace, secret_name=settings.secret_name, policy=settings.rotation
        )
        self.reviewer = ServiceAccountReviewer(
            client,
            audiences=settings.accepted_subject_audiences,
            ttl=settings.review_cache_seconds,
            max_entries=settings.review_cache_entries,
        )
        self.agents.subscribe(self.reviewer.on_agent_change)
        self.replay = SharedReplayGuard(client, namespace=settings.namespace)
        self.exchanger = Exchanger(
            settings=settings,
            agents=self.agents,
            accounts=self.accounts,
            keyring=self.keyring,
            reviewer=self.reviewer,
            replay=self.replay,
        )
        self.revocations = RevocationStore(client, namespace=settings.namespace)
        self.introspector = Introspector(
            settings=settings, agents=self.agents, keyring=self.keyring, revocations=self.revocations
        )
        self.clients = IntrospectionClients(
            reviewer=self.reviewer, exchanger=self.exchanger, max_token_bytes=settings.limits.max_token_bytes
        )
        self.routes = Routes(
            settings=settings,
            agents=self.agents,
            accounts=self.accounts,
            keyring=self.keyring,
            exchanger=self.exchanger,
            introspector=self.introspector,
            clients=self.clients,
        )
        self.app = build_app(self.routes)
        self.transmitter = Transmitter(issuer=settings.issuer, agents=self.agents, keyring=self.keyring)
        self.agents.subscribe(self.transmitter.on_agent_change)
        SignalRoutes(
            transmitter=self.transmitter,
            reviewer=self.reviewer,
            client=client,
            max_token_bytes=settings.limits.max_token_bytes,
        ).install(self.app)
        RevocationRoutes(
            settings=settings, keyring=self.keyring, clients=self.clients, revocations=self.revocations
        ).install(self.app)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.keyring.refresh()
        self._tasks = [
            asyncio.create_task(self.agents.run(self.client), name="agentid-tokens-agents"),
            asyncio.create_task(self.accounts.run(self.client), name="agentid-tokens-accounts"),
            asyncio.create_task(self.keyring.run(self.settings.keyring_refresh_seconds), name="agentid-tokens-keyring"),
            asyncio.create_task(self.revocations.run(), name="agentid-tokens-revocations"),
            asyncio.create_task(
                self.revocations.run_cleanup(REVOCATION_CLEANUP_SECONDS), name="agentid-tokens-revoked-gc"
            ),
            asyncio.create_task(self.replay.sweep_forever(), name="agentid-tokens-replay-sweep"),
        ]
        tls = self.settings.tls
        context = servingcerts.server_context(str(tls.cert_file), str(tls.key_file)) if tls is not None else None
        if context is not None and tls is not None:
            reload = servingcerts.reload_forever(context, str(tls.cert_file), str(tls.key_file))
            self._tasks.append(asyncio.create_task(reload, name="agentid-tokens-certificates"))
        self._runner = web.AppRunner(self.app, access_log_class=AccessLogger, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, ssl_context=context)
        await site.start()
        logger.info("token service for issuer %s listening on %s:%s", self.settings.issuer, *self._address())

    async def wait_ready(self) -> None:
        """Until the first list of agents is in (callers bound the wait with ``asyncio.timeout``)."""
        await self.agents.synced.wait()
        await self.accounts.synced.wait()
        await self.revocations.synced.wait()

    async def stop(self) -> None:
        await self.transmitter.close()  # ends long polls and push loops before the runner waits for handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _address(self) -> tuple[str, int]:
        return (self.settings.host, self.settings.port)


def lean_log_records() -> None:
    """Log records without their caller's frame, thread, process and task names (the logging HOWTO's
    "Optimization"): no log format of ours prints them, and collecting them was a third of what logging cost per
    exchange, which writes two records (access log and audit). Process-wide: for a process that serves tokens."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    setattr(logging, "logAsyncioTasks", False)  # noqa: B010 - Python >= 3.12 (typeshed of 3.11 lacks it)
    logging._srcfile = None  # the documented switch that skips findCaller


async def serve(settings: TokenServiceSettings, *, kubeconfig: str | None = None) -> None:
    """Run until cancelled (``agentid serve`` cancels on SIGINT/SIGTERM)."""
    client = await KubeClient.connect(kubeconfig, field_manager=FIELD_MANAGER)
    service = TokenService(settings, client)
    try:
        await service.start()
        await asyncio.Event().wait()
    finally:
        await service.stop()
        await client.close()
