"""Serving certificates that follow their files: cert-manager (or the chart's self-signed mode) renews the mounted
Secret, and both servers agentid runs (the admission webhook and the token service) pick the new pair up without
a restart or a closed listening socket. New handshakes use the new files; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

logger = logging.getLogger(__name__)
RELOAD_INTERVAL = 10.0  # seconds between looks at the files (the kubelet refreshes mounted Secrets ~every minute)


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def _stamp(certfile: str, keyfile: str) -> tuple[float, float]:
    try:
        return (Path(certfile).stat().st_mtime, Path(keyfile).stat().st_mtime)
    except OSError:
        return (0.0, 0.0)


async def reload_forever(
    context: ssl.SSLContext, certfile: str, keyfile: str, interval: float = RELOAD_INTERVAL
) -> None:
    """Load the pair into ``context`` again whenever either file changes (cancel to stop)."""
    seen = _stamp(certfile, keyfile)
    while True:
        await asyncio.sleep(interval)
        current = _stamp(certfile, keyfile)
        if current == seen:
            continue
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as error:  # half-written during a renewal: the next look retries
            logger.warning("serving certificate %s not reloaded yet: %s", certfile, type(error).__name__)
            continue
        seen = current
        logger.info("serving certificate reloaded from %s", certfile)
