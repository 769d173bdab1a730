"""Read the local apiserver's audit log: which requests a client made, counted at the server side."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def entries(path: Path, *, since: dt.datetime) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        stamp = entry.get("stageTimestamp") or entry.get("requestReceivedTimestamp")
        if entry.get("stage") == "ResponseComplete" and stamp and dt.datetime.fromisoformat(stamp) >= since:
            yield entry


def writes_by(
    path: Path, *, user_agent_prefixes: tuple[str, ...], since: dt.datetime, namespace: str | None = None
) -> list[str]:
    """'verb resource/name' of every mutating request from clients whose user agent starts with a prefix (in
    ``namespace`` and cluster-wide only, if given: the session's other operators work in their own namespaces)."""
    return [
        f"{e['verb']} {e.get('objectRef', {}).get('resource')}/{e.get('objectRef', {}).get('name')}"
        for e in entries(path, since=since)
        if e.get("verb") in MUTATING
        and str(e.get("userAgent", "")).startswith(user_agent_prefixes)
        and (namespace is None or e.get("objectRef", {}).get("namespace") in (namespace, None))
    ]


AGENT_OBJECTS = frozenset({"serviceaccounts", "secrets", "roles", "rolebindings", "agentidentities", "events"})


def writers(
    path: Path, *, since: dt.datetime, namespaces: set[str], resources: frozenset[str] = AGENT_OBJECTS
) -> dict[str, dict[str, set[str]]]:
    """namespace -> user agent -> 'verb resource/name' of the mutating requests to ``resources`` there: which
    process wrote an agent's objects (replicas tell themselves apart by their User-Agent)."""
    found: dict[str, dict[str, set[str]]] = {}
    for e in entries(path, since=since):
        ref = e.get("objectRef", {})
        if e.get("verb") in MUTATING and ref.get("namespace") in namespaces and ref.get("resource") in resources:
            by_agent = found.setdefault(ref["namespace"], {})
            by_agent.setdefault(str(e.get("userAgent", "")), set()).add(
                f"{e['verb']} {ref['resource']}/{ref.get('name')}"
            )
    return found
