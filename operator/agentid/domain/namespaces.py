"""The operator's namespace patterns (``agentid run --namespace``), matched as Kopf matches them.

Used by the operator's own watches to decide what to watch and keep; Kopf reads the same patterns for what it still
serves. A pattern is comma-separated globs (``*``, ``?``); a glob starting with ``!`` excludes; a leading exclusion
implies a preceding ``*``; the first inclusive glob makes the initial match, later inclusive globs only re-match
what a later exclusion took out (``"app-*, !*-pr-*, *-pr-1"``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

_GLOB = ("!", "*", "?", ",")


def specific(patterns: Iterable[str]) -> set[str]:
    """The patterns that name one namespace exactly."""
    return {pattern for pattern in patterns if not any(char in pattern for char in _GLOB)}


def matches(name: str, pattern: str) -> bool:
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matched = first = fnmatch.fnmatchcase(name, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matched = matched and not fnmatch.fnmatchcase(name, glob.lstrip("!"))
        else:
            matched = matched or (first and fnmatch.fnmatchcase(name, glob))
    return matched
