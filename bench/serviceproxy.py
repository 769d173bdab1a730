"""A local stand-in for a Kubernetes Service in front of several replicas: what the API server calls for admission.

Used by the P5 failover benchmark, where the operator replicas are processes on this machine. It forwards each TCP
connection to the next ready endpoint (round robin, as kube-proxy spreads connections) and takes an endpoint out
of rotation the way a Pod's does: when its process is seen gone. The kubelet notices a dead container at its next
relist (PLEG, every second) and the endpoint controller and kube-proxy follow, so ``removal_period`` defaults to
one second. A connection sent to an endpoint before its removal fails, exactly as it would in a cluster: the proxy
never retries on another endpoint, so the benchmark counts what a real Service would lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Endpoint:
    port: int
    alive: Callable[[], bool]  # the process behind it still runs (what the kubelet's relist sees)
    ready: bool = True
    connections: int = 0  # connections sent its way (refused ones included)


class ServiceProxy:
    def __init__(self, endpoints: Sequence[Endpoint], *, removal_period: float = 1.0) -> None:
        self.endpoints = list(endpoints)
        self.removal_period = removal_period
        self.refused = 0  # connections that found no live endpoint behind the one chosen
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    async def __aenter__(self) -> ServiceProxy:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._watch = asyncio.create_task(self._remove_dead())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _remove_dead(self) -> None:
        while True:
            await asyncio.sleep(self.removal_period)
            for endpoint in self.endpoints:
                endpoint.ready = endpoint.ready and endpoint.alive()

    def _choose(self) -> Endpoint | None:
        ready = [endpoint for endpoint in self.endpoints if endpoint.ready]
        return ready[next(self._turn) % len(ready)] if ready else None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        endpoint = self._choose()
        try:
            if endpoint is None:
                raise ConnectionRefusedError
            endpoint.connections += 1
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        except OSError:
            self.refused += 1
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except asyncio.CancelledError:  # the proxy is closing: this connection ends with it
            for end in (writer, upstream_writer):
                end.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
