"""Count API requests at the server side, from kube-apiserver's audit log (one JSON line per request).

Called by the provisioning benchmark (requests per agent, operator vs baseline) and the footprint benchmark
(writes during a restart). ``AuditReader.mark()`` remembers where every audit file ends; ``since(mark)`` reads
only what was appended after it (rotated files included), so counting stays cheap on a long run.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})
Mark = dict[Path, int]


class AuditReader:
    def __init__(self, audit_log: Path) -> None:
        self.folder = audit_log.parent
        self.pattern = f"{audit_log.stem}*{audit_log.suffix}"

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob(self.pattern))

    def mark(self) -> Mark:
        return {path: path.stat().st_size for path in self._files()}

    def since(self, mark: Mark) -> Iterator[dict[str, Any]]:
        """Completed requests logged after ``mark``."""
        for path in self._files():
            with path.open("rb") as handle:
                handle.seek(mark.get(path, 0))
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line being written right now
                    if entry.get("stage") == "ResponseComplete":
                        yield entry


def user_agent(entry: dict[str, Any]) -> str:
    return str(entry.get("userAgent", "")).split(" ", 1)[0].split("/", 1)[0]


def count_requests(entries: Iterator[dict[str, Any]], user_agents: tuple[str, ...]) -> dict[str, int]:
    """'verb resource' -> count, for requests whose client name (user agent up to '/') is one of ``user_agents``."""
    counts: collections.Counter[str] = collections.Counter()
    for entry in entries:
        if user_agent(entry) not in user_agents:
            continue
        ref = entry.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        counts[f"{entry.get('verb')} {resource}"] += 1
    return dict(sorted(counts.items()))


def writes(counts: dict[str, int]) -> int:
    return sum(count for key, count in counts.items() if key.split(" ", 1)[0] in MUTATING)


def reads(counts: dict[str, int]) -> int:
    return sum(count for key, count in counts.items() if key.split(" ", 1)[0] not in MUTATING | {"watch"})
