"""Loopback ports for processes that bind them later, never handed out twice while they may still be pending.

A port is picked now and bound seconds later, when the process that listens on it has started. Until then nothing
on the machine knows it is taken, so another pick could return it again: in this process (a cluster picks its
apiserver and both etcd ports before starting any of them) or in another one (`agentid dev up` beside a test
session with ports reserved for services it starts later). CI saw etcd fail with "address already in use" so.
Every pick is therefore recorded for ``HOLD_SECONDS`` in a small file shared by this user's processes (under an
exclusive lock), and no pick returns a recorded port. Without the file (unwritable temp dir) picks are still
unique within the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOLD_SECONDS = 600.0  # far longer than any pick-to-listen window; a port still bound after it fails the bind check
SPAN = 12_000  # ports are picked from the span just below the kernel's ephemeral range
_picked_here: set[int] = set()


class NoFreePortError(RuntimeError):
    pass


def free_port(registry: Path | None = None) -> int:
    """A loopback port that was free a moment ago, *below* the kernel's ephemeral range, and not handed out by
    any process of this user within ``HOLD_SECONDS``.

    Below the ephemeral range, because a port from it (what binding to port 0 returns) can meanwhile become the
    source port of another outgoing connection.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    with _held(registry or _default_registry()) as held:
        for _ in range(200):
            port = rng.randrange(max(1024, low - SPAN), low)
            if port in held or port in _picked_here or not _bindable(port):
                continue
            held[port] = time.time() + HOLD_SECONDS
            _picked_here.add(port)
            return port
    raise NoFreePortError("no free loopback port below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _default_registry() -> Path:
    return Path(tempfile.gettempdir()) / f"agentid-ports-{os.getuid()}.json"


@contextlib.contextmanager
def _held(path: Path) -> Iterator[dict[int, float]]:
    """The ports recorded and not yet expired, locked against other processes until the block ends; what the
    block adds is written back."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield {}
        return
    with os.fdopen(fd, "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        now = time.time()
        try:
            recorded = {int(port): float(until) for port, until in json.loads(file.read() or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            recorded = {}  # unreadable (an interrupted write): start over, the bind check still applies
        held = {port: until for port, until in recorded.items() if until > now}
        yield held
        file.seek(0)
        file.truncate()
        file.write(json.dumps({str(port): until for port, until in held.items()}))


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
