"""``python -m bench.tokenservice '<json settings>'``: the token service in its own process for the benchmarks.

Started by ``bench.environment.TokenServiceProcess``. It runs exactly ``TokenService`` (what ``agentid serve`` runs)
with the settings the benchmark needs that the CLI does not expose (the TokenReview cache lifetime: 0 makes every
exchange a cold one), and the same logging: INFO access log and one audit line per exchange, lean records (as
``agentid serve``). Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from agentid import audit
from agentid.kube.client import KubeClient
from agentid.tokens.service import FIELD_MANAGER, TokenService, lean_log_records
from agentid.tokens.settings import TLS, TokenServiceSettings


async def main(raw: str) -> None:
    options = json.loads(raw)
    settings = TokenServiceSettings(
        issuer=options["issuer"],
        port=int(options["port"]),
        tls=TLS(Path(options["cert"]), Path(options["key"])),
        namespace=options["namespace"],
        review_cache_seconds=float(options["review_cache_seconds"]),
    )
    client = await KubeClient.connect(options["kubeconfig"], field_manager=FIELD_MANAGER)
    service = TokenService(settings, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await stop.wait()
    finally:
        await service.stop()
        await client.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    audit.configure(None)
    lean_log_records()
    asyncio.run(main(sys.argv[1]))
