"""A TCP forward from the node's bridge gateway to the loopback apiserver: how Pods reach the control plane.

kube-apiserver listens on 127.0.0.1 only (nothing else on the machine may reach it); the ``kubernetes`` Service's
EndpointSlice points at ``<gateway>:<port>``, where this forward listens and copies bytes to ``127.0.0.1:<port>``.
TLS passes through untouched (the serving certificate names the service IP and the gateway).
Run by ``agentid.devcluster.node`` as ``python -m agentid.devcluster.forward LISTEN_HOST PORT TARGET_HOST PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def serve(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    listen_host, listen_port, target_host, target_port = argv
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(listen_host, int(listen_port), target_host, int(target_port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
