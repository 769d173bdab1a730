"""The token sidecar's folder: one agent token file per audience, and a status file saying why one is missing.

Written by ``agentid token-agent`` (atomically: a temporary file renamed over the old one, so a reader never sees
half a token), read by the SDK. The status file never contains a token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from agentid.client import environment as env
from agentid.client import errors

READY = "ready"
STARTING = "starting"
UNAVAILABLE = "unavailable"
MISCONFIGURED = "misconfigured"
FILE_MODE = 0o644  # like the kubelet's projected tokens: the volume is private to the Pod's containers


def token_path(tokens_dir: str | Path, audience: str) -> Path:
    return Path(tokens_dir) / env.token_file_name(audience)


def read_token(tokens_dir: str | Path, audience: str, held: tuple[str, ...] = ()) -> str:
    """The sidecar's current token for ``audience``, or the typed error its status file names. ``held``: the
    audiences the sidecar was asked for (``AGENTID_AUDIENCES``), when known."""
    if held and audience not in held:
        raise errors.ConfigurationError(
            f"the token sidecar holds no token for {audience!r} (add it to the agentid.dev/token-audiences annotation)"
        )
    try:
        token = token_path(tokens_dir, audience).read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    status = read_status(tokens_dir)
    state = str(status.get("state") or STARTING)
    cls = errors.CLASS_OF_STATE.get(state)
    description = str(status.get("description") or "")
    if cls is not None:
        raise cls(
            int(status.get("status") or 400),
            str(status.get("error") or ""),
            description,
            str(status.get("reason") or ""),
        )
    if state == MISCONFIGURED:
        raise errors.ConfigurationError(f"the token sidecar cannot get tokens: {description}")
    if state == READY:
        raise errors.ConfigurationError(
            f"the token sidecar holds no token for {audience!r} (add it to the agentid.dev/token-audiences annotation)"
        )
    raise errors.TokenServiceUnavailable(
        f"the token sidecar has no token yet ({state}{': ' if description else ''}{description})"
    )


def read_status(tokens_dir: str | Path) -> dict[str, Any]:
    try:
        status = json.loads((Path(tokens_dir) / env.STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def write_atomically(path: Path, content: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        os.chmod(temporary, FILE_MODE)  # the umask may have narrowed it
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_status(tokens_dir: str | Path, status: dict[str, Any]) -> None:
    write_atomically(Path(tokens_dir) / env.STATUS_FILE, json.dumps(status, sort_keys=True))


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
